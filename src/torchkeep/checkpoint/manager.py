"""Checkpointer: save and restore any model / optimizer / scheduler / loader, from any PyTorch loop.

    with Checkpointer("runs/x", keep_last=3) as ck:
        restored = ck.restore(model=model, optimizer=opt)
        start = restored.step + 1 if restored else 0
        for step in range(start, steps):
            ...
            ck.save(step, model=model, optimizer=opt, metrics={"loss": loss.item()})

`save` snapshots (copies) every tensor before it returns, so the caller may step the optimizer (or
change any tensor in place) at once; the bytes are written in a background thread (one save in flight at most) and an error there
is raised by the next `save` or `wait`. The commit protocol is in checkpoint/format.py.

In a job of several processes every rank calls `save` and `restore` with the same arguments; plain
state is written by rank 0 alone, sharded state (FSDP2) by every rank, and success is agreed
(checkpoint/distributed.py, imported only then: torch.distributed.checkpoint takes ~0.7 s to import).
"""

from __future__ import annotations

import json
import logging
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from torchkeep.checkpoint import codec, format, shards, tensors as tensor_files
from torchkeep.checkpoint.format import MODEL_FILE, STATE_FILE, STATE_TENSORS_FILE, CheckpointInfo
from torchkeep.checkpoint.rng import rank_and_world, rng_of_this_rank, rng_state, set_rng_state
from torchkeep.checkpoint.snapshot import Staging
from torchkeep.errors import CheckpointError, ConfigError, TorchkeepError
from torchkeep.storage import Storage, open_storage

log = logging.getLogger("torchkeep")

__all__ = ["MODEL_FILE", "STATE_FILE", "STATE_TENSORS_FILE", "Checkpointer", "Restored"]


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


@dataclass
class Restored:
    """Where a restored run stands: the step saved, and what was saved with it."""

    step: int
    name: str
    epoch: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)


def _holds_dtensors(state: dict[str, Any]) -> bool:
    """Sharded state (FSDP2)? DTensors exist only once torch.distributed.tensor is imported."""
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and any(isinstance(value, module.DTensor) for value in state.values())


def _distributed():  # noqa: ANN202 - the module
    """checkpoint/distributed.py, imported on first use (torch.distributed.checkpoint is slow to import)."""
    import torchkeep.checkpoint.distributed as distributed

    return distributed


def _rename(key: str, rename: dict[str, str]) -> str:
    for old, new in rename.items():
        if key.startswith(old):
            return new + key[len(old) :]
    return key


