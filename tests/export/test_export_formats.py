"""`torchkeep export`: every format round trip, parity on real rows, and the class-free formats loaded
by a process that cannot import torchkeep."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

import torchkeep
from torchkeep.cli import main
from torchkeep.cli.export import FORMAT_NAMES as CLI_FORMAT_NAMES
from torchkeep.data.builtin import get_example
from torchkeep.data.io import read_table
from torchkeep.errors import CheckpointError
from torchkeep.export.exporter import FORMAT_NAMES
from torchkeep.export.formats import FORMATS
from torchkeep.export.parity import TOLERANCE, check_parity, parity_data
from torchkeep.models import EntityEmbeddingMLP

CLASS_FREE = ["state-dict", "torchscript", "pt2", "onnx"]

# Loads an export with nothing but torch (and onnxruntime) and prints how far its outputs are from
# the eager model's, on all rows, on one row and on seven (the batch dimension is dynamic).
LOAD_AND_COMPARE = """
import json
import torch
export_format, path = sys.argv[1], sys.argv[2]
eager = torch.load("eager.pt", weights_only=True)
categorical, continuous, expected = eager["categorical"], eager["continuous"], eager["output"]
if export_format == "state-dict":
    state = torch.load(path, weights_only=True)
    saved = {k.removeprefix("state."): v for k, v in eager.items() if k.startswith("state.")}
    assert state.keys() == saved.keys(), (sorted(state), sorted(saved))
    assert all(torch.equal(state[k], saved[k]) for k in state), "weights differ"
    print(json.dumps({"max_abs_diff": 0.0}))
    raise SystemExit(0)
if export_format == "torchscript":
    run = torch.jit.load(path)
elif export_format == "pt2":
    run = torch.export.load(path).module()
else:
    import onnxruntime
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    run = lambda c, x: torch.from_numpy(session.run(None, {"categorical": c.numpy(), "continuous": x.numpy()})[0])
diffs = []
with torch.no_grad():
    for rows in (len(expected), 1, 7):
        found = run(categorical[:rows], continuous[:rows])
        assert found.shape == expected[:rows].shape, (found.shape, expected[:rows].shape)
        diffs.append((found - expected[:rows]).abs().max().item())
