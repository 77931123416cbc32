"""`torchkeep export RUN_OR_BUNDLE --format F --out PATH_OR_URI`: a bundle or a class-free model file."""

from __future__ import annotations

import argparse
from typing import Any

EPILOG = """formats:
  bundle       model + preprocessing (TableSchema) + metrics: torchkeep.load / predict / serve, no pickle
  state-dict   .pth of the weights: torch.load(weights_only=True) + load_state_dict on EntityEmbeddingMLP
  torchscript  .pt, runs without the model class (also from C++: torch::jit::load)
  pt2          torch.export program with a dynamic batch: torch.export.load(...).module()
  onnx         .onnx with a dynamic batch, for onnxruntime and other languages (pip install 'torchkeep[onnx]')

The class-free formats take encoded tensors (categorical int64 [N, C], continuous float32 [N, K]);
schema.json, inputs.json and README.txt next to the file say how to encode rows. Every export is
checked against the eager model on real rows (max abs diff <= 1e-5) before it is written.
Image runs: one input `image`, uint8 [N, C, H, W] (inputs.json says the size); parity on real images
(the run's own, or --data DIR/CSV/idx folder) within 1e-4.

examples:
  torchkeep export runs/flights-20261125-1200 --format onnx --out exports/flights
  torchkeep export runs/flights-20261125-1200/bundle --format pt2 --out model.pt2 --data sample.csv
  torchkeep export runs/flights-20261125-1200 --format bundle --out s3://models/flights/v1
"""


# The same names as torchkeep.export.exporter.FORMAT_NAMES (a test keeps them equal); spelled out
# here so that building the parser imports no torch.
FORMAT_NAMES = ("bundle", "state-dict", "torchscript", "pt2", "onnx")


def add_parser(commands: Any) -> None:
    p = commands.add_parser("export", help="export a run's model: bundle, state-dict, torchscript, pt2, onnx",
                            description="Export the model of a run or bundle (local path or s3://), parity-checked.",
                            epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", metavar="RUN_OR_BUNDLE")
    p.add_argument("--format", default="bundle", choices=FORMAT_NAMES, help="default: bundle")
    p.add_argument("--out", required=True, metavar="PATH_OR_URI",
                   help="a directory / s3:// prefix, or for a class-free format a file name ending in its suffix")
    p.add_argument("--data", metavar="PATH", help="rows for the parity check (default: the run's training data)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from torchkeep.export.exporter import export

    result = export(args.source, format=args.format, out=args.out, data=args.data)
    files = ", ".join(f"{name} ({size / 1e3:,.1f} kB)" for name, size in result.files.items())
    print(f"exported {result.format}: {result.path}")
    print(f"files: {files}")
    print(result.parity.describe())
    return 0
