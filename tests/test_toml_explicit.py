"""A TOML file's settings are kept by image and text runs even where they equal the table defaults
(which those runs otherwise replace with their own)."""

from __future__ import annotations

import json

from torchkeep.config import RunConfig, load_toml


def test_load_toml_records_the_setting_names_it_was_given(tmp_path):
    (tmp_path / "run.toml").write_text('[train]\nepochs = 3\n[train.optim]\nlr = 1e-2\n[checkpoint]\nasync = false\n'
                                       '[train.transfer]\nrename = {"a." = "b."}\n')
    config = load_toml(str(tmp_path / "run.toml"))
    assert config.explicit == {"epochs", "lr", "async_save", "rename"}
    assert "explicit" not in config.to_dict()  # a saved config is already resolved
    assert RunConfig.from_dict(config.to_dict()).explicit == frozenset()


def test_an_image_run_keeps_toml_settings_equal_to_the_table_defaults(torchkeep, tmp_path):
    (tmp_path / "digits.toml").write_text('[data]\nexample = "digits"\naugment_pad = 0\n'
                                          '[train]\nepochs = 3\nbatch_size = 1024\n[train.optim]\nlr = 1e-2\n')
    result = torchkeep("train", "digits.toml", "--run-dir", "run", "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["train"]["epochs"], config["train"]["batch_size"], config["train"]["optim"]["lr"],
            config["data"]["augment_pad"]) == (3, 1024, 1e-2, 0)  # all four are the table defaults

    (tmp_path / "default.toml").write_text('[data]\nexample = "digits"\n')
    result = torchkeep("train", "default.toml", "--run-dir", "run2", "--epochs", "1", "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    config = json.loads((tmp_path / "run2" / "config.json").read_text())
    assert (config["train"]["batch_size"], config["train"]["optim"]["lr"], config["data"]["augment_pad"]) == (64, 3e-3, 1)


def test_a_text_run_keeps_a_toml_setting_equal_to_the_table_default(torchkeep, tmp_path):
    (tmp_path / "reviews.toml").write_text('[data]\nexample = "reviews"\n[train]\nepochs = 1\nrestore_best = true\n')
    result = torchkeep("train", "reviews.toml", "--run-dir", "run", "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["train"]["restore_best"] is True and config["train"]["epochs"] == 1
    assert config["data"]["valid_fraction"] < 0.1  # the text default still applies where nothing was set
