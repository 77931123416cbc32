"""Transfer learning: does a model pretrained on one part of the data learn another part faster?

  pretrain     torchkeep.train on part A (all of it), default settings and --pretrain-epochs
  scratch      torchkeep.train on a small training sample of part B, from random weights
  frozen       the same, --init-from the pretrained run with everything but the head frozen
               (flights: --freeze 'embeddings.*,continuous_norm.*,mlp.*'; digits: --freeze 'features.*')
  early        the same, --init-from the pretrained run with only the first layers frozen, the rest trains
               (flights: the embeddings; digits: the CNN's first block, features.0-5)
  lr-mult      the same, --init-from the pretrained run, everything trains, --backbone-lr-mult 0.1
  all          the same, --init-from the pretrained run, everything trains at the full rate
  gradual      gradual unfreezing: "frozen" for epochs 1 to K-1 (only the head trains), then everything
               trains at the full rate from epoch K (--unfreeze-at K, default 3, fixed before any run)
  gradual+mult "gradual" with the pretrained weights at lr x 0.1 (--backbone-lr-mult 0.1)

The head follows labels (torchkeep's adapters): digits 5-9 share no label with 0-4, so every
transferred digits variant starts with a fresh head, as a new set of classes should.

All fine-tuning variants get the same epochs, batch size, learning rate, schedule and
validation set (the rest of part B, given as valid_path), so their curves are comparable epoch by
epoch. Printed: the validation metric after every epoch (median over --seeds) side by side, and for
each transferred variant the first epoch at which it reaches the from-scratch run's final value.

--dataset picks the parts. flights (the built-in table): A = months 1-9, B = months 10-12, `month`
dropped from both (its levels do not overlap). digits (the built-in images): A = classes 0-4, B =
classes 5-9; part B's training sample is --per-class images of each class, the rest of B validates;
the parts are written as idx folders and read by the same path as `torchkeep train --data DIR`; the
backbone is the CNN's `features.*`. Another dataset is one function returning Parts and a line in DATASETS.

Run: .venv/bin/python bench/transfer.py [--dataset flights] [--finetune-rows 1500] [--epochs 10] [--seeds 3]
     .venv/bin/python bench/transfer.py --dataset digits [--per-class 5] [--epochs 15] [--batch-size 16] [--lr 3e-3]
         [--image-size 28] [--pool flatten] [--sample-seed 0]   (the digits resized; the CNN's head on its
         whole last feature map; another draw of which images fine-tune and validate)
     (either: [--unfreeze-at 3])
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, table

import torchkeep


def write_parquet(frame: pl.DataFrame, stem: Path) -> str:
    path = stem.with_suffix(".parquet")
    frame.write_parquet(path)
    return str(path)


@dataclass
class Parts:
    description: str
    target: str
    pretrain: Any
    finetune: Any  # the small training sample of part B
    valid: Any  # the rest of part B
    backbone: list[str]  # parameter globs frozen in the "frozen" variant
    early: list[str]  # parameter globs of the first layers, frozen in the "early" variant
    monitor: str  # validation metric compared
    settings: dict[str, object] = field(default_factory=dict)  # passed to every torchkeep.train call
    write: Callable[[Any, Path], str] = write_parquet  # one part to a file or folder named from the stem: its path
    same_labels: bool = True  # part B's labels are ones the pretrained model knows (it can score B as it is)
    probe: Callable[[Parts, Path], dict[str, float]] | None = None  # what a linear head can reach on frozen features


def flights_parts(args: argparse.Namespace) -> Parts:
    from torchkeep.data.builtin import get_example

    frame = pl.read_parquet(get_example("flights").path)
    part_a = frame.filter(pl.col("month") <= 9)
    part_b = frame.filter(pl.col("month") >= 10).sample(fraction=1.0, shuffle=True, seed=0)
    return Parts(
        description=(f"flights: pretrain on months 1-9 ({part_a.height:,} rows); fine-tune on {args.finetune_rows:,}"
                     f" rows of months 10-12, validated on the other {part_b.height - args.finetune_rows:,}"),
        target="late",
        pretrain=part_a.drop("month"),
        finetune=part_b.head(args.finetune_rows).drop("month"),
        valid=part_b.slice(args.finetune_rows).drop("month"),
        backbone=["embeddings.*", "continuous_norm.*", "mlp.*"],
        early=["embeddings.*"],
        monitor="roc_auc",
    )


@dataclass
class Images:
    images: np.ndarray  # uint8 [N, H, W]
    labels: np.ndarray  # integers


def write_idx_folder(part: Images, stem: Path) -> str:
    """An MNIST-style idx folder, the layout `torchkeep train --data DIR` reads."""
    from torchkeep.data.image_io import write_idx

    stem.mkdir()
    write_idx(str(stem / "train-images-idx3-ubyte"), part.images)
    write_idx(str(stem / "train-labels-idx1-ubyte"), part.labels)
    return str(stem)


def backbone_linear_probe(parts: Parts, run_dir: Path) -> dict[str, float]:
    """Validation accuracy of scikit-learn's logistic regression (fitted to convergence) on part B's training
    sample, read at several depths of the pretrained CNN: the backbone's output is about the best the
    frozen variant allows; the raw pixels and the earlier layers show where the transferable part ends."""
    import torch
    from sklearn.linear_model import LogisticRegression

    model = torchkeep.load(str(run_dir)).model.eval()
    layers = list(model.features)
    pools = [index for index, layer in enumerate(layers) if isinstance(layer, torch.nn.MaxPool2d)]
    depths = {"raw pixels": 0, "after block 1": pools[0] + 1, "after the last block":
              pools[-1] + 1, "backbone output (what the frozen head sees)": len(layers)}

    def features(part: Images, depth: int) -> np.ndarray:
        with torch.no_grad():
            value = model.normalize(torch.from_numpy(part.images[:, None].copy()))
            for layer in layers[:depth]:
                value = layer(value)
            return value.flatten(1).numpy()

    scores = {}
    for name, depth in depths.items():
        fitted = LogisticRegression(max_iter=5_000).fit(features(parts.finetune, depth), parts.finetune.labels)
        predicted = fitted.predict(features(parts.valid, depth))
        scores[f"{name}, {features(parts.finetune, depth).shape[1]} values"] = float((predicted == parts.valid.labels).mean())
    return scores


def digits_parts(args: argparse.Namespace) -> Parts:
    from torchkeep.data.builtin import get_example

    with np.load(get_example("digits").path) as arrays:
        images, labels = arrays["images"], arrays["labels"].astype(np.int64)
    if args.image_size:  # resized as torchkeep resizes a decoded file (Pillow, bilinear), before the split
        from PIL import Image

        images = np.stack([np.asarray(Image.fromarray(image).resize((args.image_size, args.image_size),
                                                                    Image.Resampling.BILINEAR)) for image in images])
    order = np.random.default_rng(args.sample_seed).permutation(len(labels))  # every seed fine-tunes on the same images
    images, labels = images[order], labels[order]
    part_a = labels <= 4
    b_index = np.flatnonzero(~part_a)
    sample = np.concatenate([b_index[labels[b_index] == digit][: args.per_class] for digit in range(5, 10)])
    rest = np.setdiff1d(b_index, sample)
    return Parts(
        description=(f"digits: pretrain on classes 0-4 ({part_a.sum():,} images); fine-tune on {args.per_class} images"
                     f" of each of 5-9 ({len(sample)}), validated on the other {len(rest):,} of 5-9"),
        target="label",
        pretrain=Images(images[part_a], labels[part_a]),
        finetune=Images(images[sample], labels[sample]),
        valid=Images(images[rest], labels[rest]),
        backbone=["features.*"],
        early=["features.0.*", "features.1.*", "features.3.*", "features.4.*"],  # first conv block (ReLUs have none)
        monitor="accuracy",
        write=write_idx_folder,
        same_labels=False,
        probe=backbone_linear_probe,
        # widths 32,64 at any --image-size: the CNN bench/README.md's figures were measured with (the default
        # size rule gives 28x28 images a third block, whose 3x3 last map changes what a frozen head sees)
        settings={"widths": [32, 64], **({"pool": args.pool} if args.pool else {})},
    )


DATASETS: dict[str, Callable[[argparse.Namespace], Parts]] = {"flights": flights_parts, "digits": digits_parts}
# Per dataset, the values of the flags left unset: (fine-tuning epochs, batch size, pretraining epochs).
DEFAULTS = {"flights": (10, 256, 3), "digits": (15, 16, 15)}
# digits: 5 images a class in batches of 16 is 2 steps an epoch; lr is torchkeep's image default (3e-3) unless --lr.


def valid_curve(run_dir: Path, monitor: str) -> list[float]:
    """The monitored validation metric after each epoch, from the run's metrics.jsonl."""
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [event[monitor] for event in events if event.get("split") == "valid"]


