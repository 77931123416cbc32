"""Checkpointer from a user's own loop: round trips, async snapshots, retention, damaged files, resume.

Every test writes real checkpoints under tmp_path and reads them back through the public API.
"""

from __future__ import annotations

import copy
import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from torchkeep import CheckpointError, Checkpointer, StorageError, TorchkeepError


from small_run import Net, assert_same, make_run, train_steps, weights  # noqa: E402


def checkpoint_dir(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step-{step:09d}"


def save_steps(run: Path, steps: list[int], **options: Any) -> dict[int, dict[str, torch.Tensor]]:
    """Train a little between saves; return the weights each checkpoint holds."""
    model, optimizer, scheduler = make_run()
    saved = {}
    with Checkpointer(str(run), **options) as ck:
        for step in steps:
            train_steps(model, optimizer, scheduler, 1)
            ck.save(step, model=model, optimizer=optimizer, metrics={"loss": float(step)})
            saved[step] = weights(model)
    return saved


# -- round trip ----------------------------------------------------------------------------------


def test_save_then_restore_gives_identical_model_optimizer_scheduler(tmp_path: Path) -> None:
    model, optimizer, scheduler = make_run()
    train_steps(model, optimizer, scheduler, 5)
    expected = {
        "model": weights(model),
        "optimizer": copy.deepcopy(optimizer.state_dict()),
        "scheduler": copy.deepcopy(scheduler.state_dict()),
    }
    with Checkpointer(str(tmp_path / "run")) as ck:
        ck.save(5, model=model, optimizer=optimizer, scheduler=scheduler, epoch=1,
                metrics={"valid_loss": 0.25}, extra={"note": "hand-written loop", "lengths": [3, 4]})

    fresh_model, fresh_optimizer, fresh_scheduler = make_run(seed=123)
    restored = Checkpointer(str(tmp_path / "run")).restore(
        model=fresh_model, optimizer=fresh_optimizer, scheduler=fresh_scheduler
    )

    assert restored is not None
    assert (restored.step, restored.name, restored.epoch) == (5, "step-000000005", 1)
    assert restored.metrics == {"valid_loss": 0.25}
    assert restored.extra == {"note": "hand-written loop", "lengths": [3, 4]}
    assert_same(expected["model"], weights(fresh_model), "model")
    # AdamW: per-parameter step, exp_avg, exp_avg_sq (int keys) and the param groups (betas as a tuple)
    assert_same(expected["optimizer"], fresh_optimizer.state_dict(), "optimizer")
    assert_same(expected["scheduler"], fresh_scheduler.state_dict(), "scheduler")
    assert fresh_optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]


def test_restored_run_continues_bit_identically(tmp_path: Path) -> None:
    model, optimizer, scheduler = make_run()
    train_steps(model, optimizer, scheduler, 5)
    with Checkpointer(str(tmp_path / "run")) as ck:
        ck.save(5, model=model, optimizer=optimizer, scheduler=scheduler)
    train_steps(model, optimizer, scheduler, 10)  # the uninterrupted run goes on

    fresh_model, fresh_optimizer, fresh_scheduler = make_run(seed=99)
    torch.manual_seed(12345)  # whatever the new process did before restoring
    Checkpointer(str(tmp_path / "run")).restore(model=fresh_model, optimizer=fresh_optimizer, scheduler=fresh_scheduler)
    train_steps(fresh_model, fresh_optimizer, fresh_scheduler, 10)

    assert_same(weights(model), weights(fresh_model), "model after 10 more steps")


