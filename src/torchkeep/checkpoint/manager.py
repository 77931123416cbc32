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
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from torchkeep.checkpoint import codec, format, tensors as tensor_files
from torchkeep.checkpoint.format import CheckpointInfo
from torchkeep.checkpoint.rng import rng_state, set_rng_state
from torchkeep.checkpoint.snapshot import Staging
from torchkeep.errors import CheckpointError, ConfigError, TorchkeepError
from torchkeep.storage import Storage, open_storage

log = logging.getLogger("torchkeep")

MODEL_FILE = "model.safetensors"
STATE_TENSORS_FILE = "state.safetensors"
STATE_FILE = "state.json"


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
        """Snapshot now, write (in the background when async) as `checkpoints/step-{step:09d}`."""
        self.save_state(
            step,
            model_state=model.state_dict() if model is not None else None,
            optimizer_state=optimizer.state_dict() if optimizer is not None else None,
            scheduler_state=scheduler.state_dict() if scheduler is not None else None,
            loader_state=loader.state_dict() if loader is not None else None,
            rng=rng_state() if self.save_rng else None,
            epoch=epoch, metrics=metrics, extra=extra,
        )

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
    ) -> None:
        """`save` from state dicts rather than live objects (e.g. a `torch.load`ed checkpoint dict);
        `restore(model=..., optimizer=...)` loads them back into objects. `rng` (from
        `torchkeep.checkpoint.rng.rng_state()`) is stored only when given."""
        self._raise_pending()  # the previous save has finished: its snapshot buffers are free again
        # Async saves copy every tensor now (the caller steps on at once; see checkpoint/snapshot.py);
        # sync saves write straight from the live tensors, so they need no second copy in memory.
        files: dict[str, Any] = {}
        if model_state is not None:
            files[MODEL_FILE] = {k: v.detach().to("cpu", copy=False) for k, v in model_state.items()}
        parts = {"optimizer": optimizer_state, "scheduler": scheduler_state, "loader": loader_state,
                 "rng": rng, "extra": extra or {}}
        tensors: dict[str, torch.Tensor] = {}
        state = {"step": step, "epoch": epoch, "metrics": metrics or {}}
        state.update({k: codec.encode(v, tensors, k, copy=False) for k, v in parts.items()})
        if self.async_save:
            if MODEL_FILE in files:
                files[MODEL_FILE] = {k: self._staging.copy(f"model/{k}", v) for k, v in files[MODEL_FILE].items()}
            tensors = {k: self._staging.copy(f"state/{k}", v) for k, v in tensors.items()}
            self._staging.done()
        files[STATE_TENSORS_FILE] = tensors
        files[STATE_FILE] = state
        meta = {"step": step, "epoch": epoch, "metrics": metrics or {}}
        name = format.checkpoint_name(step)
        if not self.async_save:
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

        A newer checkpoint that is incomplete or corrupt is skipped with a warning, never loaded.
        """
        self.wait()
        if step is not None:
            name = format.checkpoint_name(step)
            manifest, files = format.read_checkpoint(self.storage, name)
        else:
            candidates = [i for i in self.list() if i.status != "incomplete"]
            manifest = files = None
            skipped: list[str] = []
            for info in reversed(candidates):
                try:
                    manifest, files = format.read_checkpoint(self.storage, info.name)
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

    def _load(self, name, manifest, files, model, optimizer, scheduler, loader, strict, rename, restore_rng):
        where = f"{self.storage.uri}/{format.PREFIX}/{name}"
        try:
            state = json.loads(files[STATE_FILE])
        except (KeyError, ValueError) as error:
            raise CheckpointError(f"{where}: missing or unreadable {STATE_FILE}") from error
        tensors = (tensor_files.decode(files[STATE_TENSORS_FILE], f"{where}/{STATE_TENSORS_FILE}")
                   if STATE_TENSORS_FILE in files else {})
        parts = {k: codec.decode(state.get(k), tensors) for k in ("optimizer", "scheduler", "loader", "rng", "extra")}
        restored = Restored(step=int(state["step"]), name=name, epoch=state.get("epoch"), metrics=state.get("metrics", {}), extra=parts["extra"] or {})
        if model is not None:
            if MODEL_FILE not in files:
                raise CheckpointError(f"{where}: holds no model weights")
            weights = tensor_files.decode(files[MODEL_FILE], f"{where}/{MODEL_FILE}")
            weights = {_rename(k, rename): v for k, v in weights.items()}
            expected = model.state_dict()
            restored.missing_keys = sorted(set(expected) - set(weights))
            restored.unexpected_keys = sorted(set(weights) - set(expected))
            if strict and (restored.missing_keys or restored.unexpected_keys):
                raise CheckpointError(
                    f"{where}: model keys do not match (missing: {restored.missing_keys[:5]},"
                    f" unexpected: {restored.unexpected_keys[:5]}); pass strict=False or rename={{...}}"
                )
            for key, value in weights.items():
                if key in expected and expected[key].shape != value.shape:
                    raise CheckpointError(
                        f"{where}: '{key}' has shape {tuple(value.shape)}, the model expects"
                        f" {tuple(expected[key].shape)}"
                    )
            model.load_state_dict(weights, strict=False)
        for label, target in (("optimizer", optimizer), ("scheduler", scheduler), ("loader", loader)):
            if target is None:
                continue
            if parts[label] is None:
                raise CheckpointError(f"{where}: holds no {label} state")
            try:
                target.load_state_dict(parts[label])
            except (ValueError, KeyError, RuntimeError) as error:
                raise CheckpointError(f"{where}: {label} state does not fit: {error}") from error
        if restore_rng and parts["rng"] is not None:
            set_rng_state(parts["rng"])
        return restored
