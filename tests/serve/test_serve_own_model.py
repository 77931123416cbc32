"""`torchkeep serve` for a model trained with `torchkeep.fit`, over real HTTP: JSON tensors in, the
same outputs as `torchkeep.load(...).predict` out; a wrong number, shape or name is a 422 naming it.

The models are the ones tests/custom trains (own_models.py); the server process imports them from
there, as a user's server imports the user's module.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import torch

CUSTOM = Path(__file__).parents[1] / "custom"
sys.path.insert(0, str(CUSTOM))
from own_models import PairDataset, PairInput, SmallImageNet, TwoInputs, blobs

import torchkeep

SETTINGS = {"epochs": 1, "batch_size": 32, "seed": 1, "quiet": True}


@pytest.fixture(scope="module", autouse=True)
def models_importable() -> Iterator[None]:
    """Servers started in this module find own_models.py, as a user's server finds the user's module."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(CUSTOM)) if p))
        yield


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three runs: model(input) with cross-entropy, model(pixels=, hour=), and one with a callable loss (no task)."""
    root = tmp_path_factory.mktemp("own-serve")
    torch.manual_seed(0)
    torchkeep.fit(SmallImageNet(), blobs(200, seed=0), run_dir=str(root / "image"), **SETTINGS)
    images, labels = blobs(200, seed=1)
    hours = torch.randint(0, 24, (200,), generator=torch.Generator().manual_seed(2))
    torchkeep.fit(TwoInputs(), {"pixels": images, "hour": hours, "target": labels}, run_dir=str(root / "two"),
                  **SETTINGS)
    torchkeep.fit(SmallImageNet(), blobs(200, seed=3), run_dir=str(root / "callable"), metrics=None,
                  loss=torch.nn.CrossEntropyLoss(), **SETTINGS)
    return {"image": root / "image", "two": root / "two", "callable": root / "callable"}


@pytest.fixture(scope="module")
def image_server(start_server, runs):
    return start_server(runs["image"] / "bundle", "--max-rows", "20")


@pytest.fixture(scope="module")
def two_server(start_server, runs):
    return start_server(runs["two"])


def predicted(run: Path, inputs) -> torch.Tensor:
    """What the Python API gives, on one torch thread like the server."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return torchkeep.load(str(run)).predict(inputs)
    finally:
        torch.set_num_threads(threads)


def test_outputs_and_predictions_equal_the_python_api(image_server, runs):
    images = blobs(7, seed=5)[0]
    response = image_server.post({"inputs": images.tolist()})
    assert response.status_code == 200, response.text
    body = response.json()
    expected = predicted(runs["image"], images)
    assert torch.equal(torch.tensor(body["outputs"], dtype=torch.float32), expected)
    assert [p["prediction"] for p in body["predictions"]] == expected.argmax(dim=1).tolist()
    probabilities = torch.tensor([[p["probabilities"][str(i)] for i in range(3)] for p in body["predictions"]],
                                 dtype=torch.float64)
    torch.testing.assert_close(probabilities, torch.softmax(expected.double(), dim=1))


def test_named_inputs_equal_the_python_api(two_server, runs):
    images = blobs(5, seed=6)[0]
    hours = torch.tensor([0, 5, 23, 12, 7])
    response = two_server.post({"inputs": {"pixels": images.tolist(), "hour": hours.tolist()}})
    assert response.status_code == 200, response.text
    expected = predicted(runs["two"], {"pixels": images, "hour": hours})
    assert torch.equal(torch.tensor(response.json()["outputs"], dtype=torch.float32), expected)


def test_requests_batched_together_each_get_their_own_rows(image_server, runs):
    bodies = [blobs(rows, seed=10 + rows)[0] for rows in (1, 3, 2, 5, 1, 4, 2, 3)]
    answers: list[requests.Response | None] = [None] * len(bodies)

    def send(index: int) -> None:
        answers[index] = image_server.post({"inputs": bodies[index].tolist()})

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for images, answer in zip(bodies, answers):
        assert answer is not None and answer.status_code == 200, answer and answer.text
        # batched with other requests the model sees other batch sizes: equal up to float rounding
        torch.testing.assert_close(torch.tensor(answer.json()["outputs"]), predicted(runs["image"], images))


def _row(values: list[float]) -> list[list[list[float]]]:
    """One [1, 4, 4] row whose first line of pixels is `values`."""
    return [[values, [0.0] * 4, [0.0] * 4, [0.0] * 4]]


GOOD = _row([0.1, 0.2, 0.3, 0.4])


