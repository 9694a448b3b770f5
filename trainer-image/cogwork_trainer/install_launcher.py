"""`python -m cogwork_trainer.install_launcher DIR`: the launcher init container's command.

Copies the torch-only launcher (launch.py) into DIR, an emptyDir the worker container of a
user's image mounts, so torchrun there exits with the failing worker's exit code and keeps the
rendezvous open without anything of Cogwork installed in the image (docs/pod-contract.md).
Imports nothing but the standard library: it runs before any worker, in the trainer image.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

LAUNCHER = Path(__file__).with_name("launch.py")


def install(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / LAUNCHER.name
    shutil.copyfile(LAUNCHER, target)
    return target


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m cogwork_trainer.install_launcher DIR", file=sys.stderr)
        return 2
    print(f"installed {install(Path(args[0]))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
