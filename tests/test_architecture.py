"""The architecture as checks: the import-linter contracts (.importlinter: layers, no cycles), no module
importing another module's private names, no imports hidden inside functions to dodge a cycle, small
modules, and a README map of the code that names every module."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "torchkeep"
MAX_LINES = 400
MAX_API_LINES = 200
# Imports inside functions that stay: optional heavy extras, each behind its `pip install 'torchkeep[...]'`
# error, and the CLI's subcommands, which import what they run when they run.
LAZY_ALLOWED = {
    ("storage/base.py", "torchkeep.storage.s3"),  # boto3
    ("storage/base.py", "torchkeep.storage.s3_connector"),  # s3torchconnector
    ("data/io.py", "torchkeep.storage.s3"),
    ("checkpoint/manager.py", "torchkeep.checkpoint.distributed"),  # torch.distributed.checkpoint: ~0.7 s to import
    ("track/build.py", "torchkeep.track.tensorboard"),  # tensorboard
    ("track/build.py", "torchkeep.track.wandb"),  # wandb
}


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def name(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def test_import_linter_contracts_are_kept() -> None:
    code = ("import sys; from importlinter.cli import lint_imports;"
            " sys.exit(lint_imports(config_filename='.importlinter', no_cache=True, no_logo=True))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_no_module_imports_a_private_name_of_another() -> None:
    found = []
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("torchkeep"):
                found += [f"{name(path)}:{node.lineno} {node.module}.{alias.name}" for alias in node.names
                          if alias.name.startswith("_") and not alias.name.startswith("__")]
            if isinstance(node, ast.ImportFrom | ast.Import):
                found += [f"{name(path)}:{node.lineno} {alias.name}" for alias in node.names
                          if alias.name.startswith("torchkeep") and any(part.startswith("_") and not part.startswith("__")
                                                                         for part in alias.name.split("."))]
    assert not found, found


def test_no_imports_inside_functions_but_optional_extras_and_cli_subcommands() -> None:
    found = []
    for path in modules():
        if name(path).startswith("cli/"):
            continue
        for function in ast.walk(ast.parse(path.read_text())):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                imported = (node.module or "" if isinstance(node, ast.ImportFrom)
                            else node.names[0].name if isinstance(node, ast.Import) else "")
                if imported.startswith("torchkeep") and (name(path), imported) not in LAZY_ALLOWED:
                    found.append(f"{name(path)}:{node.lineno} imports {imported} inside {function.name}()")
    assert not found, found


def test_modules_stay_small() -> None:
    lines = {name(path): len(path.read_text().splitlines()) for path in modules()}
    assert {k: v for k, v in lines.items() if v > MAX_LINES} == {}
    assert lines["api.py"] <= MAX_API_LINES


def test_the_readme_map_names_every_module_and_only_those() -> None:
    readme = (ROOT / "README.md").read_text()
    code_map = readme.split("## Map of the code", 1)[1].split("\n## ", 1)[0]
    listed = {path for path in re.findall(r"^  ((?:[a-z0-9_]+/)*[a-z0-9_]+\.py)\b", code_map, flags=re.M)
              if not path.startswith(("bench/", "tests/")) and path != "__init__.py"}
    present = {name(path) for path in modules()
               if path.name not in ("__init__.py", "__main__.py") and not name(path).startswith("cli/")}
    assert sorted(present - listed) == [], "modules missing from the README's map of the code"
    assert sorted(listed - present) == [], "the README's map names modules that do not exist"


def test_readme_imports_work() -> None:
    code = "import torchkeep, torchkeep.training.loop; torchkeep.training.loop.fit; torchkeep.train"
    subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", code], check=True)