@pytest.mark.parametrize(("body", "field", "message"), [
    ({"inputs": [GOOD, GOOD, _row([0.1, 0.2, 0.3])]}, "inputs[2][0][0]", "expected 4 numbers, got 3"),
    ({"inputs": [[0.0] * 16]}, "inputs[0]", "expected 1 list of 4 lists of 4 numbers, got 16"),
    ({"inputs": [GOOD, _row([0.1, "0.2", 0.3, 0.4])]}, "inputs[1][0][0][1]", "expected a number, got '0.2'"),
    ({"inputs": [_row([0.1, True, 0.3, 0.4])]}, "inputs[0][0][0][1]", "expected a number, got true"),
    ({"inputs": [_row([0.1, None, 0.3, 0.4])]}, "inputs[0][0][0][1]", "expected a number, got null"),
    ({"inputs": [_row([1e39, 0.0, 0.3, 0.4])]}, "inputs[0][0][0][0]", "expected a number within the float32 range, got 1e+39"),
    ({"inputs": [GOOD, 0.5]}, "inputs[1]", "expected a list of 1 list of 4 lists of 4 numbers, got 0.5"),
    ({"inputs": []}, "inputs", "expected at least one row"),
    ({"inputs": GOOD[0][0]}, "inputs[0]", "expected a list of 1 list of 4 lists of 4 numbers, got 0.1"),
    ({"rows": [GOOD]}, "body", 'expected a JSON object {"inputs": [row, ...] with each row a list of 1 list of 4 lists'),
])
def test_a_bad_request_is_a_422_naming_the_field(image_server, body, field, message):
    response = image_server.post(body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == field
    assert error["message"].startswith(message)


def test_more_rows_than_the_limit_is_413(image_server):
    response = image_server.post({"inputs": [GOOD] * 21})
    assert response.status_code == 413
    assert response.json()["error"] == {"field": "inputs", "message": "21 rows; at most 20 per request"}
    assert image_server.post({"inputs": [GOOD] * 20}).status_code == 200


@pytest.mark.parametrize(("inputs", "field", "message"), [
    ({"pixels": [GOOD]}, "inputs.hour", "missing (the model takes pixels, hour)"),
    ({"pixels": [GOOD], "hour": [2.5]}, "inputs.hour[0]", "expected an integer, got 2.5"),
    ({"pixels": [GOOD], "hour": [2**63]}, "inputs.hour[0]", "expected an integer in [-9223372036854775808, 9223372036854775807]"),
    ({"pixels": [GOOD, GOOD], "hour": [3]}, "inputs.hour", "1 row, but inputs.pixels has 2; every input needs one entry per row"),
    ({"pixels": [GOOD], "hour": [[3]]}, "inputs.hour[0]", "expected an integer, got a list of 1"),
    ([GOOD], "inputs", "expected an object of named inputs"),
])
def test_named_inputs_are_checked_by_name(two_server, inputs, field, message):
    response = two_server.post({"inputs": inputs})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field
    assert response.json()["error"]["message"].startswith(message)


def test_metadata_and_openapi_describe_the_inputs(two_server):
    assert requests.get(f"{two_server.url}/health", timeout=10).json()["status"] == "ok"
    meta = requests.get(f"{two_server.url}/metadata", timeout=10).json()
    assert meta["kind"] == "tensors" and meta["task"] == "multiclass" and meta["model"] == "own_models:TwoInputs"
    assert meta["inputs"] == [
        {"name": "pixels", "dtype": "float32", "shape": ["batch", 1, 4, 4], "row": "a list of 1 list of 4 lists of 4 numbers"},
        {"name": "hour", "dtype": "int64", "shape": ["batch"], "row": "an integer"},
    ]
    assert meta["request_schema"]["required"] == ["inputs"]
    assert meta["request_schema"]["properties"]["inputs"]["required"] == ["pixels", "hour"]
    openapi = requests.get(f"{two_server.url}/openapi.json", timeout=10).json()
    body = openapi["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == meta["request_schema"]
    hour = body["properties"]["inputs"]["properties"]["hour"]
    assert hour == {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 1000}


def test_a_run_without_a_task_answers_outputs_only(start_server, runs):
    server = start_server(runs["callable"])
    images = blobs(3, seed=8)[0]
    body = server.post({"inputs": images.tolist()}).json()
    assert set(body) == {"outputs"}
    assert torch.equal(torch.tensor(body["outputs"], dtype=torch.float32), predicted(runs["callable"], images))


@pytest.mark.filterwarnings("ignore:'set_vital' is deprecated")  # torchdata on torch 2.13 (a Dataset's loader)
def test_a_model_without_tensor_inputs_is_refused_at_start_in_one_line(start_server, tmp_path):
    torchkeep.fit(PairInput(), PairDataset(), run_dir=str(tmp_path / "pair"), **SETTINGS)
    server = start_server(tmp_path / "pair", wait=False)
    server.process.wait(timeout=120)  # it exits by itself
    status, _, stderr = server.stop()
    assert status == 2
    assert stderr == (f"error: {tmp_path / 'pair'}: cannot serve this model: its training inputs were not one tensor or a"
                      " dict of tensors, so there is no input to check requests against; call torchkeep.load(...).model"
                      " from code of your own\n")
