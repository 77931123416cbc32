"""A device the machine lacks is a one-line error before a run writes anything."""

from __future__ import annotations

import pytest
import torch

from torchkeep import TrainConfig
from torchkeep.errors import ConfigError

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")


def test_an_unknown_device_name_is_refused():
    with pytest.raises(ConfigError, match="device must be auto, cpu, cuda, cuda:N or mps"):
        TrainConfig(device="gpu")
    assert TrainConfig(device="cpu").device == "cpu" and TrainConfig().device == "auto"


@no_cuda
def test_cuda_without_a_gpu_stops_the_cli_before_a_run_directory_exists(torchkeep, tmp_path):
    with pytest.raises(ConfigError, match="sees no CUDA GPU"):
        TrainConfig(device="cuda:0")
    result = torchkeep("train", "--example", "flights", "--device", "cuda", "--run-dir", "run", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: device cuda: this torch sees no CUDA GPU (torch {torch.__version__}); use --device cpu, or auto"
    assert not (tmp_path / "run").exists()
