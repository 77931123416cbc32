"""Hyperparameter search on Ray Tune with ASHA, every trial a torchkeep run (`torchkeep tune`, `torchkeep.tune`)."""

from torchkeep.tune.settings import StudyConfig
from torchkeep.tune.study import StudyResult, tune
from torchkeep.tune.trial import TuneReporter

__all__ = ["StudyConfig", "StudyResult", "TuneReporter", "tune"]
