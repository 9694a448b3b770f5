"""`python -m cogwork_sdk.install DIR`: the launcher init container's command.

Copies this package (the SDK and the torch-only launcher) into DIR/cogwork_sdk and a bootstrap
DIR/launch.py, in an emptyDir that the worker container of a user's image mounts: torchrun there
exits with the failing worker's exit code, keeps the rendezvous open and reports stdout metrics,
and `import cogwork_sdk` works in the user's script, with nothing of Cogwork installed in the
image (docs/pod-contract.md). Imports nothing but the standard library.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from . import contract

PACKAGE = Path(__file__).resolve().parent

# The worker runs `python DIR/launch.py <torchrun args>`. It puts DIR first on sys.path and on
# PYTHONPATH (kept, not replaced: the image's own PYTHONPATH still applies), so the workers
# torchrun starts can import cogwork_sdk too.
BOOTSTRAP = '''\
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)

from cogwork_sdk.launch import main

sys.exit(main())
'''


def install(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copytree(PACKAGE, directory / PACKAGE.name, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    launcher = directory / contract.LAUNCHER_FILE
    launcher.write_text(BOOTSTRAP)
    return launcher


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m cogwork_sdk.install DIR", file=sys.stderr)
        return 2
    print(f"installed {install(Path(args[0]))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