def first_epoch_reaching(curve: list[float], value: float) -> int | None:
    return next((epoch for epoch, got in enumerate(curve, start=1) if got >= value), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="flights")
    parser.add_argument("--finetune-rows", type=int, default=1_500, help="flights: training rows of part B (default 1500)")
    parser.add_argument("--per-class", type=int, default=5, help="digits: training images of each class 5-9 (default 5)")
    parser.add_argument("--image-size", type=int, help="digits: resize the 8x8 images to N x N (default: as they are)")
    parser.add_argument("--sample-seed", type=int, default=0,
                        help="digits: which images of 5-9 fine-tune and which validate (default 0)")
    parser.add_argument("--pool", choices=["avg", "flatten"], help="digits: the CNN's pooling before its head (default avg)")
    parser.add_argument("--epochs", type=int, help="fine-tuning epochs, every variant (default: flights 10, digits 15)")
    parser.add_argument("--pretrain-epochs", type=int, help="(default: flights 3, digits 15)")
    parser.add_argument("--batch-size", type=int, help="fine-tuning batch size (default: flights 256, digits 16)")
    parser.add_argument("--lr", type=float, help="fine-tuning peak learning rate, every variant (default: torchkeep's)")
    parser.add_argument("--unfreeze-at", type=int, default=3,
                        help="gradual variants: the epoch everything starts training (default 3, fixed a priori)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per variant; curves are medians (default 3)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    defaults = DEFAULTS[args.dataset]
    args.epochs = args.epochs or defaults[0]
    args.batch_size = args.batch_size or defaults[1]
    args.pretrain_epochs = args.pretrain_epochs or defaults[2]

    parts = DATASETS[args.dataset](args)
    print(parts.description)
    print(f"{environment()}; every run uses --threads {args.threads}")
    common = {"target": parts.target, "threads": args.threads, "quiet": True, **parts.settings}
    tuning = {"epochs": args.epochs, "batch_size": args.batch_size, **({"lr": args.lr} if args.lr else {})}
    variants = {
        "scratch": {},
        "frozen": {"init_from": "PRETRAINED", "freeze": parts.backbone},
        "early": {"init_from": "PRETRAINED", "freeze": parts.early},
        "lr-mult": {"init_from": "PRETRAINED", "backbone_lr_mult": 0.1},
        "all": {"init_from": "PRETRAINED"},
        "gradual": {"init_from": "PRETRAINED", "freeze": parts.backbone, "unfreeze_at": args.unfreeze_at},
        "gradual+mult": {"init_from": "PRETRAINED", "freeze": parts.backbone, "unfreeze_at": args.unfreeze_at,
                         "backbone_lr_mult": 0.1},
    }
    curves: dict[str, list[list[float]]] = {name: [] for name in variants}
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory(prefix="torchkeep-transfer-") as root:
        base = Path(root)
        paths = {}
        for name in ("pretrain", "finetune", "valid"):
            paths[name] = parts.write(getattr(parts, name), base / name)
        started = time.perf_counter()
        pretrained = torchkeep.train(paths["pretrain"], run_dir=str(base / "pretrained"),
                                     epochs=args.pretrain_epochs, **common)
        print(f"pretrained: {args.pretrain_epochs} epochs, {time.perf_counter() - started:.1f} s, validation"
              f" {parts.monitor} {pretrained.valid[parts.monitor]:.4f} (on part A)")
        if parts.same_labels:
            as_is = torchkeep.load(str(base / "pretrained")).evaluate(paths["valid"])[parts.monitor]
            print(f"the pretrained model as it is, no fine-tuning, on part B's validation rows: {parts.monitor} {as_is:.4f}")
        if parts.probe is not None:
            print("logistic regression fitted to convergence on part B's training sample, scored on its validation"
                  " rows, reading the pretrained model at several depths (the last line is the frozen variant's ceiling):")
            for name, score in parts.probe(parts, base / "pretrained").items():
                print(f"  {name}: {parts.monitor} {score:.4f}")
        for seed in range(args.seeds):
            for name, extra in variants.items():
                extra = {k: (str(base / "pretrained") if v == "PRETRAINED" else v) for k, v in extra.items()}
                run_dir = base / f"{name}-{seed}"
                started = time.perf_counter()
                torchkeep.train(paths["finetune"], valid_path=paths["valid"], run_dir=str(run_dir),
                                seed=seed, **tuning, **common, **extra)
                seconds[name].append(time.perf_counter() - started)
                curves[name].append(valid_curve(run_dir, parts.monitor))

    medians = {name: [statistics.median(values) for values in zip(*runs, strict=True)] for name, runs in curves.items()}
    print(f"\nvalidation {parts.monitor} after each fine-tuning epoch (median of {args.seeds} seeds;"
          f" {args.epochs} epochs, batch {args.batch_size}, same budget for every variant):")
    rows = [[epoch, *(f"{medians[name][epoch - 1]:.4f}" for name in variants)] for epoch in range(1, args.epochs + 1)]
    rows.append(["s/run", *(f"{statistics.median(seconds[name]):.1f}" for name in variants)])
    print(table(["epoch", *variants], rows))
    target = medians["scratch"][-1]
    print(f"\nfrom scratch, final (epoch {args.epochs}): {parts.monitor} {target:.4f}")
    for name in variants:
        if name == "scratch":
            continue
        reached = first_epoch_reaching(medians[name], target)
        per_seed = [first_epoch_reaching(curve, runs[-1]) for curve, runs in zip(curves[name], curves["scratch"], strict=True)]
        shown = ", ".join("never" if e is None else str(e) for e in per_seed)
        print(f"{name}: reaches it at epoch {reached if reached is not None else 'never'} (median curve);"
              f" per seed vs that seed's scratch run: {shown}")


if __name__ == "__main__":
    main()