class TiedLanguageModel(nn.Module):
    """Tied input/output embeddings and a bfloat16 layer: shared storage and another dtype."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(10, 4)
        self.decoder = nn.Linear(4, 10, bias=False)
        self.decoder.weight = self.embedding.weight
        self.adapter = nn.Linear(4, 4).to(torch.bfloat16)


def test_tied_weights_and_bfloat16_round_trip(tmp_path: Path) -> None:
    model = TiedLanguageModel()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    hidden = model.embedding(torch.tensor([1, 2, 3]))
    (model.decoder(hidden).sum() + model.adapter(hidden.bfloat16()).float().sum()).backward()
    optimizer.step()
    with Checkpointer(str(tmp_path / "run")) as ck:
        ck.save(1, model=model, optimizer=optimizer)

    fresh = TiedLanguageModel()
    fresh_optimizer = torch.optim.AdamW(fresh.parameters(), lr=1e-2)
    restored = Checkpointer(str(tmp_path / "run")).restore(model=fresh, optimizer=fresh_optimizer)
    assert restored.missing_keys == [] and restored.unexpected_keys == []
    assert_same(weights(model), weights(fresh))
    assert fresh.decoder.weight is fresh.embedding.weight  # still tied
    assert fresh.adapter.weight.dtype == torch.bfloat16
    assert_same(optimizer.state_dict(), fresh_optimizer.state_dict(), "optimizer")


def test_rng_states_come_back(tmp_path: Path) -> None:
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    torch.randn(7), np.random.rand(3), random.random()  # somewhere in the middle of each stream
    with Checkpointer(str(tmp_path / "run")) as ck:
        ck.save(1)

    def draw() -> tuple[torch.Tensor, np.ndarray, list[float], float]:
        return torch.randn(5), np.random.rand(5), [random.random() for _ in range(5)], np.random.randn()

    expected = draw()
    torch.manual_seed(777)
    np.random.seed(777)
    random.seed(777)
    Checkpointer(str(tmp_path / "run")).restore()
    got = draw()

    assert torch.equal(got[0], expected[0])
    assert np.array_equal(got[1], expected[1])
    assert got[2] == expected[2]
    assert got[3] == expected[3]


def test_restore_rng_false_leaves_the_generators_alone(tmp_path: Path) -> None:
    with Checkpointer(str(tmp_path / "run")) as ck:
        ck.save(1)
    torch.manual_seed(5)
    expected = torch.randn(3)
    torch.manual_seed(5)
    Checkpointer(str(tmp_path / "run")).restore(restore_rng=False)
    assert torch.equal(torch.randn(3), expected)


def test_restore_with_no_checkpoint_is_none(tmp_path: Path) -> None:
    assert Checkpointer(str(tmp_path / "empty")).restore(model=Net()) is None


def test_checkpoint_files_are_safetensors_and_json_never_pickles(tmp_path: Path) -> None:
    model, optimizer, scheduler = make_run()
    train_steps(model, optimizer, scheduler, 2)
    with Checkpointer(str(tmp_path / "run")) as ck:
        ck.save(2, model=model, optimizer=optimizer, scheduler=scheduler)
    directory = checkpoint_dir(tmp_path / "run", 2)
    assert sorted(p.name for p in directory.iterdir()) == [
        "MANIFEST.json", "model.safetensors", "state.json", "state.safetensors"
    ]
    model_tensors = load_file(directory / "model.safetensors")
    assert torch.equal(model_tensors["head.weight"], model.head.weight)
    state_tensors = load_file(directory / "state.safetensors")
    assert any("exp_avg_sq" in key for key in state_tensors)  # optimizer moments are tensors on disk
    assert (tmp_path / "run" / "checkpoints" / "LATEST").read_text() == "step-000000002"


# -- async save ----------------------------------------------------------------------------------


def test_save_snapshots_before_returning_so_the_loop_may_change_weights_at_once(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 512))  # a few MB to write
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 512)).sum().backward()
    optimizer.step()
    before_weights = weights(model)
    before_optimizer = copy.deepcopy(optimizer.state_dict())

    ck = Checkpointer(str(tmp_path / "run"), async_save=True)
    ck.save(1, model=model, optimizer=optimizer)
    with torch.no_grad():  # what the next optimizer step does, in place, while the write may be in flight
        for parameter in model.parameters():
            parameter.data.add_(1)
        for state in optimizer.state.values():
            state["exp_avg"].add_(1)
            state["exp_avg_sq"].mul_(2)
    ck.wait()
    ck.close()

    fresh = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 512))
    fresh_optimizer = torch.optim.AdamW(fresh.parameters(), lr=1e-3)
    Checkpointer(str(tmp_path / "run")).restore(model=fresh, optimizer=fresh_optimizer)
    assert_same(before_weights, weights(fresh), "model")
    assert_same(before_optimizer, fresh_optimizer.state_dict(), "optimizer")
    assert not torch.equal(weights(model)["0.weight"], before_weights["0.weight"])


def test_each_async_save_keeps_its_moment_while_the_next_steps_and_saves_run(tmp_path: Path) -> None:
    """optimizer.step and forward passes (BatchNorm statistics) run while the previous save is written;
    snapshot buffers are reused from save to save: every checkpoint still holds its own step, bit for bit."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 1024), nn.BatchNorm1d(1024), nn.ReLU(), nn.Linear(1024, 1024))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2)

    def step() -> None:
        optimizer.zero_grad()
        model(torch.randn(32, 64)).square().mean().backward()
        optimizer.step()
        scheduler.step()

    expected = {}
    with Checkpointer(str(tmp_path / "run"), keep_last=None, async_save=True) as ck:
        for number in range(1, 6):
            step()
            ck.save(number, model=model, optimizer=optimizer, scheduler=scheduler)
            expected[number] = (weights(model), copy.deepcopy(optimizer.state_dict()),
                                copy.deepcopy(scheduler.state_dict()))
            # the next step at once, while this save is written (12 MB): parameters, Adam moments and
            # step counts, and the BatchNorm running statistics all change in place
    for number, (model_state, optimizer_state, scheduler_state) in expected.items():
        fresh = nn.Sequential(nn.Linear(64, 1024), nn.BatchNorm1d(1024), nn.ReLU(), nn.Linear(1024, 1024))
        fresh_optimizer = torch.optim.AdamW(fresh.parameters(), lr=1e-3)
        fresh_scheduler = torch.optim.lr_scheduler.StepLR(fresh_optimizer, step_size=2)
        Checkpointer(str(tmp_path / "run")).restore(model=fresh, optimizer=fresh_optimizer, scheduler=fresh_scheduler,
                                                    step=number)
        assert_same(model_state, weights(fresh), f"model at step {number}")
        assert_same(optimizer_state, fresh_optimizer.state_dict(), f"optimizer at step {number}")
        assert_same(scheduler_state, fresh_scheduler.state_dict(), f"scheduler at step {number}")
    assert expected[4][0]["1.running_mean"].ne(expected[5][0]["1.running_mean"]).any()  # the buffers did move