print(json.dumps({"max_abs_diff": max(diffs)}))
"""


def export(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    status = main(["export", *map(str, args)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def printed_parity(stdout: str) -> float:
    match = re.search(r"parity: max abs diff (\S+) vs the eager model on ([\d,]+) rows", stdout)
    assert match, stdout
    return float(match.group(1))


def test_the_cli_offers_every_format() -> None:
    assert CLI_FORMAT_NAMES == FORMAT_NAMES == ("bundle", *FORMATS)


@pytest.mark.parametrize("export_format", CLASS_FREE)
def test_class_free_export_runs_without_torchkeep(tiny_run, without_torchkeep, capsys, tmp_path: Path,
                                                  export_format: str) -> None:
    out = tmp_path / export_format
    status, stdout, stderr = export(capsys, tiny_run.run_dir, "--format", export_format, "--out", out)
    assert status == 0, stderr
    assert printed_parity(stdout) <= TOLERANCE  # against the run's own training rows (config.json)
    model_file = out / FORMATS[export_format].file_name
    assert model_file.is_file()

    # Next to the file: what other languages need to encode rows.
    assert json.loads((out / "schema.json").read_text()) == json.loads((tiny_run.run_dir / "schema.json").read_text())
    spec = json.loads((out / "inputs.json").read_text())
    eager = torch.load(tiny_run.eager, weights_only=True)
    assert [(i["name"], i["dtype"], i["shape"]) for i in spec["inputs"]] == [
        ("categorical", "int64", ["batch", eager["categorical"].shape[1]]),
        ("continuous", "float32", ["batch", eager["continuous"].shape[1]]),
    ]
    schema = json.loads((out / "schema.json").read_text())
    expected = []
    for column in schema["continuous"]:  # the scaled value, its piecewise-linear bins, its missing indicator
        expected += [column["name"]] + [f"{column['name']} bin {t}" for t in range(len(column["edges"] or [1]) - 1)]
        expected += [f"{column['name']} is null"] if column["missing_indicator"] else []
    assert [c["name"] for c in spec["inputs"][1]["columns"]] == expected
    assert [c["name"] for c in schema["continuous"]] == ["distance", "dep_delay", "temperature"]
    assert all(c["scaling"] == "robust" and len(c["edges"]) > 3 for c in schema["continuous"])
    assert spec["output"]["shape"] == ["batch"] and spec["output"]["meaning"].startswith("logit of late = true")
    assert spec["parity"]["max_abs_diff"] <= TOLERANCE
    assert model_file.name in (out / "README.txt").read_text()

    loaded = without_torchkeep(LOAD_AND_COMPARE, export_format, model_file, cwd=tiny_run.eager.parent)
    assert loaded.returncode == 0, loaded.stderr
    assert json.loads(loaded.stdout.splitlines()[-1])["max_abs_diff"] <= TOLERANCE


def test_state_dict_loads_into_the_model_class(tiny_run, capsys, tmp_path: Path) -> None:
    assert export(capsys, tiny_run.run_dir, "--format", "state-dict", "--out", tmp_path / "weights.pth")[0] == 0
    args = json.loads((tmp_path / "inputs.json").read_text())["model"]["args"]
    model = EntityEmbeddingMLP(**args)
    model.load_state_dict(torch.load(tmp_path / "weights.pth", weights_only=True))
    eager = torch.load(tiny_run.eager, weights_only=True)
    with torch.no_grad():
        assert torch.equal(model.eval()(eager["categorical"], eager["continuous"]), eager["output"])


def test_out_ending_in_the_suffix_names_the_file(tiny_run, capsys, tmp_path: Path) -> None:
    status, stdout, _ = export(capsys, tiny_run.run_dir, "--format", "torchscript", "--out", tmp_path / "m" / "flights.pt")
    assert status == 0
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["README.txt", "flights.pt", "inputs.json", "schema.json"]
    assert f"exported torchscript: {tmp_path / 'm' / 'flights.pt'}" in stdout


def test_bundle_round_trip_predicts_like_the_run(tiny_run, capsys, tmp_path: Path) -> None:
    status, stdout, stderr = export(capsys, tiny_run.run_dir, "--format", "bundle", "--out", tmp_path / "bundle")
    assert status == 0, stderr
    assert printed_parity(stdout) == 0.0
    frame = read_table(str(tiny_run.data))
    assert torchkeep.load(str(tmp_path / "bundle")).predict(frame).equals(torchkeep.load(str(tiny_run.run_dir)).predict(frame))

    # A bundle away from its run does not know its data: the parity check asks for rows.
    status, _, stderr = export(capsys, tmp_path / "bundle", "--format", "pt2", "--out", tmp_path / "pt2")
    assert status == 2 and "--data" in stderr and len(stderr.strip().splitlines()) == 1
    status, stdout, stderr = export(capsys, tmp_path / "bundle", "--format", "pt2", "--out", tmp_path / "pt2",
                                    "--data", tiny_run.data)
    assert status == 0, stderr
    assert printed_parity(stdout) <= TOLERANCE


def test_parity_rows_come_from_the_run(tiny_run, tmp_path: Path) -> None:
    assert parity_data(str(tiny_run.run_dir), None) == str(tiny_run.data)
    assert parity_data(str(tiny_run.run_dir / "bundle"), None) == str(tiny_run.data)  # a run's own bundle
    assert parity_data(str(tiny_run.run_dir), "other.csv") == "other.csv"
    example_run = tmp_path / "example-run"
    example_run.mkdir()
    (example_run / "config.json").write_text(json.dumps({"data": {"path": None, "example": "flights"}}))
    assert parity_data(str(example_run), None) == get_example("flights").path


def test_parity_failure_reports_the_measured_difference(tiny_run) -> None:
    model = torchkeep.load(str(tiny_run.run_dir)).model
    eager = torch.load(tiny_run.eager, weights_only=True)
    inputs = {"categorical": eager["categorical"], "continuous": eager["continuous"]}
    assert check_parity(model, model, inputs, what="same", data="rows").max_abs_diff == 0.0
    with pytest.raises(CheckpointError, match=r"onnx export: parity check failed: max abs diff 0\.001 .* on 300 rows"):
        check_parity(model, lambda c, x: model(c, x) + 1e-3, inputs, what="onnx export", data="rows")
    with pytest.raises(CheckpointError, match=r"output shape \(300, 1\)"):
        check_parity(model, lambda c, x: model(c, x)[:, None], inputs, what="pt2 export", data="rows")


@pytest.mark.parametrize("export_format", ["pt2", "onnx"])
def test_dynamic_batch_without_categorical_columns_and_with_classes(export_format: str) -> None:
    """All-continuous tables and multiclass outputs: [N, 0] categorical input, [N, classes] output."""
    torch.manual_seed(0)
    model = EntityEmbeddingMLP(cardinalities=[], embedding_dims=[], n_continuous=3, out_features=4, hidden_sizes=[8]).eval()
    categorical, continuous = torch.zeros(6, 0, dtype=torch.int64), torch.randn(6, 3)
    export_format_ = FORMATS[export_format]
    runner = export_format_.load(export_format_.serialize(model, (categorical[:2], continuous[:2])), lambda: model)
    for rows in (6, 1):
        with torch.no_grad():
            expected = model(categorical[:rows], continuous[:rows])
        found = runner(categorical[:rows], continuous[:rows])
        assert found.shape == (rows, 4)
        assert (found - expected).abs().max().item() <= TOLERANCE


def test_export_to_s3(tiny_run, s3, capsys) -> None:
    bucket = s3.new_bucket()
    status, _, stderr = export(capsys, tiny_run.run_dir, "--format", "bundle", "--out", f"s3://{bucket}/flights/v1")
    assert status == 0, stderr
    frame = read_table(str(tiny_run.data))
    from_s3 = torchkeep.load(f"s3://{bucket}/flights/v1").predict(frame)
    assert from_s3.equals(torchkeep.load(str(tiny_run.run_dir)).predict(frame))

    status, stdout, stderr = export(capsys, tiny_run.run_dir, "--format", "state-dict", "--out", f"s3://{bucket}/sd/model.pth")
    assert status == 0, stderr
    keys = {o["Key"] for o in s3.client().list_objects_v2(Bucket=bucket, Prefix="sd/")["Contents"]}
    assert keys == {"sd/model.pth", "sd/schema.json", "sd/inputs.json", "sd/README.txt"}


def test_the_numeric_encoding_can_be_written_from_schema_json_alone(tiny_run) -> None:
    """What inputs.json tells another language to do (robust scaling, smooth clip, bins) gives the tensors."""
    import numpy as np

    schema = json.loads((tiny_run.run_dir / "schema.json").read_text())
    frame = read_table(str(tiny_run.data))
    columns = []
    for c in schema["continuous"]:
        raw = frame.get_column(c["name"]).cast(float).to_numpy()
        missing = np.isnan(raw)
        x = np.where(missing, c["median"], raw)
        z = (x - c["center"]) / c["scale"]
        columns.append(z / np.sqrt(1 + (z / 3) ** 2))
        edges = c["edges"]
        for low, high in zip(edges, edges[1:]):
            columns.append(np.clip((x - low) / (high - low), 0, 1))
        if c["missing_indicator"]:
            columns.append(missing.astype(float))
    eager = torch.load(tiny_run.eager, weights_only=True)
    assert np.allclose(np.stack(columns, axis=1), eager["continuous"].numpy(), atol=1e-6)


@pytest.mark.parametrize("export_format", ["torchscript", "pt2", "onnx"])
def test_an_exported_file_loads_as_a_predictor_like_its_run(tiny_run, capsys, tmp_path: Path, export_format: str) -> None:
    out = tmp_path / export_format
    status, _, stderr = export(capsys, tiny_run.run_dir, "--format", export_format, "--out", out)
    assert status == 0, stderr
    (path,) = [p for p in out.iterdir() if p.name.startswith("model.")]
    frame = read_table(str(tiny_run.data))
    expected = torchkeep.load(str(tiny_run.run_dir)).predict(frame)
    found = torchkeep.load(str(path)).predict(frame)
    assert found.columns == expected.columns
    assert found["prediction"].equals(expected["prediction"])
    assert (found["probability_True"] - expected["probability_True"]).abs().max() <= TOLERANCE
    # the CLI's predict takes the file as it takes a run
    assert main(["predict", str(path), "--data", str(tiny_run.data), "--out", str(tmp_path / "p.csv")]) == 0
    capsys.readouterr()


def test_an_exported_file_without_its_schema_is_refused_in_one_line(tiny_run, capsys, tmp_path: Path) -> None:
    out = tmp_path / "pt2"
    assert export(capsys, tiny_run.run_dir, "--format", "pt2", "--out", out)[0] == 0
    (out / "schema.json").unlink()
    with pytest.raises(CheckpointError, match=r"model.pt2: schema.json not found beside it"):
        torchkeep.load(str(out / "model.pt2"))
