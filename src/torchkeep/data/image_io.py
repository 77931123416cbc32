"""Reading images: three layouts on disk (or s3://), decoded with Pillow in a thread pool.

    DIR/                     one sub-folder per class: DIR/cat/001.png, DIR/dog/7.jpg, ...
    labels.csv + image dir   a CSV of file and label columns (files relative to the image dir)
    DIR/ with idx files      MNIST / FashionMNIST: *-images-idx3-ubyte[.gz] + *-labels-idx1-ubyte[.gz]

Every image becomes uint8 [C, H, W] at one configured size: EXIF orientation applied, converted to
gray (C=1) or RGB (C=3), resized with bilinear filtering (the aspect ratio is not kept). A file
Pillow cannot read is one DataError naming it, or, with skip_bad, left out and counted.
"""

from __future__ import annotations

import gzip
import io
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from torchkeep.data.io import read_table
from torchkeep.errors import DataError, MissingExtraError, StorageError
from torchkeep.storage import open_storage

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
FILE_COLUMNS = ("file", "filename", "file_name", "path", "image", "image_path")
LABEL_COLUMNS = ("label", "labels", "class", "target", "y")
IDX_IMAGES = "-images-idx3-ubyte"
IDX_LABELS = "-labels-idx1-ubyte"
PROGRESS_EVERY_S = 2.0


def pillow() -> Any:
    try:
        from PIL import Image, ImageOps
    except ImportError:
        raise MissingExtraError("pillow", "images") from None
    return Image, ImageOps


@dataclass
class RawImages:
    """Decoded images with their labels (None where the layout has none) and where each came from."""

    images: np.ndarray  # uint8 [N, C, H, W]
    labels: list[Any] | None
    files: list[str]
    skipped: list[str]  # files left out as unreadable (skip_bad only)


