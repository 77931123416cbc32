"""A corrupt image among images over the memory budget (streamed from files by DataLoader workers):
--skip-bad-images leaves it out and counts it before training; without it the run stops with one line
naming the file and nothing that looks complete."""

from __future__ import annotations

import json

from test_images_cli import write_digit_folder

STREAM = ("streaming.toml", "--image-memory-gib", "0.000001", "--batch-size", "16")


def write_data(root):
    write_digit_folder(root / "photos", 60)
    (root / "photos" / "3" / "broken.png").write_bytes(b"not an image at all")
    (root / "streaming.toml").write_text("[data]\nnum_workers = 1\n")  # decoded in a worker process


def test_streamed_images_skip_a_corrupt_file_and_count_it(torchkeep, tmp_path):
    write_data(tmp_path)
    result = torchkeep("train", "--data", "photos", "--epochs", 1, "--run-dir", "run", "--skip-bad-images",
                       *STREAM, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "streaming them from files" in result.stderr
    assert "skipped 1 unreadable image(s) (--skip-bad-images), first:" in result.stderr
    assert "photos/3/broken.png" in result.stderr
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["status"] == "complete" and run["data"]["streaming"] is True and run["data"]["rows"] == 60


def test_streamed_images_without_skipping_stop_on_a_corrupt_file_naming_it(torchkeep, tmp_path):
    write_data(tmp_path)
    result = torchkeep("train", "--data", "photos", "--epochs", 1, "--run-dir", "run", *STREAM, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "photos/3/broken.png: not a readable image" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()


def test_a_file_broken_mid_run_stops_the_run_naming_it_and_it_is_not_complete(torchkeep, tmp_path):
    write_data(tmp_path)
    (tmp_path / "photos" / "3" / "broken.png").unlink()
    import torchkeep as api

    first = api.train(str(tmp_path / "photos"), run_dir=str(tmp_path / "run"), epochs=2, batch_size=16, num_workers=1,
                      image_memory_bytes=1000, stop_at_step=2, quiet=True, threads=1)
    assert first.bundle == ""  # stopped after step 2 of 8
    victim = min((tmp_path / "photos" / "5").iterdir())
    victim.write_bytes(b"truncated")  # broken after the run started: found by a worker while training
    resumed = torchkeep("train", "--resume", "run", cwd=tmp_path)
    assert resumed.returncode == 2, resumed.stderr
    assert f"photos/5/{victim.name}: not a readable image" in resumed.stderr
    assert "Traceback" not in resumed.stderr
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] != "complete"
    assert not (tmp_path / "run" / "bundle").exists()


def test_streamed_images_hand_the_model_writable_pixels(tmp_path):
    import warnings

    import torchkeep as api

    write_digit_folder(tmp_path / "photos", 40)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        api.train(str(tmp_path / "photos"), run_dir=str(tmp_path / "run"), epochs=1, batch_size=16, num_workers=0,
                  image_memory_bytes=1000, quiet=True, threads=1)
    assert not [w for w in caught if "not writable" in str(w.message)]
