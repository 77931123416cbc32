"""A device the machine lacks is a one-line error before a run writes anything."""

from __future__ import annotations

import pytest
import torch

from torchkeep import TrainConfig
from torchkeep.errors import ConfigError
from torchkeep.training.loop import check_device

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")


def test_an_unknown_device_name_is_refused():
    with pytest.raises(ConfigError, match="device must be auto, cpu, cuda, cuda:N or mps"):
        TrainConfig(device="gpu")
    assert TrainConfig(device="cpu").device == "cpu" and TrainConfig().device == "auto"


@no_cuda
def test_cuda_without_a_gpu_stops_the_cli_before_a_run_directory_exists(torchkeep, tmp_path):
    assert TrainConfig(device="cuda:0").device == "cuda:0"  # a saved config of a GPU run still loads here
    with pytest.raises(ConfigError, match="sees no CUDA GPU"):
        check_device("cuda:0")
    result = torchkeep("train", "--example", "flights", "--device", "cuda", "--run-dir", "run", cwd=tmp_path)
    assert result.returncode == 2
    *warnings, error = result.stderr.strip().splitlines()  # the data's warnings (rare levels merged), then one error
    assert error == f"error: device cuda: this torch sees no CUDA GPU (torch {torch.__version__}); use --device cpu, or auto"
    assert all(line.startswith("warning: ") for line in warnings)
    assert not (tmp_path / "run").exists()


@no_cuda
def test_own_model_and_image_runs_check_the_device_before_writing(tmp_path):
    import torchkeep

    x, y = torch.randn(64, 3), torch.randn(64)
    with pytest.raises(ConfigError, match="sees no CUDA GPU"):
        torchkeep.fit(torch.nn.Linear(3, 1), (x, y), run_dir=str(tmp_path / "own"), device="cuda", loss="mse", quiet=True)
    with pytest.raises(ConfigError, match="sees no CUDA GPU"):
        torchkeep.train(example="digits", run_dir=str(tmp_path / "digits"), device="cuda", quiet=True)
    assert not (tmp_path / "own" / "config.json").exists() and not (tmp_path / "digits").exists()


@no_cuda
def test_load_predict_and_serve_take_a_device_and_refuse_one_the_machine_lacks(torchkeep, tmp_path):
    import torchkeep as api

    api.train(example="flights", epochs=1, run_dir=str(tmp_path / "run"), quiet=True)
    predictor = api.load(str(tmp_path / "run"), device="cpu")
    assert predictor.device == torch.device("cpu")
    with pytest.raises(ConfigError, match="sees no CUDA GPU"):
        api.load(str(tmp_path / "run"), device="cuda")
    for command in (("predict", "run", "--data", "x.csv", "--out", "p.csv"), ("evaluate", "run", "--data", "x.csv"),
                    ("serve", "run")):
        result = torchkeep(*command, "--device", "cuda", cwd=tmp_path)
        assert result.returncode == 2 and "sees no CUDA GPU" in result.stderr, (command, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
