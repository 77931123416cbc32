"""Transfer learning for any nn.Module: start from pretrained weights, freeze parts, unfreeze later.

    pretrained = read_pretrained("runs/big")           # a run, a bundle, .safetensors, or a .pth
    report = load_pretrained(model, pretrained)        # copies every weight whose name AND shape match
    plan = TransferPlan(model, TransferConfig(freeze=["embeddings.*"], unfreeze_at=3),
                        pretrained=report.pretrained_parameters)

fit() takes the plan's param groups for the optimizer, calls `plan.maybe_unfreeze` at each epoch
start and `plan.hold_frozen_norms` after every `model.train()`. A `.pth` is read with
`torch.load(weights_only=True)` (checkpoint/torchfile.py): nothing in it ever runs.

Decisions, so that a reader need not guess:
- `unfreeze_at` is a 1-based epoch, as progress prints it: `unfreeze_at=3` trains epochs 1-2 with the
  frozen parameters fixed and epochs 3.. with everything.
- Frozen parameters get `requires_grad=False` (no gradient is computed for them) and are left out of
  the optimizer; unfreezing adds them with `add_param_group` at the epoch boundary.
- BatchNorm layers whose parameters are all frozen stay in eval mode while frozen: their running
  statistics are part of what was pretrained, and a frozen part stays bit-identical.
- `backbone_lr_mult` scales the learning rate of the parameters loaded from `init_from` (the
  "pretrained" ones); schedules scale each group's rate from its own base (one-cycle: max_lr per group).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from torchkeep.bundle import BUNDLE_FILE, read_bundle
from torchkeep.checkpoint import format as checkpoint_format
from torchkeep.checkpoint import tensors as tensor_files
from torchkeep.checkpoint.convert import is_state_dict
from torchkeep.checkpoint.shards import model_weights
from torchkeep.checkpoint.torchfile import load_weights_only, read_file
from torchkeep.errors import CheckpointError, ConfigError
from torchkeep.storage import open_storage
from torchkeep.training.ema import ema_weights_in_files

log = logging.getLogger("torchkeep")

PTH_SUFFIXES = (".pth", ".pt", ".bin")
STATE_DICT_KEYS = ("model_state_dict", "state_dict", "model")  # where checkpoint dicts keep the weights
LR_KEYS = ("lr", "initial_lr", "max_lr", "min_lr")  # per-group rates a schedule keeps; all scale with the base


@dataclass(kw_only=True)
class TransferConfig:
    init_from: str | None = None  # run dir, bundle, .safetensors or .pth/.pt (local or s3://)
    freeze: list[str] = field(default_factory=list)  # fnmatch globs on parameter names
    unfreeze_at: int | None = None  # 1-based epoch from which frozen parameters train too
    backbone_lr_mult: float = 1.0  # learning-rate multiplier for the parameters loaded by init_from
    rename: dict[str, str] = field(default_factory=dict)  # source name prefix -> model name prefix

    def __post_init__(self) -> None:
        if isinstance(self.freeze, str):
            self.freeze = [self.freeze]
        self.freeze = [p.strip() for value in self.freeze for p in value.split(",") if p.strip()]
        if not isinstance(self.backbone_lr_mult, (int, float)) or not self.backbone_lr_mult > 0:
            raise ConfigError(f"backbone_lr_mult must be > 0 (got {self.backbone_lr_mult})")
        if self.unfreeze_at is not None:
            if not isinstance(self.unfreeze_at, int) or self.unfreeze_at < 2:
                raise ConfigError(f"unfreeze_at is the 1-based epoch that trains frozen parameters again and must be"
                                  f" >= 2 (got {self.unfreeze_at})")
            if not self.freeze:
                raise ConfigError("unfreeze_at needs something frozen: add --freeze PATTERN")


# -- reading pretrained weights ------------------------------------------------------------------


@dataclass
class Pretrained:
    source: str
    kind: str  # what was read: "bundle", "checkpoint step-000000123", "safetensors", "pth"
    weights: dict[str, torch.Tensor]
    preprocessor: dict[str, Any] | None = None  # a torchkeep run's or bundle's, e.g. {"kind": "table", ...}


def _state_dict_in(obj: Any, source: str) -> dict[str, torch.Tensor]:
    if is_state_dict(obj):
        return obj
    if isinstance(obj, dict):
        for key in STATE_DICT_KEYS:
            if is_state_dict(obj.get(key)):
                return obj[key]
    found = ", ".join(map(repr, list(obj)[:8])) if isinstance(obj, dict) else type(obj).__name__
    raise CheckpointError(f"{source}: holds no state_dict of tensors, neither bare nor under"
                          f" {', '.join(map(repr, STATE_DICT_KEYS))} (found: {found})")


def _strip_wrapper_prefix(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # DataParallel / DDP save every name as "module.<name>".
    if weights and all(k.startswith("module.") for k in weights):
        return {k.removeprefix("module."): v for k, v in weights.items()}
    return weights


def _read_run(source: str) -> Pretrained | None:
    storage = open_storage(source)
    for prefix in ("bundle", ""):
        if storage.exists(f"{prefix}/{BUNDLE_FILE}" if prefix else BUNDLE_FILE):
            loaded = read_bundle(storage, prefix)
            model, meta = loaded[0], loaded[-1]
            weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return Pretrained(source, "bundle", weights, meta.get("preprocessor"))
    if not storage.exists("config.json"):
        return None
    preprocessor = None
    if storage.exists("schema.json"):
        preprocessor = {"kind": "table", "schema": json.loads(storage.read("schema.json"))}
    reasons = []
    candidates = [i for i in checkpoint_format.list_checkpoints(storage) if i.status != "incomplete"]
    for info in reversed(candidates):
        try:
            files = checkpoint_format.read_checkpoint(storage, info.name)[1]
            weights = (ema_weights_in_files(files, f"{source}/{info.name}")  # trained with ema_decay: its average
                       or model_weights(files, f"{source}/{info.name}"))  # plain or sharded
            return Pretrained(source, f"checkpoint {info.name}", weights, preprocessor)
        except (CheckpointError, KeyError) as error:
            reasons.append(str(error))
    raise CheckpointError(f"{source}: the run has no bundle and no valid checkpoint to start from"
                          + (f" ({'; '.join(reasons)[:300]})" if reasons else ""))


def read_pretrained(source: str) -> Pretrained:
    """The weights of a torchkeep run (its bundle, else its newest valid checkpoint), a bundle, a
    `.safetensors` file, or a `.pth`/`.pt` state_dict (bare or inside a checkpoint dict); local or s3://."""
    name = source.rstrip("/").lower()
    if name.endswith(".safetensors"):
        return Pretrained(source, "safetensors", tensor_files.decode(read_file(source), source))
    if name.endswith(PTH_SUFFIXES):
        weights = _state_dict_in(load_weights_only(source), source)
        return Pretrained(source, "pth", _strip_wrapper_prefix(weights))
    if "://" not in source:
        from pathlib import Path

        if not Path(source).exists():
            raise ConfigError(f"init_from {source}: no such run, bundle or file")
        if Path(source).is_file():
            raise ConfigError(f"init_from {source}: not a .safetensors or .pth/.pt file, run directory or bundle")
    pretrained = _read_run(source)
    if pretrained is None:
        raise ConfigError(f"init_from {source}: not a torchkeep run or bundle (no bundle.json or config.json),"
                          " nor a .safetensors or .pth/.pt file")
    return pretrained


