"""Image data: the three layouts, Pillow decoding (gray/RGB, EXIF, resize), bad files, augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from torchkeep.data.image_io import decode_image, read_idx, read_images, write_idx
from torchkeep.data.images import AugmentingLoader, ImageSchema, augment
from torchkeep.data.loader import BatchLoader
from torchkeep.errors import DataError


def random_images(count: int, seed: int = 0, size: int = 6) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, size, size), dtype=np.uint8)


def write_folder(root: Path, images: np.ndarray, labels: list[str]) -> list[str]:
    """Class sub-folders of gray PNGs; the files relative to root, in sorted order."""
    files = []
    for index, (image, label) in enumerate(zip(images, labels)):
        (root / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / label / f"{index:03d}.png")
        files.append(f"{label}/{index:03d}.png")
    return files


def test_folder_and_csv_layouts_give_the_same_tensors(tmp_path: Path) -> None:
    images, labels = random_images(8), ["cat", "dog"] * 4
    files = write_folder(tmp_path / "folder", images, labels)
    csv = tmp_path / "labels.csv"
    csv.write_text("file,label\n" + "".join(f"{f},{f.split('/')[0]}\n" for f in sorted(files)))
    from_folder = read_images(str(tmp_path / "folder"), size=None, channels=None)
    from_csv = read_images(str(csv), image_dir=str(tmp_path / "folder"), size=None, channels=None)
    assert from_folder.images.shape == (8, 1, 6, 6)
    assert np.array_equal(from_folder.images, from_csv.images)
    assert from_folder.labels == from_csv.labels
    order = [files.index(f) for f in sorted(files)]
    assert np.array_equal(from_folder.images[:, 0], images[order])  # PNG is lossless: the very pixels


def test_images_on_s3_read_like_local_ones(tmp_path: Path, s3) -> None:
    bucket, client = s3.new_bucket(), s3.client()
    images, labels = random_images(4), ["a", "b", "b", "a"]
    files = write_folder(tmp_path, images, labels)
    for name in files:
        client.upload_file(str(tmp_path / name), bucket, f"photos/{name}")
    client.put_object(Bucket=bucket, Key="labels.csv",
                      Body=("path,class\n" + "".join(f"{f},{f[0]}\n" for f in sorted(files)) + "a/gone.png,a\n").encode())
    local = read_images(str(tmp_path), size=None, channels=None)
    from_folder = read_images(f"s3://{bucket}/photos", size=None, channels=None)
    assert np.array_equal(from_folder.images, local.images) and from_folder.labels == local.labels
    with pytest.raises(DataError, match=r"photos/a/gone\.png: cannot be read"):
        read_images(f"s3://{bucket}/labels.csv", image_dir=f"s3://{bucket}/photos", size=None, channels=None)
    from_csv = read_images(f"s3://{bucket}/labels.csv", image_dir=f"s3://{bucket}/photos", size=None, channels=None,
                           skip_bad=True)
    assert np.array_equal(from_csv.images, local.images) and len(from_csv.skipped) == 1


def test_csv_columns_are_found_by_name_or_named_by_the_user(tmp_path: Path) -> None:
    files = write_folder(tmp_path / "imgs", random_images(4), ["a", "b", "a", "b"])
    csv = tmp_path / "annotations.csv"
    csv.write_text("kind,name\n" + "".join(f"{f.split('/')[0]},{f}\n" for f in files))
    with pytest.raises(DataError, match="'image' not found"):
        read_images(str(csv), image_dir=str(tmp_path / "imgs"), file_column="image", size=None, channels=None)
    raw = read_images(str(csv), image_dir=str(tmp_path / "imgs"), file_column="name", label_column="kind",
                      size=None, channels=None)
    assert raw.labels == ["a", "b", "a", "b"]


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_files_round_trip(tmp_path: Path, suffix: str) -> None:
    images, labels = random_images(5, size=4), np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    write_idx(str(tmp_path / f"train-images-idx3-ubyte{suffix}"), images)
    write_idx(str(tmp_path / f"train-labels-idx1-ubyte{suffix}"), labels)
    assert np.array_equal(read_idx(str(tmp_path / f"train-images-idx3-ubyte{suffix}")), images)
    raw = read_images(str(tmp_path), size=None, channels=None)
    assert np.array_equal(raw.images[:, 0], images)
    assert raw.labels == [3, 1, 4, 1, 5]


def test_a_truncated_idx_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte"
    write_idx(str(path), random_images(3))
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError, match="train-images-idx3-ubyte: header says"):
        read_idx(str(path))


def test_a_corrupt_image_is_one_error_naming_it_or_skipped_and_counted(tmp_path: Path) -> None:
    write_folder(tmp_path, random_images(4), ["a", "b", "a", "b"])
    (tmp_path / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataError, match=r"b/broken\.png: not a readable image"):
        read_images(str(tmp_path), size=(6, 6), channels=1)
    raw = read_images(str(tmp_path), size=(6, 6), channels=1, skip_bad=True)
    assert len(raw.images) == len(raw.labels) == 4
    assert [Path(f).name for f in raw.skipped] == ["broken.png"]


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    pixels = np.zeros((2, 4), dtype=np.uint8)
    pixels[0, 0] = 255  # one bright corner: where it lands tells the rotation
    image = Image.fromarray(pixels)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "rotated.png"
    image.save(path, exif=exif)
    decoded = decode_image(path.read_bytes(), size=None, channels=1, name=str(path))
    assert decoded.shape == (1, 4, 2)
    assert np.array_equal(decoded[0], np.rot90(pixels, k=-1))


def test_rgb_and_gray_are_decoded_to_the_channels_asked_for(tmp_path: Path) -> None:
    rgb = np.zeros((3, 5, 3), dtype=np.uint8)
    rgb[..., 0] = 200  # red
    Image.fromarray(rgb).save(tmp_path / "red.png")
    data = (tmp_path / "red.png").read_bytes()
    as_rgb = decode_image(data, size=None, channels=None, name="red.png")
    assert as_rgb.shape == (3, 3, 5) and as_rgb[0].min() == 200 and as_rgb[1].max() == 0
    as_gray = decode_image(data, size=(6, 10), channels=1, name="red.png")
    assert as_gray.shape == (1, 6, 10) and 50 < as_gray.mean() < 70  # ITU-R 601 luma of red: 0.299 * 200


def test_schema_fits_statistics_on_training_images_and_round_trips() -> None:
    from torchkeep.data.image_io import RawImages

    images = random_images(10)[:, None]
    raw = RawImages(images=images, labels=[0, 1, 2, 0, 1, 2, 0, 1, 2, 0], files=[], skipped=[])
    schema = ImageSchema.fit(raw)
    assert schema.target is not None and schema.target.task == "multiclass" and schema.target.labels == [0, 1, 2]
    assert schema.mean[0] == pytest.approx(images.mean() / 255, rel=1e-5)
    again = ImageSchema.from_dict(schema.to_dict())
    tensors = again.transform(raw)
    assert tensors["image"].dtype == torch.uint8 and torch.equal(tensors["image"], torch.from_numpy(images))
    assert tensors["target"].tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
    predictions = again.decode(torch.tensor([[0.0, 5.0, 0.0]]))
    assert predictions["prediction"].to_list() == [1]


def test_augmentation_crops_and_flips_whole_batches_reproducibly() -> None:
    images = torch.arange(2 * 1 * 4 * 4, dtype=torch.uint8).reshape(2, 1, 4, 4)
    flipped = augment(images, torch.Generator().manual_seed(0), pad=0, flip=True)
    for original, out in zip(images, flipped):
        assert torch.equal(out, original) or torch.equal(out, original.flip(-1))
    cropped = augment(images, torch.Generator().manual_seed(1), pad=1, flip=False)
    padded = torch.nn.functional.pad(images, (1, 1, 1, 1))
    for index in range(2):  # every crop is some 4x4 window of the padded image
        windows = padded[index, 0].unfold(0, 4, 1).unfold(1, 4, 1).reshape(-1, 4, 4)
        assert any(torch.equal(cropped[index, 0], window) for window in windows)
    tensors = {"image": torch.randint(0, 255, (20, 1, 4, 4), dtype=torch.uint8), "target": torch.arange(20)}
    first = list(AugmentingLoader(BatchLoader(tensors, 8, seed=3), pad=1, flip=True))
    resumed_loader = AugmentingLoader(BatchLoader(tensors, 8, seed=3), pad=1, flip=True)
    resumed_loader.load_state_dict({"epoch": 0, "position": 1, "seed": 3, "num_rows": 20})
    resumed = list(resumed_loader)  # picks up at the second batch, with the same augmentation
    assert len(resumed) == 2
    for a, b in zip(first[1:], resumed):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["target"], b["target"])