def decode_image(data: bytes | bytearray, *, size: tuple[int, int] | None, channels: int | None, name: str) -> np.ndarray:
    """One encoded image (PNG, JPEG, ...) -> uint8 [C, H, W]. size is (height, width); None keeps it."""
    Image, ImageOps = pillow()
    try:
        with Image.open(io.BytesIO(data)) as opened:
            image = ImageOps.exif_transpose(opened)  # phone photos store rotation in EXIF, not in pixels
            mode = {1: "L", 3: "RGB"}.get(channels or 0) or ("L" if image.mode in ("1", "L", "I;16", "I", "F") else "RGB")
            image = image.convert(mode)
            if size is not None and image.size != (size[1], size[0]):
                image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            array = np.asarray(image, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise DataError(f"{name}: not a readable image ({str(error).splitlines()[0][:160]})") from None
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def decode_all(read: Callable[[str], bytes], files: Sequence[str], *, size: tuple[int, int] | None, channels: int | None,
               skip_bad: bool = False, threads: int | None = None, report: Callable[[str], None] | None = None,
               where: Callable[[str], str] = str) -> tuple[np.ndarray, list[int], list[str]]:
    """Decode files in a thread pool (Pillow releases the GIL while it decodes and resizes).

    Returns (uint8 [N, C, H, W] of the readable ones, their positions in `files`, skipped files).
    Without size/channels, the first image fixes them and every other one is brought to them."""
    if not files:
        raise DataError("no image files found")

    def load(key: str) -> bytes:
        try:
            return read(key)
        except StorageError as error:  # a file named in a CSV that is not there, an unreadable object
            raise DataError(f"{where(key)}: cannot be read ({str(error)[:160]})") from None

    if size is None or channels is None:  # the first readable image decides
        for key in files:
            try:
                first = decode_image(load(key), size=size, channels=channels, name=where(key))
            except DataError:
                if not skip_bad:
                    raise
                continue
            size, channels = size or (first.shape[1], first.shape[2]), channels or first.shape[0]
            break
        else:
            raise DataError(f"none of the {len(files):,} image files could be read (first: {where(files[0])})")
    assert size is not None and channels is not None
    out = np.empty((len(files), channels, *size), dtype=np.uint8)
    ok = np.zeros(len(files), dtype=bool)
    skipped: list[str] = []

    def one(position: int) -> None:
        try:
            out[position] = decode_image(load(files[position]), size=size, channels=channels, name=where(files[position]))
            ok[position] = True
        except DataError:
            if not skip_bad:
                raise
            skipped.append(where(files[position]))

    workers = threads or min(8, (os.cpu_count() or 1) + 2)  # reads of s3:// objects wait on the network
    started = last = time.perf_counter()
    chunk = 256
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for begin in range(0, len(files), chunk):
            list(pool.map(one, range(begin, min(begin + chunk, len(files)))))
            now = time.perf_counter()
            if report is not None and now - last > PROGRESS_EVERY_S:
                done = min(begin + chunk, len(files))
                report(f"decoding images: {done:,}/{len(files):,} ({done / (now - started):,.0f}/s)")
                last = now
    kept = np.flatnonzero(ok)
    if not len(kept):
        raise DataError(f"none of the {len(files):,} image files could be read (first: {skipped[0]})")
    return (out if len(kept) == len(files) else out[kept]), kept.tolist(), sorted(skipped)


# -- layouts ------------------------------------------------------------------------------------


def _storage(uri: str) -> Any:
    return open_storage(uri)


def _join(root: str, key: str) -> str:
    return f"{root.rstrip('/')}/{key}"


def folder_files(root: str) -> tuple[list[str], list[str]]:
    """(files relative to root, class names) of an image folder: one sub-folder per class."""
    keys = sorted(k for k in _storage(root).list() if k.lower().endswith(IMAGE_SUFFIXES) and "/" in k)
    files = [k for k in keys if k.count("/") == 1]
    if not files:
        raise DataError(f"{root}: no images in class sub-folders (expected {root}/CLASS/IMAGE.png, ...)"
                        " and no parquet files (*.parquet)")
    return files, [k.split("/", 1)[0] for k in files]


def is_idx_folder(path: str) -> bool:
    return "://" not in path and os.path.isdir(path) and any(IDX_IMAGES in name for name in os.listdir(path))


def read_idx(path: str) -> np.ndarray:
    """One idx file (plain or .gz): the MNIST format, big-endian header, unsigned bytes."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as error:
        raise DataError(f"{path}: unreadable idx file ({error})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path}: not an idx file of unsigned bytes (magic {data[:4].hex()})")
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise DataError(f"{path}: header says {shape} ({int(np.prod(shape)):,} bytes) but {body.size:,} follow (truncated?)")
    return body.reshape(shape).copy()  # writable: torch refuses to share a read-only buffer safely


def write_idx(path: str, array: np.ndarray) -> None:
    """The inverse of read_idx (gzip when the name ends in .gz): for tests and for exporting splits."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wb") as handle:
        handle.write(header + array.tobytes())


def idx_pairs(folder: str) -> list[tuple[str, str | None]]:
    """(images file, labels file or None) per prefix: train-..., t10k-..."""
    names = sorted(os.listdir(folder))
    pairs = []
    for name in names:
        if IDX_IMAGES in name:
            prefix = name.split(IDX_IMAGES)[0]
            labels = [n for n in names if n.startswith(prefix + IDX_LABELS)]
            pairs.append((os.path.join(folder, name), os.path.join(folder, labels[0]) if labels else None))
    return pairs


def read_idx_folder(folder: str, *, which: str | None = None) -> tuple[np.ndarray, list[int] | None, list[str]]:
    """uint8 [N, 1, H, W] and labels from an idx folder. With several image files (train + t10k), the
    one whose name starts with `which` (default: "train", else the only one)."""
    pairs = idx_pairs(folder)
    if len(pairs) > 1:
        prefix = which or "train"
        chosen = [p for p in pairs if os.path.basename(p[0]).startswith(prefix)]
        if len(chosen) != 1:
            names = ", ".join(os.path.basename(p[0]) for p in pairs)
            raise DataError(f"{folder}: several idx image files ({names}); keep one per folder or name one starting with '{prefix}'")
        pairs = chosen
    images_file, labels_file = pairs[0]
    images = read_idx(images_file)
    if images.ndim != 3:
        raise DataError(f"{images_file}: expected [N, H, W] images, found shape {images.shape}")
    labels = None
    if labels_file is not None:
        label_array = read_idx(labels_file)
        if label_array.shape != (images.shape[0],):
            raise DataError(f"{labels_file}: {label_array.shape[0]:,} labels for {images.shape[0]:,} images")
        labels = label_array.astype(np.int64).tolist()
    return images[:, None], labels, [f"{images_file}[{i}]" for i in range(images.shape[0])]


