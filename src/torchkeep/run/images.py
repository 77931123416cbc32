"""Image runs: which data is images, reading and splitting it, the settings image runs start from,
and the two entry points of every kind, `start` a run and `reopen` one to resume.

Every image is decoded (and every unreadable one reported or counted) before the run directory is
written, so bad data leaves no run behind, as for tables.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from torchkeep.config import RunConfig
from torchkeep.data.builtin import get_example
from torchkeep.data.image_io import (
    RawImages,
    decode_all,
    decode_image,
    is_idx_folder,
    list_images,
    read_images,
    resize_arrays,
)
from torchkeep.data.images import ImageFileDataset, ImageSchema
from torchkeep.data.parquet import is_parquet_dataset
from torchkeep.errors import ConfigError, DataError
from torchkeep.models.build import build_model
from torchkeep.models.vision import DEFAULT_WIDTHS, default_widths, vision_model_args
from torchkeep.run.images_transfer import head_aligner
from torchkeep.run.rundir import RunDir, fingerprint, split_index
from torchkeep.run.session import Setup
from torchkeep.run.settings import read_init_from, with_monitor
from torchkeep.storage import open_storage
from torchkeep.training.budget import IMAGE_EPOCHS, IMAGE_PIXELS_SEEN, image_epochs
from torchkeep.training.loop import TrainConfig, check_device
from torchkeep.training.optim import OptimConfig
from torchkeep.training.progress import Progress
from torchkeep.training.transfer import check_transfer

IMAGE_ARCHITECTURES = {"cnn": "image_cnn", "mlp": "image_mlp"}
# Image runs start from these instead of the table defaults (3 epochs of 1024 rows suit 50k-row
# tables, not 1,437 digits). Chosen on validation splits of digits' training part
# (bench/digits_defaults.py, mean of 3 seeds): 30 epochs, batch 64, lr 3e-3 gave valid accuracy
# 0.9954 / log loss 0.0223; random crops after 1 pixel of padding lowered the log loss to 0.0149
# (and from 0.0135 to 0.0131 with widths 64,128, which cost 2-3x the time for a gain within noise).
# A value given on the command line, in Python or in a TOML file wins (a Python RunConfig holding
# the table default's value cannot be told from one that holds no setting).
# The epochs then follow the images' number and size (training/budget.py, image_epochs).
IMAGE_TRAIN_DEFAULTS = {"epochs": IMAGE_EPOCHS, "batch_size": 64}
IMAGE_OPTIM_DEFAULTS = {"lr": 3e-3}
IMAGE_DATA_DEFAULTS = {"augment_pad": 1}
TABLE_SUFFIXES = (".csv", ".parquet")


def is_image_path(path: str) -> bool:
    if path.startswith("s3://"):
        return not path.lower().endswith(TABLE_SUFFIXES) and not is_parquet_dataset(path)
    return os.path.isdir(path) and not is_parquet_dataset(path)


def is_image_data(config: RunConfig, data: Any) -> bool:
    path = data if isinstance(data, str) else config.data.path if data is None else None
    if isinstance(data, RawImages) or config.data.image_dir is not None:
        return True
    if path is None:
        return data is None and config.data.example is not None and get_example(config.data.example).kind == "image"
    return is_image_path(path)


def _read(config: RunConfig, data: Any, progress: Progress, *, need_labels: bool = True,
          size: tuple[int, int] | None = None, channels: int | None = None) -> tuple[RawImages, str, RunConfig]:
    settings = config.data
    if size is None and settings.image_size is not None:
        size = (settings.image_size[0], settings.image_size[-1])
    channels = channels or settings.channels
    if isinstance(data, RawImages):
        if size is not None and tuple(data.images.shape[2:]) != tuple(size) or channels not in (None, data.images.shape[1]):
            data = dataclasses.replace(data, images=resize_arrays(data.images, size, channels))
        return data, "images", config
    path = data if isinstance(data, str) else settings.path
    if path is None:
        example = get_example(settings.example or "digits")
        with np.load(example.path) as arrays:
            images, labels = arrays["images"], arrays["labels"].astype(np.int64).tolist()
        raw = RawImages(images=images[:, None], labels=labels, files=[f"{example.name}[{i}]" for i in range(len(labels))],
                        skipped=[])
        if size is not None and size != tuple(images.shape[1:]) or channels == 3:
            raw.images = resize_arrays(raw.images, size, channels)
        updated = dataclasses.replace(settings, example=example.name, target=settings.target or example.target)
        return raw, example.name, dataclasses.replace(config, data=updated)
    if "://" not in path:
        path = os.path.abspath(path)  # a resumed run finds its data from any working directory
    image_dir = settings.image_dir
    if image_dir is not None and "://" not in image_dir:
        image_dir = os.path.abspath(image_dir)
    started = time.perf_counter()
    raw = read_images(path, image_dir=image_dir, file_column=settings.file_column, label_column=settings.label_column,
                      size=size, channels=channels, skip_bad=settings.skip_bad_images, need_labels=need_labels,
                      report=progress.message)
    if raw.skipped:
        progress.message(f"skipped {len(raw.skipped):,} unreadable image(s) (--skip-bad-images), first: {raw.skipped[0]}")
    seconds = time.perf_counter() - started
    if seconds > 1:
        progress.message(f"decoded {len(raw.images):,} images in {seconds:.1f} s")
    updated = dataclasses.replace(settings, path=path, image_dir=image_dir, target=settings.target or "label")
    return raw, Path(path.rstrip("/")).stem, dataclasses.replace(config, data=updated)


def _plan_streaming(config: RunConfig, data: Any) -> tuple[str, list[str], list[Any]] | None:
    """(root, files, labels) when a folder / CSV layout would decode to more than the memory budget."""
    settings = config.data
    path = data if isinstance(data, str) else settings.path if data is None else None
    if path is None or (settings.image_dir is None and is_idx_folder(path)):
        return None
    if "://" not in path:
        path = os.path.abspath(path)
    root, files, labels = list_images(path, image_dir=settings.image_dir, file_column=settings.file_column,
                                      label_column=settings.label_column)
    size = (settings.image_size[0], settings.image_size[-1]) if settings.image_size else None
    if size is None or settings.channels is None:
        first = decode_image(open_storage(root).read(files[0]), size=size, channels=settings.channels, name=files[0])
        bytes_per_image = first.size if size is None else len(first) * size[0] * size[1]
    else:
        bytes_per_image = settings.channels * size[0] * size[1]
    return (root, files, labels) if len(files) * bytes_per_image > settings.image_memory_bytes else None


def _streamed(config: RunConfig, plan: tuple[str, list[str], list[Any]], schema: ImageSchema | None,
              progress: Progress) -> tuple[ImageSchema, tuple[ImageFileDataset, ImageFileDataset], dict[str, Any]]:
    """Datasets that decode one file per item; the schema's statistics from a sample of training images."""
    root, files, labels = plan
    if config.data.valid_path:
        raise ConfigError("a validation set (--valid) with images over the memory budget is not supported;"
                          " use --valid-fraction, or raise --image-memory-gib")
    if config.data.skip_bad_images:
        files, labels = _readable(config, root, files, labels, progress)
    train_index, valid_index = split_index(len(files), seed=config.train.seed, valid_fraction=config.data.valid_fraction,
                                           what=config.data.path or "data", unit="image")
    if schema is None:
        sample = train_index[:: max(1, len(train_index) // 2000)]
        settings = config.data
        size = (settings.image_size[0], settings.image_size[-1]) if settings.image_size else None
        storage = open_storage(root)
        images, _, _ = decode_all(lambda key: storage.read(key), [files[i] for i in sample], size=size,
                                  channels=settings.channels, where=lambda key: f"{root.rstrip('/')}/{key}")
        sampled = RawImages(images=images, labels=[labels[i] for i in train_index], files=[], skipped=[])
        schema = ImageSchema.fit(sampled, task=config.data.task, source=f"{config.data.path} (training split)")
        progress.message(f"{len(files):,} images are over the memory budget ({config.data.image_memory_bytes / 2**30:.2f}"
                         f" GiB decoded): streaming them from files with DataLoader workers")
    def dataset(index: np.ndarray) -> ImageFileDataset:
        targets = schema.encode_labels([labels[i] for i in index], str(config.data.path))
        return ImageFileDataset(schema, root, [files[i] for i in index], targets)

    listing = "\n".join(f"{f}\t{v}" for f, v in zip(files, labels)).encode()
    found = fingerprint(len(files), ["image", "label"], listing, streaming=True)
    return schema, (dataset(train_index), dataset(valid_index)), found


def _readable(config: RunConfig, root: str, files: list[str], labels: list[Any],
              progress: Progress) -> tuple[list[str], list[Any]]:
    """--skip-bad-images with streaming: every file decoded once up front (in chunks, pixels dropped), so
    unreadable ones are left out and counted before the split, as in memory, and never fail a run mid-way.
    Costs one decode pass over the data; without --skip-bad-images a bad file stops the run naming it."""
    settings = config.data
    size = (settings.image_size[0], settings.image_size[-1]) if settings.image_size else None
    storage = open_storage(root)
    skipped: set[str] = set()
    chunk = 4096  # decoded pixels of one chunk at a time, not the whole data set
    progress.message(f"checking {len(files):,} images for --skip-bad-images (one decode pass)")
    for start in range(0, len(files), chunk):
        _, _, bad = decode_all(lambda key: storage.read(key), files[start : start + chunk], size=size,
                               channels=settings.channels, skip_bad=True, where=lambda key: key)
        skipped.update(bad)
    if not skipped:
        return files, labels
    kept = [i for i, name in enumerate(files) if name not in skipped]
    if not kept:
        raise DataError(f"{config.data.path}: none of the {len(files):,} images could be read")
    first = next(name for name in files if name in skipped)
    progress.message(f"skipped {len(skipped):,} unreadable image(s) (--skip-bad-images), first: {root.rstrip('/')}/{first}")
    return [files[i] for i in kept], [labels[i] for i in kept]


def split(raw: RawImages, config: RunConfig, progress: Progress, schema: ImageSchema | None) -> tuple[RawImages, RawImages]:
    if config.data.valid_path:
        size = schema.size if schema else None
        valid, _, _ = _read(dataclasses.replace(config, data=dataclasses.replace(config.data, image_dir=None)),
                            config.data.valid_path, progress, size=size, channels=schema.channels if schema else None)
        return raw, valid
    train_index, valid_index = split_index(len(raw.images), seed=config.train.seed,
                                           valid_fraction=config.data.valid_fraction, what=config.data.path or "data",
                                           unit="image")
    return _subset(raw, train_index), _subset(raw, valid_index)


def _subset(raw: RawImages, index: np.ndarray) -> RawImages:
    labels = [raw.labels[i] for i in index] if raw.labels is not None else None
    return RawImages(images=raw.images[index], labels=labels, files=[raw.files[i] for i in index], skipped=[])


def images_fingerprint(raw: RawImages) -> dict[str, Any]:
    return fingerprint(len(raw.images), ["image", "label"], raw.images)


def _image_defaults(config: RunConfig, overrides: dict[str, Any]) -> tuple[RunConfig, set[str]]:
    """The image defaults for what the user left unset, and the names of those filled in."""
    overrides = {**overrides, **dict.fromkeys(config.explicit)}  # set by a flag, a keyword or the TOML file
    table_train, table_optim = TrainConfig(), OptimConfig()
    train = {k: v for k, v in IMAGE_TRAIN_DEFAULTS.items()
             if k not in overrides and getattr(config.train, k) == getattr(table_train, k)}
    optim = {k: v for k, v in IMAGE_OPTIM_DEFAULTS.items()
             if k not in overrides and getattr(config.train.optim, k) == getattr(table_optim, k)}
    data = {k: v for k, v in IMAGE_DATA_DEFAULTS.items() if k not in overrides and getattr(config.data, k) == 0}
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, **data), train=dataclasses.replace(
        config.train, optim=dataclasses.replace(config.train.optim, **optim), **train))
    widths = {"widths"} if "widths" not in overrides and config.vision.widths == DEFAULT_WIDTHS else set()
    return config, {*train, *optim, *data, *widths}


