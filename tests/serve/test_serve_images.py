"""Serving an image model over real HTTP: base64 images in JSON and multipart uploads give what
`predict` gives on the same files; an undecodable image is a 422 naming the item."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

import torchkeep
from torchkeep.data.builtin import get_example


@pytest.fixture(scope="module")
def digits_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("serve-images") / "run"
    torchkeep.train(example="digits", epochs=1, run_dir=str(run_dir), quiet=True)
    return run_dir / "bundle"


@pytest.fixture(scope="module")
def png_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Six digits as PNG files, two of them upscaled to 16x16 (the server resizes them back to 8x8)."""
    folder = tmp_path_factory.mktemp("pngs")
    with np.load(get_example("digits").path) as arrays:
        images = arrays["images"][1750:1756]
    paths = []
    for index, image in enumerate(images):
        picture = Image.fromarray(image)
        if index % 3 == 0:
            picture = picture.resize((16, 16), Image.Resampling.NEAREST)
        paths.append(folder / "x" / f"{index}.png")
        paths[-1].parent.mkdir(exist_ok=True)
        picture.save(paths[-1])
    return paths


def expected(bundle: Path, files: list[Path]) -> list[dict]:
    frame = torchkeep.load(str(bundle)).predict(str(files[0].parent.parent))  # the folder layout: x/0.png, ...
    return [{"prediction": row["prediction"], "probabilities": {k.removeprefix("probability_"): v for k, v in row.items()
                                                               if k.startswith("probability_")}}
            for row in frame.sort("file").to_dicts()]


def test_base64_json_and_multipart_equal_predict(start_server, digits_bundle, png_files):
    server = start_server(digits_bundle)
    want = expected(digits_bundle, png_files)
    as_json = server.post({"rows": [{"image": base64.b64encode(p.read_bytes()).decode()} for p in png_files]})
    uploads = [("files", (p.name, p.read_bytes(), "image/png")) for p in png_files]
    as_upload = requests.post(f"{server.url}/predict", files=uploads, timeout=30)
    assert as_json.status_code == 200, as_json.text
    assert as_upload.status_code == 200, as_upload.text
    for got in (as_json.json()["predictions"], as_upload.json()["predictions"]):
        assert [g["prediction"] for g in got] == [w["prediction"] for w in want]
        for g, w in zip(got, want):
            assert g["probabilities"].keys() == w["probabilities"].keys()
            assert all(abs(g["probabilities"][k] - w["probabilities"][k]) < 1e-5 for k in w["probabilities"])
    metadata = requests.get(f"{server.url}/metadata", timeout=10).json()
    assert metadata["input"]["image"]["resized_to"] == [8, 8]


def test_an_undecodable_image_is_a_422_naming_the_item(start_server, digits_bundle, png_files):
    server = start_server(digits_bundle)
    good = base64.b64encode(png_files[0].read_bytes()).decode()
    broken = base64.b64encode(b"\x89PNG\r\n\x1a\n garbage").decode()
    answer = server.post({"rows": [{"image": good}, {"image": broken}]})
    assert answer.status_code == 422
    assert answer.json()["error"]["field"] == "rows[1].image"
    assert "not a readable image" in answer.json()["error"]["message"]
    not_base64 = server.post({"rows": [{"image": "%%%"}]})
    assert not_base64.status_code == 422 and not_base64.json()["error"]["field"] == "rows[0].image"
    upload = requests.post(f"{server.url}/predict", files=[("files", ("bad.jpg", b"nope", "image/jpeg"))], timeout=30)
    assert upload.status_code == 422 and upload.json()["error"]["field"] == "files[0] (bad.jpg)"
    assert server.post({"rows": [{"image": good}]}).status_code == 200  # the server is fine afterwards
