"""`python -m cogwork_trainer.labeling.install_scorer DIR`: the scorer init container's command.

A LabelJob with spec.model.entrypoint scores in the user's image (spec.model.image), which has
python, numpy, torch and the user's code but nothing of Cogwork. This copies the score step,
`cogwork_trainer.labeling.prelabel` with every module of this package it imports (found by
reading their import statements; numpy, torch and the standard library only) and the modules
of cogwork_sdk they import (the shared pod contract), into DIR/cogwork_trainer and
DIR/cogwork_sdk, plus a bootstrap DIR/run.py. The score container mounts DIR (an emptyDir)
and runs `python DIR/run.py -m cogwork_trainer.labeling.prelabel score ...`: the same code as
in the labeling image, with nothing installed in the user's. Imports only the standard
library (and cogwork_sdk, to find it).
"""

from __future__ import annotations

import ast
import shutil
import sys
from pathlib import Path

import cogwork_sdk

PACKAGE = "cogwork_trainer"
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # .../cogwork_trainer
# The packages whose modules are copied: this one and the SDK it shares with the operator.
PACKAGE_DIRS = {PACKAGE: PACKAGE_DIR, "cogwork_sdk": Path(cogwork_sdk.__file__).resolve().parent}
ENTRY = f"{PACKAGE}.labeling.prelabel"
BOOTSTRAP_FILE = "run.py"

# `python DIR/run.py -m MODULE ARGS...` behaves as `python -m MODULE ARGS...` with DIR first on
# sys.path: `python run.py` put DIR where `python -m` puts the working directory, so that goes
# back right after it (the user's module is imported from there); the image's PYTHONPATH stays.
BOOTSTRAP = '''\
import os
import runpy
import sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path[0:1] = [here, os.getcwd()]
if len(sys.argv) < 3 or sys.argv[1] != "-m":
    sys.exit("usage: python run.py -m MODULE [ARGS...]")
module = sys.argv[2]
sys.argv = [module, *sys.argv[3:]]
runpy.run_module(module, run_name="__main__", alter_sys=True)
'''


def _file(module: str) -> Path | None:
    """The source file of a module of a copied package; None when it is not one."""
    parts = module.split(".")
    if parts[0] not in PACKAGE_DIRS:
        return None
    base = PACKAGE_DIRS[parts[0]].joinpath(*parts[1:])
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _imports(module: str, path: Path) -> set[str]:
    """Every module name `path` may import (absolute, relative, inside functions too)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from . import x`
    return names


def closure(entry: str = ENTRY) -> dict[str, Path]:
    """Module name -> file of `entry`, every module of this package it imports (transitively)
    and the packages (__init__.py) that hold them."""
    found: dict[str, Path] = {}
    todo = [entry]
    while todo:
        module = todo.pop()
        path = _file(module)
        if module in found or path is None:
            continue
        found[module] = path
        parent = module.rpartition(".")[0]
        todo += [parent] if parent else []
        todo += sorted(_imports(module, path))
    return found


def install(directory: Path) -> Path:
    """Copy the score step into `directory`; returns the bootstrap's path."""
    for module, path in closure().items():
        package = module.split(".")[0]
        target = directory / package / path.relative_to(PACKAGE_DIRS[package])
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    bootstrap = directory / BOOTSTRAP_FILE
    bootstrap.write_text(BOOTSTRAP)
    return bootstrap


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(f"usage: python -m {PACKAGE}.labeling.install_scorer DIR", file=sys.stderr)
        return 2
    directory = Path(args[0])
    bootstrap = install(directory)
    print(f"installed {len(closure())} module(s) of {ENTRY} and {bootstrap}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
