"""`torchkeep inspect FILE_OR_URI`: what is inside a checkpoint, run, bundle, .pth/.pt or .safetensors."""

from __future__ import annotations

import argparse
import json
from typing import Any

EPILOG = """Reads without running anything: .pth/.pt only with torch.load(weights_only=True) (a pickle
that needs more is refused, with the reason), safetensors and JSON as data. Every file of a
checkpoint or bundle is checked against its MANIFEST.json; exit status 1 when one does not match.

examples:
  torchkeep inspect runs/flights-20261125-1200
  torchkeep inspect runs/flights-20261125-1200/checkpoints/step-000000132
  torchkeep inspect old_checkpoint.pth --json
  torchkeep inspect s3://models/flights/v1
"""


def add_parser(commands: Any) -> None:
    p = commands.add_parser("inspect", help="tensors, metadata and validity of a checkpoint, bundle or model file",
                            description="Inspect a checkpoint, run, bundle, .pth/.pt or .safetensors (local or s3://).",
                            epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", metavar="FILE_OR_URI")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run)


def _size(size_bytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size_bytes >= scale:
            return f"{size_bytes / scale:.1f} {unit}"
    return f"{size_bytes} B"


def _validity(report: dict[str, Any]) -> str:
    if report["valid"] is None:
        return "no manifest to check against"
    return "valid (every file matches the manifest)" if report["valid"] else "INVALID: " + "; ".join(report["problems"])


def _print_files(files: list[dict[str, Any]], indent: str = "") -> None:
    for file in files:
        status = f"  manifest: {file['manifest']}" if file.get("manifest") else ""
        print(f"{indent}{file['name']}  {_size(file.get('size_bytes', 0))}{status}")
        tensors = file.get("tensors", [])
        width = max((len(t["name"]) for t in tensors), default=0)
        for tensor in tensors:
            shape = "[" + ", ".join(map(str, tensor["shape"])) + "]"
            print(f"{indent}  {tensor['name']:<{width}}  {tensor['dtype']:<8} {shape}")


def _print_metadata(metadata: dict[str, Any], indent: str = "") -> None:
    for key, value in metadata.items():
        if value not in (None, [], {}):
            print(f"{indent}{key}: {value if isinstance(value, str) else json.dumps(value, default=str)}")


def _print(report: dict[str, Any]) -> None:
    print(f"{report['path']}: {report['kind']}, {_size(report['size_bytes'])}"
          + (f", {report['parameter_count']:,} parameters (weights and buffers)" if report.get("parameter_count") else ""))
    print(f"validity: {_validity(report)}")
    _print_metadata(report["metadata"])
    if report["kind"] == "run":
        print("checkpoints:")
        for info in report["checkpoints"]:
            metrics = " ".join(f"{k} {v:.4g}" for k, v in info["metrics"].items())
            print(f"  {info['name']}  epoch {info['epoch']}  {info['status']}  {_size(info['size_bytes'])}  {metrics or info['reason']}")
        if report["bundle"]:
            print(f"bundle: {_validity(report['bundle'])}")
            _print_metadata(report["bundle"]["metadata"], "  ")
            _print_files(report["bundle"]["files"], "  ")
        return
    _print_files(report["files"])


def run(args: argparse.Namespace) -> int:
    from torchkeep.checkpoint.inspect import inspect

    report = inspect(args.path)
    if args.json:
        print(json.dumps(report, default=str))
    else:
        _print(report)
    return 1 if report["valid"] is False else 0
