"""Old module paths, kept for one release (0.2 removes them): importing one warns and gives the new module.

The training loop package was `torchkeep.train`, a name the function `torchkeep.train` shadowed
(`torchkeep.train.loop` raised AttributeError after `import torchkeep`); it is `torchkeep.training`
now. Other modules moved when the run lifecycle and the predictors got their own packages (run/,
predict/). `MOVED` is the whole list: an old path (a module, or a package with its submodules) and
the module that replaces it. `import torchkeep.train.loop` and `from torchkeep.train.loop import fit`
give the very module `torchkeep.training.loop` (the same classes, not copies), with a
DeprecationWarning naming the new path; the function `torchkeep.train` is untouched.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
import warnings
from typing import Any

MOVED = {
    "torchkeep.train": "torchkeep.training",
    "torchkeep.image_api": "torchkeep.run.images",
    "torchkeep.text_setup": "torchkeep.run.text",
    "torchkeep.custom": "torchkeep.run.own_model",
    "torchkeep.verify": "torchkeep.run.verify",
    "torchkeep.models.tabular_transfer": "torchkeep.run.tables_transfer",
    "torchkeep.models.vision_transfer": "torchkeep.run.images_transfer",
    "torchkeep.tensor_predictor": "torchkeep.predict.own_model",
    "torchkeep.tensor_files": "torchkeep.predict.array_files",
    "torchkeep.export.bundle": "torchkeep.bundle",
    "torchkeep.export.tensors": "torchkeep.export.own_model",
    "torchkeep.serve.tensors": "torchkeep.serve.own_model",
}


def new_name(old: str) -> str | None:
    """The module that replaces `old` (an old module, or a submodule of an old package); None if not moved."""
    for before, after in MOVED.items():
        if old == before or old.startswith(before + "."):
            return after + old[len(before):]
    return None


def warn(old: str, new: str) -> None:
    warnings.warn(f"{old} moved to {new}; the old path goes in torchkeep 0.2", DeprecationWarning, stacklevel=3)


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old module path and hands the import system the new module itself."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        new = new_name(fullname)
        if new is None:
            return None
        found = importlib.util.find_spec(new)
        package = found is not None and found.submodule_search_locations is not None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=package)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        new = new_name(spec.name)
        assert new is not None
        warn(spec.name, new)
        return importlib.import_module(new)

    def exec_module(self, module: types.ModuleType) -> None:
        pass  # the new module is loaded already


class _OldPackage(types.ModuleType):
    """`torchkeep.train` in sys.modules: the root's attribute of that name stays the function."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # inspect, pickle and friends probe dunders: not a use of the old path
            raise AttributeError(name)
        new = new_name(self.__name__)
        assert new is not None
        warn(f"{self.__name__}.{name}", f"{new}.{name}")
        return getattr(importlib.import_module(new), name)


def install() -> None:
    """Called once by torchkeep/__init__.py: the finder, and the old package that a submodule of the
    same name as a function (`train`) needs in sys.modules so the import system never sets it on the root."""
    if not any(isinstance(finder, _Alias) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Alias())
    if "torchkeep.train" not in sys.modules:
        package = _OldPackage("torchkeep.train", "deprecated: torchkeep.training")
        package.__path__ = []
        sys.modules["torchkeep.train"] = package
