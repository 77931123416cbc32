"""A user's own nn.Module class, recorded by import path and rebuilt from it.

A bundle of such a model names the class (`package.module:QualName`) and its constructor
arguments (plain JSON) beside its safetensors weights. Loading the bundle imports that module,
which runs the module's top-level code as any import does; nothing is ever unpickled.

Where the arguments come from, in order:
1. `model_args={...}` given to `torchkeep.fit` (checked against the constructor's signature);
2. a constructor that takes no arguments (the seeds' `NeuralNetwork()`): `{}`;
3. otherwise each parameter's value is read from the model's attribute of the same name (the common
   `self.hidden = hidden`), else its default. These are a guess, so they are kept only when a model
   rebuilt from them (on the meta device, no memory used) has exactly the trained model's tensor
   names and shapes; a parameter taken from its default is named in a warning.
When they cannot be known, the bundle records `args: null`: its weights are still there, and the
class-free exports (TorchScript, torch.export, ONNX) run without the class.

An `nn.Sequential` (built from modules, not from plain values) records its children instead, each as
its own `{"import": ..., "args": ...}` found the same way (`nn.Linear(20, 8)` -> in_features 20,
out_features 8), under the key "*": `nn.Sequential(nn.Linear(20, 8), nn.ReLU(), nn.Linear(8, 2))`
is rebuilt where torch is, with no class of the user's.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
from typing import Any

import torch
from torch import nn

from torchkeep.errors import CheckpointError, ConfigError

log = logging.getLogger("torchkeep")

ARCHITECTURE = "python"
EXPORT_HINT = ("a class-free export, made where the class is importable (torchkeep export RUN --format"
               " pt2|onnx|torchscript), runs without it")


def import_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def import_problem(cls: type) -> str | None:
    """Why `cls` cannot be imported by its path in another process, or None."""
    if "<locals>" in cls.__qualname__:
        return f"{cls.__qualname__} is defined inside a function"
    if cls.__module__ == "__main__":
        return f"{cls.__qualname__} is defined in __main__ (the script being run)"
    return None


def resolve(path: str) -> type:
    """The class named `module:QualName`; one clear line when it cannot be imported."""
    module_name, _, qualname = path.partition(":")
    try:
        found: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as error:
        raise CheckpointError(f"cannot import the model class {path} ({error}): torchkeep.load rebuilds a model only"
                              f" where its class is importable (put its module on PYTHONPATH); {EXPORT_HINT}") from None
    if not (isinstance(found, type) and issubclass(found, nn.Module)):
        raise CheckpointError(f"{path} is not an nn.Module class (found {type(found).__name__})")
    return found


CHILDREN = "*"  # the args key of an nn.Sequential's children, each a {"import", "args"} spec


def rebuild(spec: dict[str, Any]) -> nn.Module:
    """The model of a bundle's `{"import": ..., "args": ...}`, with freshly initialised weights."""
    if spec.get("args") is None:
        raise CheckpointError(f"the bundle does not record the constructor arguments of {spec['import']}, so it cannot"
                              f" be rebuilt (train it with torchkeep.fit(..., model_args={{...}})); {EXPORT_HINT}")
    cls = resolve(spec["import"])
    args = dict(spec["args"])
    children = [rebuild(child) for child in args.pop(CHILDREN, [])]
    try:
        return cls(*children, **args)
    except TypeError as error:
        raise CheckpointError(f"{spec['import']}(**{json.dumps(spec['args'])}) fails: {error}") from None


def _json_value(value: Any) -> bool:
    if isinstance(value, (nn.Module, torch.Tensor)):
        return False
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def _rebuilds(model: nn.Module, args: dict[str, Any]) -> str | None:
    """None when `type(model)(**args)` has the trained model's tensor names and shapes, else why not."""
    try:
        with torch.device("meta"):
            rebuilt = rebuild({"import": import_path(type(model)), "args": args}) if CHILDREN in args \
                else type(model)(**args)
    except Exception as error:  # noqa: BLE001 (the user's constructor: anything it raises means "not this way")
        return f"{type(model).__name__}(**{args}) raised {type(error).__name__}: {error}"
    if _shapes(rebuilt) != _shapes(model):
        return f"{type(model).__name__}(**{args}) has other tensors or shapes than the trained model"
    return None


def _sequential_args(model: nn.Sequential) -> dict[str, Any] | None:
    """{"*": [child specs]} when every child is rebuildable from plain values, else None (and a warning)."""
    children = []
    for index, child in enumerate(model):
        args = constructor_args(child, None, quiet=True)
        if args is None or import_problem(type(child)):
            log.warning("%s (child %d of the nn.Sequential) cannot be rebuilt from plain values: the bundle keeps its"
                        " weights, and %s", type(child).__name__, index, EXPORT_HINT)
            return None
        children.append({"import": import_path(type(child)), "args": args})
    args = {CHILDREN: children}
    if problem := _rebuilds(model, args):
        log.warning("the nn.Sequential cannot be rebuilt from its children (%s); %s", problem, EXPORT_HINT)
        return None
    return args


def constructor_args(model: nn.Module, given: dict[str, Any] | None, *, quiet: bool = False) -> dict[str, Any] | None:
    """The JSON constructor arguments that rebuild `model` (see the module docstring), or None.
    `quiet`: no warnings (a child of an nn.Sequential, checked again as part of the whole)."""
    cls = type(model)
    if given is None and cls is nn.Sequential:
        return _sequential_args(model)
    name = cls.__name__
    signature = inspect.signature(cls.__init__)
    parameters = [p for p in list(signature.parameters.values())[1:]
                  if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if given is not None:
        if not isinstance(given, dict) or not _json_value(given):
            raise ConfigError(f"model_args must be a dict of JSON values (numbers, strings, lists, dicts); got {given!r}")
        try:
            signature.bind(None, **given)
        except TypeError as error:
            raise ConfigError(f"model_args do not fit {name}.__init__{signature}: {error}") from None
        if problem := _rebuilds(model, given):
            raise ConfigError(f"model_args do not rebuild the model: {problem}")
        return json.loads(json.dumps(given))
    if not parameters:
        return {}
    args: dict[str, Any] = {}
    assumed, unknown = [], []
    for parameter in parameters:
        value = getattr(model, parameter.name, inspect.Parameter.empty)
        if value is not inspect.Parameter.empty and _json_value(value):
            args[parameter.name] = value
        elif parameter.default is not inspect.Parameter.empty and _json_value(parameter.default):
            args[parameter.name] = parameter.default
            assumed.append(parameter.name)
        else:
            unknown.append(parameter.name)
    problem = f"no value found for {', '.join(unknown)}" if unknown else _rebuilds(model, args)
    if problem and quiet:
        return None
    if problem:
        log.warning("the constructor arguments of %s are not known (%s): pass model_args={...} to torchkeep.fit so"
                    " that torchkeep.load can rebuild it; the bundle keeps its weights, and %s", name, problem,
                    EXPORT_HINT)
        return None
    if assumed and not quiet:
        log.warning("%s: assuming the default value of %s (not found as attributes of the model); pass"
                    " model_args={...} to torchkeep.fit if it was built otherwise", name, ", ".join(assumed))
    return json.loads(json.dumps(args))