# -- copying what matches ------------------------------------------------------------------------


@dataclass
class TransferReport:
    source: str
    kind: str
    loaded: list[str] = field(default_factory=list)
    skipped: list[tuple[str, list[int], list[int]]] = field(default_factory=list)  # name, source shape, model shape
    new: list[str] = field(default_factory=list)  # in the model, not in the source: keep their fresh init
    unused: list[str] = field(default_factory=list)  # in the source, not in the model
    notes: list[str] = field(default_factory=list)
    pretrained_parameters: list[str] = field(default_factory=list)  # loaded names that are parameters

    def lines(self, limit: int = 6) -> list[str]:
        def some(names: list[str]) -> str:
            return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit else "")

        head = (f"init from {self.source} ({self.kind}): loaded {len(self.loaded)}, skipped {len(self.skipped)},"
                f" newly initialised {len(self.new)} tensor(s)")
        lines = [head]
        if self.skipped:
            lines.append("  skipped (shape differs): " + some(
                [f"{name} {tuple(have)} -> model {tuple(want)}" for name, have, want in self.skipped]))
        if self.new:
            lines.append("  newly initialised: " + some(self.new))
        if self.unused:
            lines.append("  not in the model: " + some(self.unused))
        lines += [f"  {note}" for note in self.notes]
        return lines

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def _rename(key: str, rename: dict[str, str]) -> str:
    for old, new in rename.items():
        if key.startswith(old):
            return new + key[len(old) :]
    return key


