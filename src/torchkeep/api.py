"""The Python API that the CLI mirrors, in one place: what `import torchkeep` gives.

    train(data, target=..., **settings)   start a run of a table, text or images; train(resume=RUN) continues one
    tune(data, target=..., trials=N, ...)  search hyperparameters on Ray Tune with ASHA, each trial a run
    fit(model, train_data, ...)           train your own nn.Module with the same run directory, checkpoints, bundle
    load(path)                            the predictor of a run or bundle: Predictor, or TensorPredictor for fit's models
    Predictor.predict / .evaluate         raw rows or images in, labels or original units out
    TensorPredictor.predict / .evaluate   tensors in, the model's outputs out

Where the work is done: run/ (the run lifecycle: run directory, setup per kind of data, the training
session), tune/ (studies on Ray Tune), predict/ (predictors and loading), export/ and serve/ (on top of predictors).
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

from torchkeep.predict.load import load
from torchkeep.predict.own_model import TensorPredictor
from torchkeep.predict.predictor import Predictor
from torchkeep.run.own_model import ModelRun, fit
from torchkeep.run.train import RunResult, train
from torchkeep.tune import StudyConfig, StudyResult, tune

__all__ = ["ModelRun", "Predictor", "RunResult", "StudyConfig", "StudyResult", "TensorPredictor", "fit", "load", "train",
           "tune"]

# Names this module held before the run lifecycle and the predictors got their own packages: still
# importable from here for one release (0.2 removes them), with a DeprecationWarning.
MOVED = {
    "ARCHITECTURE": "torchkeep.run.tables",
    "EVAL_BATCH_ROWS": "torchkeep.predict.predictor",
    "EVAL_BATCH_IMAGES": "torchkeep.predict.predictor",
    "evaluate_tensors": "torchkeep.predict.predictor",
}


def __getattr__(name: str) -> Any:
    if name in MOVED:
        warnings.warn(f"torchkeep.api.{name} moved to {MOVED[name]}.{name}; the old path goes in torchkeep 0.2",
                      DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(MOVED[name]), name)
    raise AttributeError(f"module 'torchkeep.api' has no attribute {name!r}")
