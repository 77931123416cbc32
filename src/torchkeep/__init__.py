"""torchkeep: train, keep and serve PyTorch models; tables first."""

from torchkeep.version import __version__
from torchkeep.api import (ModelRun, Predictor, RunResult, StudyConfig, StudyResult, TensorPredictor, fit, load, train,
                           tune)
from torchkeep.checkpoint import Checkpointer, Restored
from torchkeep.config import CheckpointConfig, DataConfig, RunConfig, load_toml
from torchkeep.data import BatchLoader, DatasetLoader, TableSchema
from torchkeep.errors import CheckpointError, ConfigError, DataError, StorageError, TorchkeepError
from torchkeep.models import EntityEmbeddingMLP, TabularModelConfig
from torchkeep.training.loop import FitResult, TrainConfig, evaluate
from torchkeep.training.optim import OptimConfig
from torchkeep import deprecated

__all__ = [
    "BatchLoader", "CheckpointConfig", "CheckpointError", "Checkpointer", "ConfigError", "DataConfig",
    "DataError", "DatasetLoader", "EntityEmbeddingMLP", "FitResult", "ModelRun", "OptimConfig", "Predictor",
    "Restored", "RunConfig", "RunResult", "StorageError", "StudyConfig", "StudyResult", "TableSchema",
    "TabularModelConfig", "TensorPredictor", "TorchkeepError", "TrainConfig", "evaluate", "fit", "load", "load_toml", "train",
    "tune",
]

deprecated.install()  # old module paths (torchkeep.train.loop, ...) for one release, with a DeprecationWarning