Adapt = Callable[[Pretrained, nn.Module], tuple[dict[str, torch.Tensor], list[str]]]


def load_pretrained(model: nn.Module, source: str | Pretrained, *, rename: dict[str, str] | None = None,
                    adapt: Adapt | None = None) -> TransferReport:
    """Copy into `model` every source weight whose name (after `rename`) and shape match.

    `adapt(pretrained, model) -> (weights, notes)` may rewrite the source weights first (tables
    line embedding rows up by category level). Nothing matching at all is a CheckpointError.
    """
    pretrained = read_pretrained(source) if isinstance(source, str) else source
    weights = {_rename(k, rename or {}): v for k, v in pretrained.weights.items()}
    notes: list[str] = []
    if adapt is not None:
        weights, notes = adapt(dataclasses.replace(pretrained, weights=weights), model)
    expected = model.state_dict()
    report = TransferReport(pretrained.source, pretrained.kind, notes=notes)
    matched = {}
    for name, tensor in expected.items():
        if name not in weights:
            report.new.append(name)
        elif tuple(weights[name].shape) != tuple(tensor.shape):
            report.skipped.append((name, list(weights[name].shape), list(tensor.shape)))
        else:
            matched[name] = weights[name]
    report.unused = [name for name in weights if name not in expected]
    if not matched:
        raise CheckpointError(
            f"init_from {pretrained.source}: no weight matches the model by name and shape (source: "
            f"{', '.join(list(weights)[:4]) or 'no tensors'}; model: {', '.join(list(expected)[:4])});"
            " a rename map (transfer.rename) maps source name prefixes to the model's")
    with torch.no_grad():
        for name, tensor in matched.items():
            expected[name].copy_(tensor)  # state_dict tensors share storage with the live parameters
    report.loaded = list(matched)
    parameters = {name for name, _ in model.named_parameters()}
    report.pretrained_parameters = [name for name in report.loaded if name in parameters]
    return report


def check_transfer(config: TransferConfig, build: Callable[[], nn.Module], pretrained: Pretrained | None,
                   adapt: Adapt | None = None) -> dict[str, Any] | None:
    """Before a run writes anything: its freeze patterns match, and what `init_from` would load into a
    scratch model from `build()` (the report, or None without init_from)."""
    if not config.freeze and pretrained is None:
        return None
    model = build()
    match_patterns(config.freeze, [name for name, _ in model.named_parameters()])
    if pretrained is None:
        return None
    return load_pretrained(model, pretrained, rename=config.rename, adapt=adapt).to_dict()


# -- freezing, param groups, unfreezing ----------------------------------------------------------


def match_patterns(patterns: Collection[str], names: list[str]) -> set[str]:
    """Names matched by any pattern; a pattern that matches nothing is a ConfigError listing names."""
    matched: set[str] = set()
    for pattern in patterns:
        hits = [name for name in names if fnmatch.fnmatchcase(name, pattern)]
        if not hits:
            shown = ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
            raise ConfigError(f"--freeze {pattern!r} matches no parameter of the model (its parameters: {shown})")
        matched.update(hits)
    return matched


