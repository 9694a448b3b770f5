"""Images of the local cluster: environments the node agent runs containers in.

`bare` is what a team's own training image holds: a Python with torch and numpy and the team's
code (examples/user-code at /workspace), nothing of Cogwork: `import cogwork`,
`import cogwork_trainer` and `import kopf` fail there. It is a venv whose site-packages link the
distributions of torch and numpy (with their requirements) from the project's environment, so
it costs no download and seconds to build; it is rebuilt when missing. `hf` is the same with
Hugging Face Transformers (and accelerate, which its Trainer needs) added: a team's HF image;
`lightning` the same with PyTorch Lightning.
"""

from __future__ import annotations

import importlib.metadata as md
import subprocess
import sys
import sysconfig
from pathlib import Path

from packaging.requirements import Requirement

from .controlplane import REPO_ROOT

BARE_IMAGE = "cogwork.test/bare:1"
HF_IMAGE = "cogwork.test/hf:1"
USER_CODE = REPO_ROOT / "examples/user-code"
IMAGES_DIR = REPO_ROOT / ".build/images"
BARE_PACKAGES = ("torch", "numpy")
HF_PACKAGES = (*BARE_PACKAGES, "transformers", "accelerate")
LIGHTNING_IMAGE = "cogwork.test/lightning:1"
LIGHTNING_PACKAGES = (*BARE_PACKAGES, "lightning")


def closure(roots: tuple[str, ...]) -> list[md.Distribution]:
    """The installed distributions `roots` need, following requirements whose markers hold."""
    seen: dict[str, md.Distribution] = {}
    todo = list(roots)
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue  # an optional requirement that is not installed
        seen[name] = dist
        for raw in dist.requires or []:
            req = Requirement(raw)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return list(seen.values())


def _top_level(dist: md.Distribution, site: Path) -> set[str]:
    """First path components of a distribution's files inside site-packages."""
    names: set[str] = set()
    for file in dist.files or []:
        parts = Path(file).parts
        if parts and parts[0] != ".." and parts[0] != "__pycache__":
            names.add(parts[0])
    return {n for n in names if (site / n).exists()}


def build_bare(root: Path = IMAGES_DIR / "bare", packages: tuple[str, ...] = BARE_PACKAGES
               ) -> Path:
    """Create (once) an image's environment at `root` with `packages` and their requirements
    from the project's environment, and the user's code at /workspace; returns `root`."""
    marker = root / ".built"
    if marker.exists():
        return root
    if not (root / "bin/python").exists():
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    site = Path(sysconfig.get_paths()["purelib"])
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    target = root / "lib" / version / "site-packages"
    for dist in closure(packages):
        for name in _top_level(dist, site):
            link = target / name
            if not link.exists() and not link.is_symlink():
                link.symlink_to(site / name)
    workspace = root / "workspace"
    if not workspace.is_symlink():
        workspace.symlink_to(USER_CODE, target_is_directory=True)
    marker.write_text("ok\n")
    return root


def image_args() -> list[str]:
    """The node agent's `--image` arguments for every image of the local cluster."""
    args = ["--image", f"{BARE_IMAGE}={build_bare()}"]
    for image, directory, packages in ((HF_IMAGE, "hf", HF_PACKAGES),
                                       (LIGHTNING_IMAGE, "lightning", LIGHTNING_PACKAGES)):
        if all(installed(p) for p in packages):  # dev extra; without it their tests skip
            args += ["--image", f"{image}={build_bare(IMAGES_DIR / directory, packages)}"]
    return args


def installed(name: str) -> bool:
    try:
        md.distribution(name)
    except md.PackageNotFoundError:
        return False
    return True