class Checkpointer:
    def __init__(
        self,
        uri: str,
        *,
        keep_last: int | None = 3,
        keep_best: tuple[str, str] | None = None,
        keep_best_count: int = 1,
        async_save: bool = True,
        save_rng: bool = True,
        s3_backend: str | None = None,
    ) -> None:
        if keep_last is not None and keep_last < 1:
            raise ConfigError(f"keep_last must be >= 1 or None to keep all (got {keep_last})")
        if keep_best is not None and (len(keep_best) != 2 or keep_best[1] not in ("min", "max")):
            raise ConfigError(f"keep_best must be (metric, 'min' | 'max') (got {keep_best!r})")
        self.storage: Storage = open_storage(uri, s3_backend=s3_backend) if isinstance(uri, str) else uri
        self.keep_last = keep_last
        self.keep_best = keep_best
        self.keep_best_count = keep_best_count
        self.async_save = async_save
        self.save_rng = save_rng
        self._executor: ThreadPoolExecutor | None = None
        self._pending: Future[None] | None = None
        self._staging = Staging()

    # -- saving ---------------------------------------------------------------------------------

    def save(
        self,
        step: int,
        *,
        model: torch.nn.Module | None = None,
        optimizer: Stateful | None = None,
        scheduler: Stateful | None = None,
        loader: Stateful | None = None,
        epoch: int | None = None,
        metrics: dict[str, float] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Snapshot now, write (in the background when async) as `checkpoints/step-{step:09d}`.

        In a job of several processes (every rank calls it alike): synchronous, agreed by every rank."""
        rank, world = rank_and_world()
        model_state = model.state_dict() if model is not None else None
        if model is not None and _holds_dtensors(model_state):
            self._raise_pending()
            parts = {"scheduler": scheduler.state_dict() if scheduler is not None else None,
                     "loader": loader.state_dict() if loader is not None else None, "extra": extra or {}}
            _distributed().save_sharded(self.storage, step, model=model, optimizer=optimizer, parts=parts,
                                        rng=rng_state() if self.save_rng else None,
                                        meta={"step": step, "epoch": epoch, "metrics": metrics or {}},
                                        after_commit=self._apply_retention)
            return
        rngs = [rng_state() if self.save_rng else None]
        if world > 1:
            rngs = _distributed().gather_to_rank0(rngs[0])
            if rank != 0:  # rank 0 writes; the others wait for its verdict
                _distributed().agree(None, f"{self.storage.uri}/{format.PREFIX}/{format.checkpoint_name(step)}: not saved")
                return
        try:
            self.save_state(
                step,
                model_state=model_state,
                optimizer_state=optimizer.state_dict() if optimizer is not None else None,
                scheduler_state=scheduler.state_dict() if scheduler is not None else None,
                loader_state=loader.state_dict() if loader is not None else None,
                rng=rngs[0], rng_by_rank=rngs if world > 1 and rngs[0] is not None else None,
                epoch=epoch, metrics=metrics, extra=extra,
            )
        except Exception as error:  # every rank learns of it (re-raised here), so that none waits for the others
            if world > 1:
                _distributed().agree(error, "")
            raise
        if world > 1:
            _distributed().agree(None, "")

    def save_state(
        self,
        step: int,
        *,
        model_state: dict[str, torch.Tensor] | None = None,
        optimizer_state: dict[str, Any] | None = None,
        scheduler_state: dict[str, Any] | None = None,
        loader_state: dict[str, Any] | None = None,
        rng: dict[str, Any] | None = None,
        epoch: int | None = None,
        metrics: dict[str, float] | None = None,
        extra: dict[str, Any] | None = None,
        rng_by_rank: list[dict[str, Any]] | None = None,
    ) -> None:
        """`save` from state dicts rather than live objects (e.g. a `torch.load`ed checkpoint dict);
        `restore(model=..., optimizer=...)` loads them back into objects. `rng` (from
        `torchkeep.checkpoint.rng.rng_state()`) is stored only when given; `rng_by_rank`, every rank's
        (rank 0's is `rng`), only when given. Called by one process only: synchronous in a job of several."""
        self._raise_pending()  # the previous save has finished: its snapshot buffers are free again
        # Async saves copy every tensor now (the caller steps on at once; see checkpoint/snapshot.py);
        # sync saves write straight from the live tensors, so they need no second copy in memory.
        files: dict[str, Any] = {}
        if model_state is not None:
            files[MODEL_FILE] = {k: v.detach().to("cpu", copy=False) for k, v in model_state.items()}
        parts = {"optimizer": optimizer_state, "scheduler": scheduler_state, "loader": loader_state,
                 "rng": rng, "extra": extra or {}}
        if rng_by_rank is not None:
            parts["rng_by_rank"] = rng_by_rank
        background = self.async_save and rank_and_world()[1] == 1
        tensors: dict[str, torch.Tensor] = {}
        state = {"step": step, "epoch": epoch, "metrics": metrics or {}}
        state.update({k: codec.encode(v, tensors, k, copy=False) for k, v in parts.items()})
        if background:
            if MODEL_FILE in files:
                files[MODEL_FILE] = {k: self._staging.copy(f"model/{k}", v) for k, v in files[MODEL_FILE].items()}
            tensors = {k: self._staging.copy(f"state/{k}", v) for k, v in tensors.items()}
            self._staging.done()
        files[STATE_TENSORS_FILE] = tensors
        files[STATE_FILE] = state
        meta = {"step": step, "epoch": epoch, "metrics": metrics or {}}
        name = format.checkpoint_name(step)
        if not background:
            self._commit(name, files, meta)
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="torchkeep-save")
        self._pending = self._executor.submit(self._commit, name, files, meta)

    def _commit(self, name: str, snapshot: dict[str, Any], meta: dict[str, Any]) -> None:
        files = {}
        for file_name, content in snapshot.items():
            if file_name.endswith(".safetensors"):
                files[file_name] = tensor_files.encode(content)
            else:
                files[file_name] = json.dumps(content).encode()
        format.write_checkpoint(self.storage, name, files, meta)
        self._apply_retention(meta["step"])

    def wait(self) -> None:
        """Block until every save in flight is committed; raise its error if it failed."""
        self._raise_pending(block=True)

    def _raise_pending(self, block: bool = True) -> None:
        pending, self._pending = self._pending, None
        if pending is None:
            return
        try:
            pending.result()
        except TorchkeepError:
            raise
        except Exception as error:
            raise CheckpointError(f"{self.storage.uri}: background checkpoint save failed: {error}") from error

    def close(self) -> None:
        try:
            self.wait()
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None
            self._staging.release()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- retention ------------------------------------------------------------------------------

    def _apply_retention(self, committed: int) -> None:
        """Keep the last k up to the checkpoint just committed, plus the best; drop the rest.

        Checkpoints with a higher step than the one just committed belong to a history that was
        abandoned (the run resumed from an older one, e.g. past a corrupt checkpoint): they go too,
        so that a later resume can never pick them up.
        """
        infos = format.list_checkpoints(self.storage)
        complete = [i for i in infos if i.status == "complete" and i.step <= committed]
        keep = {committed}
        keep.update(i.step for i in (complete if self.keep_last is None else complete[-self.keep_last :]))
        if self.keep_best is not None:
            metric, mode = self.keep_best
            scored = [i for i in complete if metric in i.metrics]
            scored.sort(key=lambda i: i.metrics[metric], reverse=(mode == "max"))
            keep.update(i.step for i in scored[: self.keep_best_count])
        for info in infos:
            # Below `committed`: superseded, or incomplete leftovers of a crash. Above: abandoned.
            if info.step not in keep:
                self._delete(info.name)

    def _delete(self, name: str) -> None:
        base = f"{format.PREFIX}/{name}"
        self.storage.delete(f"{base}/{format.MANIFEST}")  # uncommit first: never a half-deleted valid one
        for key in self.storage.list(base):
            self.storage.delete(key)
        self.storage.delete(base)

    # -- restoring ------------------------------------------------------------------------------

    def list(self, verify: bool = False) -> list[CheckpointInfo]:
        return format.list_checkpoints(self.storage, verify=verify)

    def restore(
        self,
        *,
        model: torch.nn.Module | None = None,
        optimizer: Stateful | None = None,
        scheduler: Stateful | None = None,
        loader: Stateful | None = None,
        step: int | None = None,
        strict: bool = True,
        rename: dict[str, str] | None = None,
        restore_rng: bool = True,
    ) -> Restored | None:
        """Load the newest valid checkpoint (or `step`) in place. None when there is none.

        A newer checkpoint that is incomplete or corrupt is skipped with a warning, never loaded. Of a
        sharded one, the shard files are checked as each rank reads them: a damaged shard is an error.
        In a job of several processes every rank calls it alike; either layout loads into a plain or
        a sharded model at any number of processes.
        """
        self.wait()
        if step is not None:
            name = format.checkpoint_name(step)
            manifest, files = self._read(name)
        else:
            candidates = [i for i in self.list() if i.status != "incomplete"]
            manifest = files = None
            skipped: list[str] = []
            for info in reversed(candidates):
                try:
                    manifest, files = self._read(info.name)
                    name = info.name
                    break
                except CheckpointError as error:
                    skipped.append(str(error))
            if files is None:
                if skipped:  # committed checkpoints exist but none checks out: never start over silently
                    raise CheckpointError(f"no valid checkpoint to restore: {'; '.join(skipped)}")
                return None
            for reason in skipped:
                log.warning("skipped a damaged checkpoint, using %s instead: %s", name, reason)
        return self._load(name, manifest, files, model, optimizer, scheduler, loader, strict, rename or {}, restore_rng)

    def _read(self, name: str) -> tuple[dict[str, Any], dict[str, bytearray]]:
        """The manifest and the files checked against it; of a sharded checkpoint, all but the shards
        (each rank reads the shards it needs, checked the same way, while it loads)."""
        manifest = format.read_manifest(self.storage, name)
        if not shards.is_sharded(manifest):
            return format.read_checkpoint(self.storage, name)
        return manifest, {file_name: format.read_verified(self.storage, name, file_name, entry)
                          for file_name, entry in manifest["files"].items() if not shards.is_shard_file(file_name)}

    def _load(self, name, manifest, files, model, optimizer, scheduler, loader, strict, rename, restore_rng):
        where = f"{self.storage.uri}/{format.PREFIX}/{name}"
        loaded: set[str] = set()
        if shards.is_sharded(manifest):
            if rename:
                raise ConfigError(f"{where}: rename= is not supported for a sharded checkpoint")
            state, tensors, missing, unexpected = _distributed().load_sharded(
                self.storage, name, manifest, files, model, optimizer, strict)
            loaded.add("optimizer")
        else:
            try:
                state = json.loads(files[STATE_FILE])
            except (KeyError, ValueError) as error:
                raise CheckpointError(f"{where}: missing or unreadable {STATE_FILE}") from error
            tensors = (tensor_files.decode(files[STATE_TENSORS_FILE], f"{where}/{STATE_TENSORS_FILE}")
                       if STATE_TENSORS_FILE in files else {})
            missing, unexpected = self._load_model(where, files, model, strict, rename) if model is not None else ([], [])
        parts = {k: codec.decode(state.get(k), tensors) for k in ("optimizer", "scheduler", "loader", "extra") if k not in loaded}
        restored = Restored(step=int(state["step"]), name=name, epoch=state.get("epoch"), metrics=state.get("metrics", {}),
                            extra=parts["extra"] or {}, missing_keys=missing, unexpected_keys=unexpected)
        for label, target in (("optimizer", optimizer), ("scheduler", scheduler), ("loader", loader)):
            if target is None or label in loaded:
                continue
            if parts[label] is None:
                raise CheckpointError(f"{where}: holds no {label} state")
            try:
                if label == "optimizer" and model is not None and _holds_dtensors(model.state_dict()):
                    _distributed().load_optimizer_into_sharded(model, target, parts[label])
                else:
                    target.load_state_dict(parts[label])
            except (ValueError, KeyError, RuntimeError) as error:
                raise CheckpointError(f"{where}: {label} state does not fit: {error}") from error
        rng = rng_of_this_rank(state, tensors) if restore_rng else None
        if rng is not None:
            set_rng_state(rng)
        return restored

    def _load_model(self, where, files, model, strict, rename) -> tuple[list[str], list[str]]:
        """Whole weights (a plain checkpoint) into `model`, plain or sharded; the missing and unexpected keys."""
        if MODEL_FILE not in files:
            raise CheckpointError(f"{where}: holds no model weights")
        weights = tensor_files.decode(files[MODEL_FILE], f"{where}/{MODEL_FILE}")
        weights = {_rename(k, rename): v for k, v in weights.items()}
        expected = model.state_dict()
        missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
        if strict and (missing or unexpected):
            raise CheckpointError(
                f"{where}: model keys do not match (missing: {missing[:5]},"
                f" unexpected: {unexpected[:5]}); pass strict=False or rename={{...}}"
            )
        for key, value in weights.items():
            if key in expected and expected[key].shape != value.shape:
                raise CheckpointError(
                    f"{where}: '{key}' has shape {tuple(value.shape)}, the model expects"
                    f" {tuple(expected[key].shape)}"
                )
        if _holds_dtensors(expected):
            _distributed().load_whole_into_sharded(model, {k: v for k, v in weights.items() if k in expected})
        else:
            model.load_state_dict(weights, strict=False)
        return missing, unexpected