def test_context_manager_waits_for_the_write_on_exit(tmp_path: Path) -> None:
    model = nn.Linear(1024, 1024)
    run = tmp_path / "run"
    with Checkpointer(str(run)) as ck:
        ck.save(7, model=model)
    # No wait(): leaving the block committed the checkpoint.
    assert (checkpoint_dir(run, 7) / "MANIFEST.json").is_file()
    info = Checkpointer(str(run)).list(verify=True)
    assert [(i.step, i.status) for i in info] == [(7, "complete")]
    assert info[0].size_bytes > 4 * 1024 * 1024


def test_a_failed_background_save_is_raised_by_wait(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoints").write_text("a file where the checkpoint directory should be")
    ck = Checkpointer(str(run), async_save=True)
    ck.save(1, model=nn.Linear(2, 2))  # returns at once; the write fails in the background
    with pytest.raises(TorchkeepError, match="checkpoints"):
        ck.wait()
    ck.close()


def test_an_unwritable_checkpoint_directory_is_a_storage_error(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoints").write_text("a file where the checkpoint directory should be")
    ck = Checkpointer(str(run), async_save=False)
    with pytest.raises(StorageError, match="checkpoints"):
        ck.save(1, model=nn.Linear(2, 2))


# -- retention -----------------------------------------------------------------------------------


def steps_on_disk(run: Path) -> list[int]:
    return sorted(int(p.name.removeprefix("step-")) for p in (run / "checkpoints").glob("step-*"))


def test_keep_last(tmp_path: Path) -> None:
    run = tmp_path / "run"
    saved = save_steps(run, [1, 2, 3, 4, 5], keep_last=2)
    assert steps_on_disk(run) == [4, 5]
    assert [i.step for i in Checkpointer(str(run)).list()] == [4, 5]
    model = Net()
    assert Checkpointer(str(run)).restore(model=model).step == 5
    assert_same(saved[5], weights(model))


def test_keep_last_none_keeps_everything(tmp_path: Path) -> None:
    run = tmp_path / "run"
    save_steps(run, [1, 2, 3, 4], keep_last=None)
    assert steps_on_disk(run) == [1, 2, 3, 4]


def test_keep_best_keeps_the_best_scored_besides_the_last(tmp_path: Path) -> None:
    run = tmp_path / "run"
    model = Net()
    losses = {1: 0.9, 2: 0.2, 3: 0.5, 4: 0.3, 5: 0.8, 6: 0.7}
    with Checkpointer(str(run), keep_last=1, keep_best=("valid_loss", "min")) as ck:
        for step, loss in losses.items():
            ck.save(step, model=model, metrics={"valid_loss": loss})
    assert steps_on_disk(run) == [2, 6]

    run2 = tmp_path / "run2"
    with Checkpointer(str(run2), keep_last=1, keep_best=("valid_loss", "min"), keep_best_count=2) as ck:
        for step, loss in losses.items():
            ck.save(step, model=model, metrics={"valid_loss": loss})
    assert steps_on_disk(run2) == [2, 4, 6]

    run3 = tmp_path / "run3"
    with Checkpointer(str(run3), keep_last=2, keep_best=("valid_loss", "max")) as ck:
        for step, loss in losses.items():
            ck.save(step, model=model, metrics={"valid_loss": loss})
    assert steps_on_disk(run3) == [1, 5, 6]

    restored = Checkpointer(str(run)).restore(model=Net(), step=2)
    assert restored.metrics == {"valid_loss": 0.2}


def test_retention_settings_are_checked() -> None:
    from torchkeep import ConfigError

    with pytest.raises(ConfigError, match="keep_last"):
        Checkpointer("unused", keep_last=0)
    with pytest.raises(ConfigError, match="keep_best"):
        Checkpointer("unused", keep_best=("valid_loss", "lowest"))


def test_saves_after_falling_back_past_a_corrupt_checkpoint_are_kept(tmp_path: Path) -> None:
    run = tmp_path / "run"
    model = Net()
    ck = Checkpointer(str(run), keep_last=1, keep_best=("valid_loss", "min"), async_save=False)
    ck.save(10, model=model, metrics={"valid_loss": 0.1})
    ck.save(20, model=model, metrics={"valid_loss": 0.5})
    truncate(checkpoint_dir(run, 20) / "model.safetensors")

    assert ck.restore(model=model).step == 10
    ck.save(11, model=model, metrics={"valid_loss": 0.4})  # training goes on from step 10
    assert 11 in steps_on_disk(run)


# -- damaged checkpoints -------------------------------------------------------------------------


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flip_one_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("file_name", ["model.safetensors", "state.safetensors", "state.json"])
def test_truncated_file_in_newest_checkpoint_falls_back_to_the_previous(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, file_name: str
) -> None:
    run = tmp_path / "run"
    saved = save_steps(run, [10, 20], keep_last=3)
    truncate(checkpoint_dir(run, 20) / file_name)

    model = Net()
    with caplog.at_level(logging.WARNING, logger="torchkeep"):
        restored = Checkpointer(str(run)).restore(model=model)

    assert restored is not None and restored.step == 10
    assert_same(saved[10], weights(model))
    warnings = [r.getMessage() for r in caplog.records if r.name == "torchkeep" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "step-000000020" in warnings[0] and file_name in warnings[0] and "truncated" in warnings[0]

    statuses = {i.step: i.status for i in Checkpointer(str(run)).list(verify=True)}
    assert statuses == {10: "complete", 20: "corrupt"}
    with pytest.raises(CheckpointError, match=f"step-000000020/{file_name}.*manifest says"):
        Checkpointer(str(run)).restore(model=Net(), step=20)


def test_altered_bytes_of_the_same_size_are_detected(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run = tmp_path / "run"
    saved = save_steps(run, [10, 20], keep_last=3)
    target = checkpoint_dir(run, 20) / "model.safetensors"
    size = target.stat().st_size
    flip_one_byte(target)
    assert target.stat().st_size == size

    info = {i.step: i for i in Checkpointer(str(run)).list(verify=True)}
    assert info[20].status == "corrupt" and "sha256" in info[20].reason
    model = Net()
    with caplog.at_level(logging.WARNING, logger="torchkeep"):
        assert Checkpointer(str(run)).restore(model=model).step == 10
    assert_same(saved[10], weights(model))
    assert any("sha256" in r.getMessage() for r in caplog.records)
    with pytest.raises(CheckpointError, match="sha256 does not match"):
        Checkpointer(str(run)).restore(model=Net(), step=20)


def test_a_checkpoint_without_manifest_does_not_exist(tmp_path: Path) -> None:
    run = tmp_path / "run"
    saved = save_steps(run, [10, 20], keep_last=3)
    (checkpoint_dir(run, 20) / "MANIFEST.json").unlink()
    # and one a crash left half-written: files but no manifest
    half = checkpoint_dir(run, 30)
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"\x00" * 100)

    statuses = {i.step: i.status for i in Checkpointer(str(run)).list()}
    assert statuses == {10: "complete", 20: "incomplete", 30: "incomplete"}
    model = Net()
    restored = Checkpointer(str(run)).restore(model=model)
    assert restored.step == 10
    assert_same(saved[10], weights(model))
    with pytest.raises(CheckpointError, match="incomplete"):
        Checkpointer(str(run)).restore(model=Net(), step=20)


def test_an_unreadable_manifest_is_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run = tmp_path / "run"
    save_steps(run, [10, 20], keep_last=3)
    (checkpoint_dir(run, 20) / "MANIFEST.json").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="torchkeep"):
        assert Checkpointer(str(run)).restore(model=Net()).step == 10
    assert any("step-000000020" in r.getMessage() for r in caplog.records)


def test_every_checkpoint_damaged_is_an_error_not_a_fresh_start(tmp_path: Path) -> None:
    run = tmp_path / "run"
    save_steps(run, [10, 20], keep_last=3)
    truncate(checkpoint_dir(run, 10) / "model.safetensors")
    flip_one_byte(checkpoint_dir(run, 20) / "state.safetensors")
    model = Net()
    before = weights(model)
    with pytest.raises(CheckpointError, match="no valid checkpoint") as error:
        Checkpointer(str(run)).restore(model=model)
    assert "step-000000010/model.safetensors" in str(error.value)
    assert "step-000000020/state.safetensors" in str(error.value)
    assert_same(before, weights(model))  # nothing half-loaded


# -- loading into a changed model ----------------------------------------------------------------


class Old(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.old = nn.Linear(4, 8)
        self.head = nn.Linear(8, 2)


class New(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.new = nn.Linear(4, 8)
        self.head = nn.Linear(8, 2)


class OldWithExtraHead(Old):
    def __init__(self) -> None:
        super().__init__()
        self.extra = nn.Linear(2, 3)


def saved_old(tmp_path: Path) -> tuple[str, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = Old()
    with Checkpointer(str(tmp_path / "run")) as ck:
        ck.save(1, model=model)
    return str(tmp_path / "run"), weights(model)


def test_rename_maps_old_key_prefixes_onto_new_ones(tmp_path: Path) -> None:
    run, old = saved_old(tmp_path)
    model = New()
    with pytest.raises(CheckpointError, match="model keys do not match"):
        Checkpointer(run).restore(model=model)
    restored = Checkpointer(run).restore(model=model, rename={"old.": "new."})
    assert restored.missing_keys == [] and restored.unexpected_keys == []
    assert torch.equal(model.new.weight, old["old.weight"])
    assert torch.equal(model.new.bias, old["old.bias"])
    assert torch.equal(model.head.weight, old["head.weight"])


def test_strict_false_loads_what_matches_and_reports_the_rest(tmp_path: Path) -> None:
    run, old = saved_old(tmp_path)
    model = OldWithExtraHead()
    extra_before = weights(model.extra)
    with pytest.raises(CheckpointError, match="missing: \\['extra.bias', 'extra.weight'\\]"):
        Checkpointer(run).restore(model=model)

    restored = Checkpointer(run).restore(model=model, strict=False)
    assert restored.missing_keys == ["extra.bias", "extra.weight"]
    assert restored.unexpected_keys == []
    assert torch.equal(model.old.weight, old["old.weight"])
    assert torch.equal(model.head.bias, old["head.bias"])
    assert_same(extra_before, weights(model.extra))  # untouched

    smaller = New()  # has no `old.*`: those keys are unexpected, `new.*` missing
    restored = Checkpointer(run).restore(model=smaller, strict=False)
    assert restored.unexpected_keys == ["old.bias", "old.weight"]
    assert restored.missing_keys == ["new.bias", "new.weight"]
    assert torch.equal(smaller.head.weight, old["head.weight"])


def test_a_shape_mismatch_is_an_error_even_when_not_strict(tmp_path: Path) -> None:
    run, _ = saved_old(tmp_path)
    model = Old()
    model.head = nn.Linear(8, 5)
    with pytest.raises(CheckpointError, match=r"'head\.(weight|bias)' has shape \(2(, 8)?,?\), the model expects \(5(, 8)?,?\)"):
        Checkpointer(run).restore(model=model, strict=False)


def test_restoring_an_optimizer_that_was_not_saved_is_an_error(tmp_path: Path) -> None:
    run, _ = saved_old(tmp_path)
    model = Old()
    with pytest.raises(CheckpointError, match="holds no optimizer state"):
        Checkpointer(run).restore(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))


# -- the seeds' hand-written loop, rewritten with Checkpointer, killed and resumed ---------------

# The notes' loop saved `torch.save({'epoch', 'model_state_dict', 'optimizer_state_dict', 'loss'})`
# once per epoch. The same loop with a Checkpointer: a save every 8 steps, a restore at the top.
LOOP = textwrap.dedent(
    """
    import sys

    import torch
    from safetensors.torch import save_file
    from torch import nn

    from torchkeep import BatchLoader, Checkpointer

    torch.set_num_threads(1)
    run_dir, out, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])

    torch.manual_seed(0)
    x = torch.randn(1024, 8)
    y = (x[:, :2].sum(dim=1, keepdim=True) + 0.3 * torch.randn(1024, 1) > 0).float()
    loader = BatchLoader({"x": x, "y": y}, batch_size=16, seed=0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loss_fn = nn.BCEWithLogitsLoss()

    with Checkpointer(run_dir, keep_last=2) as ck:
        restored = ck.restore(model=model, optimizer=optimizer, loader=loader)
        step = restored.step if restored else 0
        print(f"start {step}", flush=True)
        while loader.epoch < epochs:
            for batch in loader:
                optimizer.zero_grad()
                loss = loss_fn(model(batch["x"]), batch["y"])
                loss.backward()
                optimizer.step()
                step += 1
                if step % 8 == 0:
                    ck.save(step, model=model, optimizer=optimizer, loader=loader,
                            epoch=loader.epoch, metrics={"loss": loss.item()})
                print(f"step {step}", flush=True)
    save_file(model.state_dict(), out)
    print("done", flush=True)
    """
)


def start_loop(script: Path, run_dir: Path, out: Path, epochs: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(script), str(run_dir), str(out), str(epochs)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def test_hand_written_loop_killed_midway_resumes_to_bit_identical_weights(tmp_path: Path) -> None:
    script = tmp_path / "loop.py"
    script.write_text(LOOP)
    epochs, kill_after = 2, 40  # 64 steps per epoch, a checkpoint every 8

    reference = start_loop(script, tmp_path / "reference", tmp_path / "reference.safetensors", epochs)

    killed = start_loop(script, tmp_path / "run", tmp_path / "final.safetensors", epochs)
    assert killed.stdout is not None
    for line in killed.stdout:
        if line.strip() == f"step {kill_after}":
            break
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "final.safetensors").exists()

    resumed = start_loop(script, tmp_path / "run", tmp_path / "final.safetensors", epochs)
    output, errors = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, errors
    start = int(output.splitlines()[0].removeprefix("start "))
    assert 0 < start < 2 * 64 and start % 8 == 0  # it resumed from a checkpoint, not from scratch
    assert output.splitlines()[1] == f"step {start + 1}"

    _, errors = reference.communicate(timeout=120)
    assert reference.returncode == 0, errors
    expected = load_file(tmp_path / "reference.safetensors")
    got = load_file(tmp_path / "final.safetensors")
    assert_same(expected, got, "final weights")
