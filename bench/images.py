"""Images: loading speed against the seed-style per-file Dataset, and digits quality against scikit-learn.

    PYTHONPATH=src python bench/images.py [--epochs 5] [--threads N] [--seeds 0,1,2] [--jpeg-size 28] [--skip-quality]

1. Loading. The 1,797 digits upscaled to 28x28 gray PNG files in class folders (as BASELINES.md).
   Seed style: a Dataset that opens one file per __getitem__ with Pillow and converts it ToTensor-like
   (float / 255), through DataLoader(batch_size=64) with num_workers 0 and 2 (persistent workers,
   prefetch_factor 4). torchkeep: the same files decoded once in a thread pool into one uint8 tensor,
   then BatchLoader gathering whole batches of 64 (+ the same float conversion). Images/s per epoch
   (median over epochs), and torchkeep's one-time decode separately.
2. Quality. digits, 80/20 split = scikit-learn's train_test_split(test_size=0.2, random_state=0); the
   training part is written as idx files and trained with torchkeep's DEFAULT settings (its own 10%
   validation split comes out of the training part); test accuracy on the 20%, next to SVC (RBF,
   defaults) and logistic regression (max_iter 5000) on the raw 0-16 pixel values, same split.
3. Quality on RGB JPEGs of another size: the same digits and split upscaled to --jpeg-size (bilinear),
   converted to RGB and saved as JPEG (quality 90) in class folders, as a user's photos would come;
   torchkeep trains on the folder with its DEFAULT settings; SVC and logistic regression get the very
   pixels torchkeep decodes from those files (3 x size x size, scaled to [0, 1]).
With --seeds 0,1,2 torchkeep trains once per seed and the median test accuracy is reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

BATCH = 64
JPEG_QUALITY = 90


def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.images, data.target, np.rint(data.images * 255 / 16).astype(np.uint8)


def write_jpegs(root: Path, pixels: np.ndarray, labels: np.ndarray, index: np.ndarray, size: int,
                quality: int = JPEG_QUALITY) -> None:
    """Digits re-encoded as a user's photos would come: upscaled to size x size (bilinear), RGB, JPEG, in
    class folders. The three channels are equal up to JPEG's colour noise."""
    from PIL import Image

    for position in index:
        folder = root / str(labels[position])
        folder.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(pixels[position]).resize((size, size), Image.Resampling.BILINEAR).convert("RGB")
        image.save(folder / f"{position:05d}.jpg", quality=quality)


def write_pngs(root: Path, images: np.ndarray, labels: np.ndarray) -> list[tuple[str, int]]:
    from PIL import Image

    samples = []
    for index, (image, label) in enumerate(zip(images, labels)):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{index:05d}.png"
        Image.fromarray(image).resize((28, 28), Image.Resampling.BILINEAR).save(path)
        samples.append((str(path), int(label)))
    return samples