def _shape_defaults(config: RunConfig, filled: set[str], schema: ImageSchema, images: int,
                    progress: Progress) -> RunConfig:
    """The defaults that follow from the training images' number and size: the cnn's blocks
    (models/vision.py, default_widths) and the epochs (training/budget.py, image_epochs)."""
    if "widths" in filled:
        config = dataclasses.replace(config, vision=dataclasses.replace(
            config.vision, widths=default_widths(schema.height, schema.width)))
    if "epochs" not in filled:
        return config
    epochs = image_epochs(images, schema.height, schema.width)
    if epochs < config.train.epochs:
        progress.message(f"budget: {epochs} epochs of {images:,} images of {schema.height}x{schema.width}"
                         f" (at most {IMAGE_PIXELS_SEEN / 1e6:g}M pixels seen, {IMAGE_EPOCHS} epochs for"
                         f" smaller sets; --epochs N to choose)")
    return dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=epochs))


def reopen(run: RunDir, data: Any, progress: Progress) -> Setup:
    """An image run to resume: its saved config and schema, the same images (checked), the same split."""
    spec = run.read("model.json")
    config = RunConfig.from_dict(run.read("config.json"), source=f"{run.path}/config.json")
    schema = ImageSchema.from_dict(run.read("schema.json"))
    saved = run.read("run.json")["data"]
    if saved.get("streaming"):
        plan = _plan_streaming(config, data)
        if plan is None:
            raise DataError(f"{config.data.path}: the run streamed its images and they now fit in memory; resume needs the same data")
        schema, streamed, found = _streamed(config, plan, schema, progress)
        if (saved["rows"], saved["hash"]) != (found["rows"], found["hash"]):
            raise DataError(f"{config.data.path}: its files or labels changed since the run started; resume needs the same data")
        return Setup(run, config, schema, spec["architecture"], spec["args"], None, None, streamed)
    raw, _, config = _read(config, data, progress, size=schema.size, channels=schema.channels)
    found = images_fingerprint(raw)
    if saved["rows"] != found["rows"] or saved["hash"] != found["hash"]:
        raise DataError(f"{config.data.path or 'data'}: changed since the run started ({saved['rows']} images then,"
                        f" {found['rows']} now, or different pixels); resume needs the same data")
    train_raw, valid_raw = split(raw, config, progress, schema)
    return Setup(run, config, schema, spec["architecture"], spec["args"], *_tensors(schema, train_raw, valid_raw, config))


