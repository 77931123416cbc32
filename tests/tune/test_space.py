"""[tune.space] as a user writes it: each setting one distribution, checked before anything runs."""

from __future__ import annotations

import pytest

ray_tune = pytest.importorskip("ray.tune", reason="needs the tune extra: pip install 'torchkeep[tune]'")

from torchkeep.errors import ConfigError  # noqa: E402
from torchkeep.tune.settings import StudyConfig, study_config  # noqa: E402
from torchkeep.tune.space import parse_space, to_ray  # noqa: E402


def test_a_space_becomes_ray_tune_distributions_over_run_settings() -> None:
    dimensions = parse_space({"lr": {"loguniform": [1e-4, 1e-1]}, "hidden_sizes": {"choice": ["256,128", "512,256"]},
                              "dropout": {"uniform": [0, 0.3]}, "ensemble_size": {"randint": [1, 9]}})
    assert [d.describe() for d in dimensions] == [
        "lr loguniform [0.0001, 0.1]", "hidden_sizes in [[256, 128], [512, 256]]", "dropout uniform [0, 0.3]",
        "ensemble_size randint [1, 9)"]
    space = to_ray(dimensions)
    assert isinstance(space["lr"], ray_tune.search.sample.Float) and space["lr"].lower == 1e-4
    assert space["hidden_sizes"].categories == [[256, 128], [512, 256]]
    assert isinstance(space["ensemble_size"], ray_tune.search.sample.Integer)


def test_no_space_searches_the_default_one() -> None:
    assert {d.name for d in parse_space({})} == {"lr", "weight_decay", "dropout", "hidden_sizes"}
    assert {d.name for d in parse_space(None, images=True)} == {"lr", "weight_decay", "dropout"}


@pytest.mark.parametrize("table, message", [
    ({"epochs": {"choice": [1, 2]}}, "'epochs' is not a setting a study can search"),
    ({"lr": {"normal": [0, 1]}}, "lr must be one of {uniform = [...]}"),
    ({"lr": {"loguniform": [0, 1]}}, "needs numbers above 0"),
    ({"dropout": {"uniform": [0.3, 0.3]}}, "is an empty range"),
    ({"batch_size": {"choice": []}}, "needs a non-empty list"),
    ({"hidden_sizes": {"choice": ["wide"]}}, "comma lists of integers"),
])
def test_a_wrong_space_says_what_and_how(table: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("{", r"\{")):
        parse_space(table)


def test_study_settings_are_checked_and_threads_fill_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert StudyConfig(concurrent=2).threads() == 4 and StudyConfig(concurrent=16).threads() == 1
    assert StudyConfig(steps=2700).grace(2700) == 100  # budget / reduction_factor ** 3
    with pytest.raises(ConfigError, match="epochs or steps"):
        StudyConfig(epochs=4, steps=100)
    with pytest.raises(ConfigError, match=r"unknown setting 'trails' \(known: trials, concurrent"):
        study_config({"trails": 8})