class SeedStyleDataset(torch.utils.data.Dataset):
    """The seeds' CustomImageDataset: one file opened and decoded per item, ToTensor-like conversion."""

    def __init__(self, samples: list[tuple[str, int]]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        path, label = self.samples[index]
        with Image.open(path) as image:
            array = np.asarray(image.convert("L"), dtype=np.uint8)
        return torch.from_numpy(array.copy()).float().div(255).unsqueeze(0), label


def images_per_second(batches, epochs: int, count: int) -> float:
    rates = []
    for _ in range(epochs):
        started, seen = time.perf_counter(), 0
        for batch in batches():
            images = batch["image"].float().div(255) if isinstance(batch, dict) else batch[0]
            seen += len(images)
        rates.append(seen / (time.perf_counter() - started))
        assert seen == count
    return statistics.median(rates)


def loading(root: Path, samples: list[tuple[str, int]], epochs: int) -> None:
    from torchkeep.data.image_io import read_images
    from torchkeep.data.loader import BatchLoader

    count = len(samples)
    results = {}
    for workers in (0, 2):
        extra = {"persistent_workers": True, "prefetch_factor": 4} if workers else {}
        loader = torch.utils.data.DataLoader(SeedStyleDataset(samples), batch_size=BATCH, shuffle=True,
                                             num_workers=workers, **extra)
        results[f"seed-style per-file Dataset, DataLoader num_workers={workers}"] = images_per_second(
            lambda loader=loader: loader, epochs, count)
    started = time.perf_counter()
    raw = read_images(str(root), size=None, channels=None)
    decode_rate = count / (time.perf_counter() - started)
    tensors = {"image": torch.from_numpy(raw.images), "target": torch.tensor([int(v) for v in raw.labels])}
    batch_loader = BatchLoader(tensors, BATCH, shuffle=True, seed=0)
    results["torchkeep: decoded uint8 tensor, BatchLoader whole batches"] = images_per_second(
        lambda: batch_loader, epochs, count)
    base = results["seed-style per-file Dataset, DataLoader num_workers=0"]
    print(f"\nloading {count:,} 28x28 gray PNGs, batch {BATCH}, median of {epochs} epochs")
    print(f"{'loader':<62} {'images/s':>12} {'vs workers=0':>13}")
    for name, rate in results.items():
        print(f"{name:<62} {rate:>12,.0f} {rate / base:>12.1f}x")
    print(f"{'torchkeep one-time decode (thread pool, Pillow)':<62} {decode_rate:>12,.0f} {decode_rate / base:>12.1f}x")


def baselines(train: np.ndarray, test: np.ndarray, y_train: np.ndarray, y_test: np.ndarray) -> list[tuple[str, list[float], float]]:
    """SVC and logistic regression on flattened pixels: (name, [test accuracy], training seconds)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import SVC

    rows = []
    for name, model in (("scikit-learn SVC (RBF, defaults)", SVC()),
                        ("scikit-learn logistic regression", LogisticRegression(max_iter=5000))):
        started = time.perf_counter()
        model.fit(train.reshape(len(train), -1), y_train)
        seconds = time.perf_counter() - started
        rows.append((name, [float((model.predict(test.reshape(len(test), -1)) == y_test).mean())], seconds))
    return rows


def torchkeep_defaults(train: str, test: str, run_root: str, threads: int | None, seeds: list[int]) -> tuple[str, list[float], float]:
    """torchkeep.train(train) with default settings, once per seed; (described, [test accuracy], median seconds)."""
    import torchkeep

    accuracies, seconds = [], []
    for seed in seeds:
        settings = {"threads": threads} if threads else {}
        started = time.perf_counter()
        result = torchkeep.train(train, run_dir=f"{run_root}/seed{seed}", quiet=True, seed=seed, **settings)
        seconds.append(time.perf_counter() - started)
        accuracies.append(torchkeep.load(result.run_dir).evaluate(test)["accuracy"])
    config = torchkeep.RunConfig.from_dict(json.loads(Path(result.run_dir, "config.json").read_text()))
    vision, train_config = config.vision, config.train
    described = (f"torchkeep defaults ({vision.architecture} {','.join(map(str, vision.widths))}, {train_config.epochs} epochs,"
                 f" batch {train_config.batch_size}, lr {train_config.optim.lr:g}, pad {config.data.augment_pad})")
    return described, accuracies, statistics.median(seconds)


def print_rows(title: str, rows: list[tuple[str, list[float], float]]) -> None:
    print(f"\n{title}")
    print(f"{'model':<72} {'test accuracy':>13} {'train s':>8}  per seed")
    for name, accuracies, seconds in rows:
        each = " ".join(f"{a:.4f}" for a in accuracies) if len(accuracies) > 1 else ""
        print(f"{name:<72} {statistics.median(accuracies):>13.4f} {seconds:>8.2f}  {each}")


def quality(threads: int | None, seeds: list[int]) -> None:
    """The built-in digits: idx files of the 8x8 pixels; baselines on the raw 0-16 values."""
    from sklearn.model_selection import train_test_split

    from torchkeep.data.image_io import write_idx

    raw_values, labels, pixels = digits()
    train_index, test_index = train_test_split(np.arange(len(labels)), test_size=0.2, random_state=0)
    rows = baselines(raw_values[train_index], raw_values[test_index], labels[train_index], labels[test_index])
    with tempfile.TemporaryDirectory() as folder:
        for split, index in (("train", train_index), ("test", test_index)):
            (Path(folder) / split).mkdir()
            write_idx(f"{folder}/{split}/{split}-images-idx3-ubyte", pixels[index])
            write_idx(f"{folder}/{split}/{split}-labels-idx1-ubyte", labels[index].astype(np.uint8))
        rows.append(torchkeep_defaults(f"{folder}/train", f"{folder}/test", f"{folder}/runs", threads, seeds))
    print_rows(f"digits, 80/20 split (train_test_split random_state=0): {len(train_index)} train / {len(test_index)} test,"
               f" seeds {','.join(map(str, seeds))} (median)", rows)


def quality_jpeg(threads: int | None, seeds: list[int], size: int) -> None:
    """The same digits and split re-encoded as RGB JPEG files (class folders) of size x size; the baselines
    see exactly the pixels torchkeep decodes from those files (its reader, at the files' own size)."""
    from sklearn.model_selection import train_test_split

    from torchkeep.data.image_io import read_images

    _, labels, pixels = digits()
    train_index, test_index = train_test_split(np.arange(len(labels)), test_size=0.2, random_state=0)
    with tempfile.TemporaryDirectory() as folder:
        for split, index in (("train", train_index), ("test", test_index)):
            write_jpegs(Path(folder) / split, pixels, labels, index, size)
        decoded = {split: read_images(f"{folder}/{split}", size=None, channels=None) for split in ("train", "test")}
        shape = decoded["train"].images.shape[1:]
        rows = baselines(*(decoded[split].images.astype(np.float32) / 255 for split in ("train", "test")),
                         *(np.array([int(v) for v in decoded[split].labels]) for split in ("train", "test")))
        rows.append(torchkeep_defaults(f"{folder}/train", f"{folder}/test", f"{folder}/runs", threads, seeds))
    print_rows(f"digits re-encoded: RGB JPEG {size}x{size} (quality {JPEG_QUALITY}) in class folders, decoded"
               f" {list(shape)}; same split, seeds {','.join(map(str, seeds))} (median)", rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=5, help="loading epochs per loader (median reported)")
    parser.add_argument("--threads", type=int, help="torch CPU threads, loading and training (default: torch's)")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-loading", action="store_true")
    parser.add_argument("--seeds", default="0", help="torchkeep seeds, comma list; the median is reported (default 0)")
    parser.add_argument("--jpeg-size", type=int, default=28, help="side of the re-encoded RGB JPEG digits (default 28;"
                        " 0: skip that set)")
    args = parser.parse_args()
    if args.threads:  # on a busy 2-core machine, 2 intra-op threads wait on each other (bench/README.md)
        torch.set_num_threads(args.threads)
    if not args.skip_loading:
        _, labels, pixels = digits()
        with tempfile.TemporaryDirectory() as folder:
            samples = write_pngs(Path(folder), pixels, labels)
            loading(Path(folder), samples, args.epochs)
    if not args.skip_quality:
        seeds = [int(seed) for seed in args.seeds.split(",")]
        quality(args.threads, seeds)
        if args.jpeg_size:
            quality_jpeg(args.threads, seeds, args.jpeg_size)


if __name__ == "__main__":
    main()