def is_image_run(run: RunDir) -> bool:
    return run.read("model.json")["architecture"] in IMAGE_ARCHITECTURES.values()


def vision_settings(overrides: dict[str, Any]) -> dict[str, Any]:
    """Image settings that share a name with the table model's: taken out of `overrides`, they go to [vision]."""
    return {k: overrides.pop(k) for k in ("dropout", "hidden_sizes", "architecture", "widths", "pool") if k in overrides}


def start(data: Any, config: RunConfig, overrides: dict[str, Any], vision: dict[str, Any], progress: Progress) -> Setup:
    """A new image run: decode (or plan streaming), split, fit, check, then write the run's files (run.json last)."""
    config = dataclasses.replace(config, vision=dataclasses.replace(config.vision, **vision))
    config, filled = _image_defaults(config, {**overrides, **vision})
    plan = _plan_streaming(config, data)
    if plan is None:
        raw, name, config = _read(config, data, progress)
    else:
        path = data if isinstance(data, str) else config.data.path
        path = path if "://" in path else os.path.abspath(path)
        name = Path(path.rstrip("/")).stem
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, path=path, target=config.data.target or "label"))
    run = RunDir.new(config.run_dir, name)
    config = dataclasses.replace(config, run_dir=run.path)
    if plan is None:
        train_raw, valid_raw = split(raw, config, progress, None)
        source = config.data.path or name
        schema = ImageSchema.fit(train_raw, task=config.data.task, source=f"{source} (training split)")
        found = images_fingerprint(raw)
    else:
        schema, streamed, found = _streamed(config, plan, None, progress)
    assert schema.target is not None
    config = _shape_defaults(config, filled, schema, len(train_raw.images) if plan is None else len(streamed[0]), progress)
    config = with_monitor(config, schema.target.task)
    architecture = IMAGE_ARCHITECTURES[config.vision.architecture]
    model_args = vision_model_args(config.vision, schema)
    tensors = _tensors(schema, train_raw, valid_raw, config) if plan is None else (None, None)  # before anything is written
    # Also before: freeze patterns, and what init_from loads (on a scratch model), as for tables.
    pretrained, config = read_init_from(config)
    transfer_report = check_transfer(config.train.transfer, lambda: build_model(architecture, model_args), pretrained,
                                     head_aligner(schema))
    check_device(config.train.device)
    run.write_setup(config=config.to_dict(), schema=schema.to_dict(), transfer=transfer_report,
                    model={"architecture": architecture, "args": model_args}, data=found)
    return Setup(run, config, schema, architecture, model_args, *tensors,
                 streamed=None if plan is None else streamed, pretrained=pretrained)


def _tensors(schema: ImageSchema, train_raw: RawImages, valid_raw: RawImages,
             config: RunConfig) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    budget = config.data.image_memory_bytes
    used = train_raw.images.nbytes + valid_raw.images.nbytes
    if used > budget:
        raise DataError(f"decoded images take {used / 2**30:.2f} GiB, over data.image_memory_bytes"
                        f" ({budget / 2**30:.2f} GiB); raise the budget or lower --image-size")
    source = config.data.path or config.data.example or "data"
    return (schema.transform(train_raw, source=f"{source} (training split)"),
            schema.transform(valid_raw, source=config.data.valid_path or f"{source} (validation split)"))
