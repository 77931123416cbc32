"""Images as a user's photos come: the built-in digits re-encoded as RGB JPEG files of another size, in
class folders. Training on the folder learns them, and `predict`, the bundle and the server decode a
JPEG into the very pixels training saw."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import torchkeep
from torchkeep.data.builtin import get_example
from torchkeep.data.image_io import read_images

SIDE = 20  # not the built-in 8x8


def write_jpegs(root: Path, start: int, stop: int) -> None:
    """Digits start..stop upscaled to SIDE x SIDE, RGB, JPEG quality 90, in class folders."""
    with np.load(get_example("digits").path) as arrays:
        images, labels = arrays["images"][start:stop], arrays["labels"][start:stop]
    for index, (image, label) in enumerate(zip(images, labels), start=start):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        picture = Image.fromarray(image).resize((SIDE, SIDE), Image.Resampling.BILINEAR).convert("RGB")
        picture.save(root / str(label) / f"{index:04d}.jpg", quality=90)


@pytest.fixture(scope="module")
def jpeg_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("rgb-jpegs")
    write_jpegs(folder / "train", 0, 600)
    write_jpegs(folder / "test", 1600, 1797)
    # the default settings but the epochs, which keep the test within seconds
    torchkeep.train(str(folder / "train"), run_dir=str(folder / "run"), epochs=8, threads=1, quiet=True)
    return folder, folder / "run"


def test_rgb_jpegs_of_another_size_train_to_a_sane_accuracy(jpeg_run):
    folder, run = jpeg_run
    schema = json.loads((run / "schema.json").read_text())
    assert (schema["channels"], schema["height"], schema["width"]) == (3, SIDE, SIDE)  # the files' own size, RGB
    assert json.loads((run / "model.json").read_text())["args"]["widths"] == [32, 64, 128]  # 20 -> 10 -> 5 -> 2
    assert torchkeep.load(str(run)).evaluate(str(folder / "test"))["accuracy"] >= 0.9


def test_predict_the_bundle_and_the_server_see_the_pixels_training_saw(start_server, jpeg_run):
    folder, run = jpeg_run
    files = sorted((folder / "test").glob("*/*.jpg"))[:12]
    decoded = read_images(str(folder / "test"), size=None, channels=None)
    bundle = torchkeep.load(str(run / "bundle"))
    for index, path in enumerate(files):  # the bundle's decode (the server's) is the training reader's
        assert np.array_equal(bundle.schema.decode_bytes(path.read_bytes(), path.name),
                              decoded.images[decoded.files.index(f"{path.parent.name}/{path.name}")])
    frame = torchkeep.load(str(run)).predict(str(folder / "test"))
    want = {row["file"].rsplit("/", 2)[-2] + "/" + row["file"].rsplit("/", 1)[-1]: row["prediction"]
            for row in frame.to_dicts()}
    server = start_server(run / "bundle")
    answer = server.post({"rows": [{"image": base64.b64encode(p.read_bytes()).decode()} for p in files]})
    assert answer.status_code == 200, answer.text
    got = [row["prediction"] for row in answer.json()["predictions"]]
    assert got == [want[f"{p.parent.name}/{p.name}"] for p in files]
