"""Image name -> the environment a container runs in, as a container runtime would pull it.

An image is a directory with `bin/` (its python, put first on PATH) and, optionally,
`workspace/` (the image's own files, bind-mounted read-only at /workspace and the default
working directory). Images not in the map run with the default environment (the project's, where
the operator's trainer image code is importable), so what is not in an image is not importable
in its containers.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from .runtime import Mount

WORKSPACE = "/workspace"
REPO_ROOT = Path(__file__).resolve().parents[4]


def host_paths() -> list[Path]:
    """What every image's files live in on this host: the repository (its venv, the images
    under .build, the source of the editable install) and the Python the venvs link to."""
    return [REPO_ROOT, Path(sys.prefix), Path(sys.base_prefix)]


@dataclass(frozen=True)
class ImageEnv:
    path_prefix: str
    workspace: Path | None = None

    def mounts(self) -> list[Mount]:
        if self.workspace is None:
            return []
        return [Mount(self.workspace, WORKSPACE, read_only=True)]

    def workdir(self, spec_workdir: str | None) -> str | None:
        return spec_workdir or (WORKSPACE if self.workspace is not None else None)


@dataclass
class ImageMap:
    default: ImageEnv
    images: dict[str, ImageEnv] = field(default_factory=dict)

    @classmethod
    def parse(cls, items: list[str], default_prefix: str) -> ImageMap:
        """Items `IMAGE=DIR`, as given to `--image`."""
        images: dict[str, ImageEnv] = {}
        for item in items:
            name, sep, directory = item.partition("=")
            if not sep or not name or not directory:
                raise ValueError(f"--image wants IMAGE=DIR, got {item!r}")
            root = Path(directory).resolve()
            workspace = root / "workspace"
            images[name] = ImageEnv(str(root / "bin"),
                                    workspace.resolve() if workspace.exists() else None)
        return cls(ImageEnv(default_prefix), images)

    def lookup(self, image: str) -> ImageEnv:
        return self.images.get(image, self.default)
