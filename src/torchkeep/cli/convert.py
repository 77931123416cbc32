"""`torchkeep convert OLD.pth --out DIR_OR_URI`: a torch.save checkpoint -> torchkeep's checkpoint format."""

from __future__ import annotations

import argparse
from typing import Any

EPILOG = """Reads a seed-style checkpoint dict ({"epoch", "model_state_dict", "optimizer_state_dict",
"loss", ...}) or a bare state_dict with torch.load(weights_only=True): a file that needs more than
tensors, numbers and containers is refused, and nothing in it runs. Writes checkpoints/step-N/
(safetensors + JSON, MANIFEST.json last) under --out. Resume from it in your own loop:

  with Checkpointer(DIR) as ck:
      restored = ck.restore(model=model, optimizer=optimizer)
      start = restored.extra["epoch"] + 1
"""


def add_parser(commands: Any) -> None:
    p = commands.add_parser("convert", help="turn a .pth checkpoint into torchkeep's safetensors format",
                            description="Convert a torch.save checkpoint (local or s3://), read weights-only: no code from it runs.",
                            epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", metavar="OLD.pth")
    p.add_argument("--out", required=True, metavar="DIR_OR_URI", help="a new directory or s3:// prefix")
    p.add_argument("--step", type=int, metavar="N",
                   help="step number of the checkpoint (default: the optimizer's step count, else the epoch, else 0)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from torchkeep.checkpoint.convert import convert

    result = convert(args.source, args.out, step=args.step)
    source = {"--step": "from --step", "optimizer": "the optimizer's step count", "epoch": "the epoch",
              "none": "no step found in the file"}[result.step_source]
    print(f"wrote {result.uri.rstrip('/')}/checkpoints/{result.name} (step {result.step}: {source})")
    print(f"model: {result.tensors} tensors, {result.parameter_count:,} values; optimizer state:"
          f" {'yes' if result.optimizer else 'no'}; extra: {', '.join(result.extra_keys) or 'none'}")
    return 0
