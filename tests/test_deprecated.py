"""Old module paths keep importing for one release, with a DeprecationWarning naming the new one."""

from __future__ import annotations

import subprocess
import sys

import pytest

import torchkeep
import torchkeep.training.loop


def test_the_train_function_and_the_training_package_no_longer_collide() -> None:
    assert callable(torchkeep.train)
    assert callable(torchkeep.training.loop.fit)


def test_old_loop_paths_warn_and_give_the_same_module() -> None:
    with pytest.warns(DeprecationWarning, match="torchkeep.training.loop"):
        from torchkeep.train.loop import fit  # noqa: PLC0415
    assert fit is torchkeep.training.loop.fit
    assert callable(torchkeep.train)  # importing the old path does not replace the function


def test_old_path_in_a_fresh_process() -> None:
    code = ("import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
            "import torchkeep, torchkeep.training.loop\n"
            "assert callable(torchkeep.train)\n"
            "try:\n    import torchkeep.train.loop\nexcept DeprecationWarning as w:\n    print(w)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "torchkeep.train.loop moved to torchkeep.training.loop" in out


def test_moved_modules_keep_their_old_paths_for_a_release() -> None:
    import torchkeep.predict.own_model
    import torchkeep.run.own_model

    with pytest.warns(DeprecationWarning, match="torchkeep.predict.own_model"):
        from torchkeep.tensor_predictor import TensorPredictor  # noqa: PLC0415
    assert TensorPredictor is torchkeep.TensorPredictor is torchkeep.predict.own_model.TensorPredictor
    with pytest.warns(DeprecationWarning, match="torchkeep.run.own_model"):
        from torchkeep.custom import fit  # noqa: PLC0415
    assert fit is torchkeep.fit is torchkeep.run.own_model.fit


def test_names_that_left_the_api_module_warn() -> None:
    import torchkeep.api
    import torchkeep.predict.predictor

    assert torchkeep.api.Predictor is torchkeep.Predictor  # public: stays, no warning
    with pytest.warns(DeprecationWarning, match="torchkeep.predict.predictor.EVAL_BATCH_ROWS"):
        assert torchkeep.api.EVAL_BATCH_ROWS == torchkeep.predict.predictor.EVAL_BATCH_ROWS