def read_labels_csv(path: str, *, file_column: str | None, label_column: str | None,
                    need_labels: bool = True) -> tuple[list[str], list[Any] | None]:
    """(files, labels) from a CSV: columns named by the user, or the usual names, or the first two."""
    frame = read_table(path)
    lowered = {c.lower(): c for c in frame.columns}

    def pick(named: str | None, usual: tuple[str, ...], fallback: int | None, what: str, option: str) -> str | None:
        if named is not None:
            if named not in frame.columns:
                raise DataError(f"{path}: {what} column '{named}' not found; columns are: {', '.join(frame.columns)}")
            return named
        for name in usual:
            if name in lowered:
                return lowered[name]
        if fallback is not None and len(frame.columns) > fallback:
            return frame.columns[fallback]
        if need_labels or what == "file":
            raise DataError(f"{path}: no {what} column found; name it with {option}")
        return None

    files_name = pick(file_column, FILE_COLUMNS, 0, "file", "--file-column")
    label_name = pick(label_column, LABEL_COLUMNS, 1 if need_labels else None, "label", "--label-column")
    files = frame.get_column(files_name).cast(str).to_list()
    if any(f is None or f == "" for f in files):
        raise DataError(f"{path}: column '{files_name}' has empty file names")
    labels = frame.get_column(label_name).to_list() if label_name and label_name != files_name else None
    if labels is not None and any(v is None for v in labels):
        raise DataError(f"{path}: label column '{label_name}' has empty values")
    return files, labels


def list_images(data: str, *, image_dir: str | None = None, file_column: str | None = None,
                label_column: str | None = None, need_labels: bool = True) -> tuple[str, list[str], list[Any] | None]:
    """(root, files relative to root, labels) of a class-folder or CSV layout, without reading any image."""
    if image_dir is not None or data.lower().endswith((".csv", ".parquet")):
        files, labels = read_labels_csv(data, file_column=file_column, label_column=label_column, need_labels=need_labels)
        return (image_dir if image_dir is not None else data.rsplit("/", 1)[0] if "/" in data else "."), files, labels
    files, labels = folder_files(data)
    return data, files, labels


def read_images(data: str, *, image_dir: str | None = None, file_column: str | None = None, label_column: str | None = None,
                size: tuple[int, int] | None, channels: int | None, skip_bad: bool = False, need_labels: bool = True,
                report: Callable[[str], None] | None = None) -> RawImages:
    """Any of the three layouts (decided by what `data` is) -> RawImages."""
    if image_dir is None and is_idx_folder(data):
        images, labels, names = read_idx_folder(data)
        if need_labels and labels is None:
            raise DataError(f"{data}: idx images without a *{IDX_LABELS} file; labels are needed to train")
        if size is not None and tuple(images.shape[2:]) != tuple(size) or channels == 3:
            images = resize_arrays(images, size, channels)
        return RawImages(images=images, labels=labels, files=names, skipped=[])
    root, files, labels = list_images(data, image_dir=image_dir, file_column=file_column, label_column=label_column,
                                      need_labels=need_labels)
    storage = _storage(root)
    decoded, kept, skipped = decode_all(lambda key: storage.read(key), files, size=size, channels=channels,
                                        skip_bad=skip_bad, report=report, where=lambda key: _join(root, key))
    if labels is not None and len(kept) != len(labels):
        labels = [labels[i] for i in kept]
    return RawImages(images=decoded, labels=labels, files=[files[i] for i in kept], skipped=skipped)


def resize_arrays(images: np.ndarray, size: tuple[int, int] | None, channels: int | None) -> np.ndarray:
    """idx images (already decoded) brought to the configured size/channels with the same filter."""
    import torch

    tensor = torch.from_numpy(images).float()
    if size is not None and tuple(tensor.shape[2:]) != tuple(size):
        tensor = torch.nn.functional.interpolate(tensor, size=tuple(size), mode="bilinear", align_corners=False,
                                                 antialias=True)
    if channels == 3 and tensor.shape[1] == 1:
        tensor = tensor.expand(-1, 3, -1, -1)
    return tensor.round().clamp(0, 255).to(torch.uint8).numpy()
