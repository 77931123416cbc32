"""The defaults a run with text columns gets, and the settings it leaves alone."""

from __future__ import annotations

import dataclasses

from torchkeep.config import DataConfig, RunConfig
from torchkeep.run.text import apply_text_defaults


def text_config(**data: object) -> RunConfig:
    return RunConfig(data=DataConfig(text_columns=["review"], **data))  # type: ignore[arg-type]


def test_a_text_run_trains_5_epochs_with_sqrt_pooling_on_98_percent_and_keeps_the_last_weights():
    config, changed = apply_text_defaults(text_config(), set(), rows=4_000)
    assert (config.train.epochs, config.model.text_weighting, config.train.restore_best) == (5, "sqrt", False)
    assert config.data.valid_fraction == 0.02
    assert "text_weighting sqrt" in changed and "valid_fraction 0.02" in changed


def test_a_small_table_still_holds_out_at_least_50_rows_up_to_the_table_default():
    assert apply_text_defaults(text_config(), set(), rows=1_000)[0].data.valid_fraction == 0.05
    config, changed = apply_text_defaults(text_config(), set(), rows=200)
    assert config.data.valid_fraction == 0.1 and not any(line.startswith("valid_fraction") for line in changed)


def test_settings_given_explicitly_or_changed_in_the_config_are_kept():
    config = dataclasses.replace(text_config(valid_fraction=0.2), model=dataclasses.replace(
        RunConfig().model, text_weighting="idf"))
    kept, changed = apply_text_defaults(config, {"epochs"}, rows=4_000)
    assert (kept.train.epochs, kept.model.text_weighting, kept.data.valid_fraction) == (3, "idf", 0.2)
    assert not any(line.startswith(("epochs", "text_weighting", "valid_fraction")) for line in changed)
