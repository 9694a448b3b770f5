"""Every manifest under examples/ is valid: offline (the models `cogwork run` uses) and by the
apiserver's own schema and CEL code (celcheck), so what the docs tell people to apply applies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from cogwork.api.labeljob import LabelJob
from cogwork.api.trainjob import TrainJob
from cogwork.api.tunejob import TuneJob
from pydantic import BaseModel
from trainjob_cases import assert_apiserver_decides, needs_celcheck

ROOT = Path(__file__).resolve().parents[3]
MODELS: dict[str, type[BaseModel]] = {"TrainJob": TrainJob, "TuneJob": TuneJob,
                                      "LabelJob": LabelJob}
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def manifests() -> list[tuple[str, dict[str, Any]]]:
    """Cogwork's documents of every example (an example may also hold a claim or a Secret)."""
    return [(f"{path.name}:{doc['metadata']['name']}", doc) for path in EXAMPLES
            for doc in yaml.safe_load_all(path.read_text())
            if doc and doc.get("apiVersion", "").startswith("cogwork.dev/")]


def test_there_are_examples_of_every_kind() -> None:
    assert {doc["kind"] for _, doc in manifests()} == set(MODELS)


@pytest.mark.parametrize(("name", "doc"), manifests(), ids=[n for n, _ in manifests()])
def test_example_validates_offline(name: str, doc: dict[str, Any]) -> None:
    MODELS[doc["kind"]].model_validate({**doc, "metadata": {"namespace": "default",
                                                            **doc["metadata"]}})


@needs_celcheck
def test_apiserver_admits_every_example(tmp_path: Path) -> None:
    for kind in MODELS:
        cases = [{"name": name, "new": doc, "old": None, "expect": []}
                 for name, doc in manifests() if doc["kind"] == kind]
        assert_apiserver_decides(ROOT / "crds" / f"{kind.lower()}s.cogwork.dev.yaml", cases,
                                 tmp_path)