class TransferPlan:
    """Which parameters are frozen or pretrained, the optimizer groups that follow, and unfreezing."""

    def __init__(self, model: nn.Module, config: TransferConfig, pretrained: Collection[str] = ()) -> None:
        self.model = model
        self.names = [name for name, _ in model.named_parameters()]
        self.frozen = match_patterns(config.freeze, self.names)
        self.pretrained = set(pretrained) & set(self.names)
        self.mult = float(config.backbone_lr_mult)
        self.unfreeze_epoch = config.unfreeze_at - 1 if config.unfreeze_at else None  # 0-based, as loaders count
        self.unfrozen = False
        if self.frozen and len(self.frozen) == len(self.names):
            raise ConfigError(f"--freeze {', '.join(config.freeze)} freezes every parameter: nothing would train")
        if self.mult != 1.0 and not self.pretrained:
            log.warning("backbone_lr_mult %s changes nothing: no parameter was loaded from pretrained weights"
                        " (init_from, or fit(..., pretrained=names))", self.mult)

    @property
    def active(self) -> bool:
        return bool(self.frozen) or (bool(self.pretrained) and self.mult != 1.0)

    def _group(self, names: list[str], lr: float, pretrained: bool, name: str) -> dict[str, Any]:
        parameters = dict(self.model.named_parameters())
        mult = self.mult if pretrained else 1.0
        return {"params": [parameters[n] for n in names], "lr": lr * mult, "lr_mult": mult, "name": name}

    def _groups(self, names: list[str], lr: float, suffix: str = "") -> list[dict[str, Any]]:
        split = self.mult != 1.0
        new = [n for n in names if not (split and n in self.pretrained)]
        pretrained = [n for n in names if split and n in self.pretrained]
        return [self._group(group, lr, is_pretrained, label + suffix)
                for group, is_pretrained, label in ((new, False, "new"), (pretrained, True, "pretrained")) if group]

    def apply(self) -> None:
        """Freeze now: no gradients for frozen parameters."""
        for name, parameter in self.model.named_parameters():
            if name in self.frozen and not self.unfrozen:
                parameter.requires_grad_(False)

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimizer groups of the parameters that train now: new ones at `lr`, pretrained at lr x mult."""
        return self._groups([n for n in self.names if self.unfrozen or n not in self.frozen], lr)

    def hold_frozen_norms(self) -> None:
        """BatchNorm layers of frozen parts back to eval mode (call after every `model.train()`)."""
        if not self.frozen or self.unfrozen:
            return
        for prefix, module in self.model.named_modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                own = [f"{prefix}.{n}" if prefix else n for n, _ in module.named_parameters(recurse=False)]
                if own and all(n in self.frozen for n in own):
                    module.eval()

    def maybe_unfreeze(self, epoch: int, optimizer: torch.optim.Optimizer, scheduler: Any) -> list[str]:
        """At the start of 0-based `epoch`: unfreeze when it is time; the names unfrozen (or [])."""
        if self.unfreeze_epoch is None or self.unfrozen or epoch < self.unfreeze_epoch:
            return []
        self.unfreeze(optimizer, scheduler)
        return sorted(self.frozen)

    def unfreeze(self, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
        """Frozen parameters train from now on, in new groups whose rates follow the schedule."""
        reference = optimizer.param_groups[0]
        for group in self._groups([n for n in self.names if n in self.frozen], 1.0, suffix=" (unfrozen)"):
            ratio = group["lr_mult"] / reference.get("lr_mult", 1.0)
            # Every other hyper-parameter (betas, momentum, weight decay, ...) as the running groups have
            # them now; every rate scaled from the reference group's, wherever the schedule stands.
            added = {k: v for k, v in reference.items() if k != "params"}
            added.update({k: reference[k] * ratio for k in LR_KEYS if k in reference})
            added.update(params=group["params"], lr_mult=group["lr_mult"], name=group["name"])
            optimizer.add_param_group(added)
            if scheduler is not None:
                scheduler.base_lrs.append(scheduler.base_lrs[0] * ratio)
                if hasattr(scheduler, "_last_lr"):
                    scheduler._last_lr.append(added["lr"])
        for parameter in group_parameters(optimizer):
            parameter.requires_grad_(True)
        self.unfrozen = True
        self.model.train(self.model.training)  # frozen BatchNorm layers follow the model's mode again

    def state_dict(self) -> dict[str, Any]:
        return {"unfrozen": self.unfrozen}

    def load_state_dict(self, state: dict[str, Any] | None, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
        """Before the optimizer's own state is loaded: rebuild the groups it was saved with."""
        if state and state.get("unfrozen") and not self.unfrozen:
            self.unfreeze(optimizer, scheduler)


def group_parameters(optimizer: torch.optim.Optimizer) -> list[nn.Parameter]:
    return [p for group in optimizer.param_groups for p in group["params"]]
