"""`torchkeep predict RUN_DIR --data PATH --out FILE`: predictions in original units / labels."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(commands: Any) -> None:
    p = commands.add_parser(
        "predict", help="write predictions for a table",
        description="Append `prediction` (original units or class label) and, for classification,"
        " `probability_<label>` columns to the input rows and write them as CSV or Parquet (by extension)."
        " Unseen categories and nulls are fine: they map to the null/unseen index.",
    )
    p.add_argument("--device", default="cpu", help="where the model runs: cpu (default), cuda, cuda:N, auto")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory or a bundle")
    p.add_argument("--data", required=True, metavar="PATH", help="table (.csv or .parquet); the target may be absent."
                   " For a model trained with torchkeep.fit: .npy, .npz or .safetensors of its input tensors")
    p.add_argument("--out", required=True, metavar="FILE", help="output .csv or .parquet (own models: also .npy, .safetensors)")
    p.add_argument("--image-dir", metavar="DIR", help="image runs: folder a CSV's file names are relative to"
                   " (default: the CSV's folder); --data may also be a folder of class folders or idx files")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import polars as pl

    import torchkeep
    from torchkeep.data.io import read_table, write_table

    predictor = torchkeep.load(args.run_dir, device=args.device)
    if isinstance(predictor, torchkeep.TensorPredictor):  # tensors in, outputs out (predict/array_files.py)
        from torchkeep.predict.array_files import predict_file

        rows = predict_file(predictor, args.data, args.out)
        print(f"wrote {rows:,} predictions to {args.out}")
        return 0
    if getattr(predictor.schema, "kind", "table") == "image":  # one row per image: file, prediction, probabilities
        predictions = predictor.predict(args.data, image_dir=args.image_dir)
        write_table(predictions, args.out)
        print(f"wrote {predictions.height:,} predictions to {args.out}")
        return 0
    frame = read_table(args.data)
    predictions = predictor.predict(frame, source=args.data)
    clashing = [c for c in predictions.columns if c in frame.columns]
    write_table(pl.concat([frame.drop(clashing), predictions], how="horizontal"), args.out)
    print(f"wrote {predictions.height:,} predictions to {args.out}")
    return 0
