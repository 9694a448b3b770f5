"""LabelJob API: defaults, bad specs rejected naming the field (offline and by the CRD's own
rules), the generated CRD's names, columns and rules."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cogwork.api.crdgen import render_crd
from cogwork.api.labeljob import LABELJOB_RESOURCE, LabelJob, LabelJobStatus
from pydantic import ValidationError
from trainjob_cases import (
    MULTIKUEUE,
    NOT_DOMAIN_PREFIXED,
    assert_apiserver_decides,
    needs_celcheck,
)

CRDS = Path(__file__).resolve().parents[3] / "crds"


def labeljob(**spec: Any) -> dict[str, Any]:
    """A valid minimal LabelJob with spec keys overridden (None removes a key)."""
    base: dict[str, Any] = {
        "model": {"fromTrainJob": "digits"},
        "pool": {"dataset": "digits"},
        "seed": {"count": 100},
        "autoAccept": {"targetPrecision": "0.95", "validation": {"humanBudget": 200}},
    }
    for key, value in spec.items():
        if value is None:
            base.pop(key, None)
        else:
            base[key] = value
    return {"apiVersion": "cogwork.dev/v1alpha1", "kind": "LabelJob",
            "metadata": {"name": "digits-labels", "namespace": "default"}, "spec": base}


POOL_FILE = {"path": "pool.npz", "claimName": "data"}
OWN_POOL = {"pool": POOL_FILE, "seed": {"path": "seed.csv"},
            "autoAccept": {"validation": {"path": "val.csv"}}}
ENTRYPOINT = {"entrypoint": "team.scoring:predict", "image": "registry.example/team:7"}
# The user's model (spec.model.format, outputs, classes, entrypoint, image).
MODEL_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("torchscript file in a claim", {"model": {"path": "m/digits.ts", "claimName": "models",
                                               "format": "torchscript"}}, ""),
    ("export file with probabilities and class names", {"model": {
        "path": "m.pt2", "claimName": "models", "format": "export", "outputs": "probabilities",
        "classes": ["cat", "dog"]}}, ""),
    ("torchscript file a script TrainJob wrote", {"model": {
        "fromTrainJob": "script", "format": "torchscript", "path": "export/model.ts"}}, ""),
    ("explicit cogwork format", {"model": {"fromTrainJob": "a", "format": "cogwork"}}, ""),
    ("entrypoint in the user's image", {"model": {**ENTRYPOINT, "classes": ["a", "b"]},
                                        **OWN_POOL}, ""),
    ("unknown format", {"model": {"path": "m.onnx", "format": "onnx"}}, "spec.model.format"),
    ("unknown outputs", {"model": {"path": "m.ts", "format": "torchscript",
                                   "outputs": "scores"}}, "spec.model.outputs"),
    ("TrainJob torchscript without a path", {"model": {"fromTrainJob": "a",
                                                       "format": "torchscript"}},
     "spec.model.format torchscript or export with spec.model.fromTrainJob needs "
     "spec.model.path"),
    ("TrainJob file with a claim of its own", {"model": {
        "fromTrainJob": "a", "format": "export", "path": "m.pt2", "claimName": "models"}},
     "spec.model.claimName requires spec.model.path, and not spec.model.fromTrainJob"),
    ("claim without a path", {"model": {"fromTrainJob": "a", "claimName": "models"}},
     "spec.model.claimName requires spec.model.path"),
    ("entrypoint without an image", {"model": {"entrypoint": "team.scoring:predict"},
                                     **OWN_POOL},
     "spec.model.entrypoint and spec.model.image must be set together"),
    ("image without an entrypoint", {"model": {"path": "m.ts", "format": "torchscript",
                                               "image": "registry.example/team:7"}},
     "spec.model.entrypoint and spec.model.image must be set together"),
    ("entrypoint with a file", {"model": {**ENTRYPOINT, "path": "m.ts"}, **OWN_POOL},
     "spec.model.entrypoint cannot be combined with spec.model.fromTrainJob or spec.model.path"),
    ("entrypoint with a format", {"model": {**ENTRYPOINT, "format": "torchscript"},
                                  **OWN_POOL},
     "spec.model.format describes a model file: leave it out with spec.model.entrypoint"),
    ("entrypoint that is no function", {"model": {**ENTRYPOINT, "entrypoint": "team.scoring"},
                                        **OWN_POOL}, "spec.model.entrypoint"),
    ("entrypoint on a bundled dataset", {"model": ENTRYPOINT},
     "spec.model.entrypoint needs spec.pool.path"),
    ("classes of a cogwork model", {"model": {"path": "model.pt", "classes": ["a"]}},
     "spec.model.classes is for torchscript, export and entrypoint models"),
    ("outputs of a cogwork model", {"model": {"fromTrainJob": "a", "outputs": "logits"}},
     "spec.model.outputs is for torchscript, export and entrypoint models"),
]
# (name, spec overrides, substring of the error naming the field); "" = valid.
CREATE_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("minimal", {}, ""),
    ("own pool with label files", {"pool": POOL_FILE, "seed": {"path": "seed.csv"},
                                   "autoAccept": {"validation": {"path": "val.csv"}}}, ""),
    ("model path", {"model": {"path": "models/model.pt", "claimName": "models"}}, ""),
    ("every strategy is an enum value", {"review": {"strategy": "coreset"}}, ""),
    ("target precision above 1", {"autoAccept": {"targetPrecision": "1.2",
                                                 "validation": {"humanBudget": 10}}},
     "spec.autoAccept.targetPrecision must be a decimal strictly between 0 and 1"),
    ("target precision of exactly 1", {"autoAccept": {"targetPrecision": "1",
                                                      "validation": {"humanBudget": 10}}},
     "spec.autoAccept.targetPrecision must be a decimal strictly between 0 and 1"),
    ("confidence 0", {"autoAccept": {"confidence": "0.0", "validation": {"humanBudget": 10}}},
     "spec.autoAccept.confidence must be a decimal strictly between 0 and 1"),
    ("unknown strategy", {"review": {"strategy": "vibes"}}, "spec.review.strategy"),
    ("missing pool", {"pool": None}, "spec.pool"),
    ("missing model", {"model": None}, "spec.model"),
    ("two pool sources", {"pool": {"dataset": "digits", "path": "p.npz"}},
     "exactly one of spec.pool.dataset or spec.pool.path must be set"),
    ("a TrainJob's model.pt takes no path", {"model": {"fromTrainJob": "a", "path": "m.pt"}},
     "spec.model.path with spec.model.fromTrainJob needs spec.model.format torchscript or "
     "export"),
    ("no model source", {"model": {"version": "v1"}},
     "spec.model needs one of spec.model.fromTrainJob, spec.model.path or "
     "spec.model.entrypoint"),
    *MODEL_CASES,
    ("seed count on own pool", {"pool": POOL_FILE},
     "spec.seed.count needs spec.pool.dataset"),
    ("human budget on own pool", {"pool": POOL_FILE, "seed": None},
     "spec.autoAccept.validation.humanBudget needs spec.pool.dataset"),
    ("budget below one batch", {"review": {"batchSize": 100, "maxHumanLabels": 50}},
     "spec.review.maxHumanLabels must be at least spec.review.batchSize"),
    ("one fold", {"labelErrors": {"folds": 1}}, "spec.labelErrors.folds"),
    ("label studio without secret", {"sink": {"labelStudio": {"url": "http://ls:8080",
                                                              "project": 1}}},
     "spec.sink.labelStudio.secretRef"),
    ("too many replicas", {"inference": {"replicas": 1000}}, "spec.inference.replicas"),
    ("review rounds on a demo pool", {"review": {"maxRounds": 3, "maxHumanLabels": 300}}, ""),
    ("review rounds through Label Studio", {
        "pool": POOL_FILE, "seed": {"path": "seed.csv"},
        "autoAccept": {"validation": {"path": "val.csv"}}, "review": {"maxRounds": 2},
        "sink": {"labelStudio": {"url": "http://ls:8080", "project": 1,
                                 "secretRef": {"name": "ls"}}}}, ""),
    ("review rounds with a model file", {"model": {"path": "m.pt"}, "review": {"maxRounds": 2}},
     "spec.review.maxRounds > 1 needs spec.model.fromTrainJob"),
    ("review rounds with nobody to label", {
        "pool": POOL_FILE, "seed": {"path": "seed.csv"},
        "autoAccept": {"validation": {"path": "val.csv"}}, "review": {"maxRounds": 2}},
     "spec.review.maxRounds > 1 needs spec.sink.labelStudio"),
    ("managed by MultiKueue", {"managedBy": MULTIKUEUE}, ""),
    ("managedBy too long", {"managedBy": "example.com/" + "x" * 52}, "spec.managedBy"),
    ("managedBy without a domain", {"managedBy": "multikueue"}, NOT_DOMAIN_PREFIXED),
]


@pytest.mark.parametrize(("name", "spec", "error"), CREATE_CASES, ids=[c[0] for c in CREATE_CASES])
def test_offline_validation_rejects_bad_specs_naming_the_field(name: str, spec: dict[str, Any],
                                                               error: str) -> None:
    if not error:
        LabelJob.model_validate(labeljob(**spec))
        return
    with pytest.raises(ValidationError) as raised:
        LabelJob.model_validate(labeljob(**spec))
    # Our rules carry the CEL message; schema errors name the field (spec.review.strategy).
    assert error in str(raised.value), str(raised.value)


def test_repeated_class_names_are_rejected() -> None:
    # The apiserver rejects them through x-kubernetes-list-type: set (celcheck runs the schema
    # and CEL, not list-type validation); offline the validator does.
    model = {"path": "m.ts", "format": "torchscript", "classes": ["a", "a"]}
    with pytest.raises(ValidationError, match=r"spec\.model\.classes must be unique"):
        LabelJob.model_validate(labeljob(model=model))


def test_defaults() -> None:
    spec = LabelJob.model_validate(labeljob()).spec
    assert spec.inference.replicas == 1 and spec.inference.batch_size == 1024
    assert spec.review.strategy == "margin" and spec.review.max_rounds == 1
    assert spec.label_errors.enabled and spec.label_errors.folds == 5
    assert spec.auto_accept is not None and spec.auto_accept.confidence == "0.95"
    assert spec.output.path == "labels" and spec.output.claim_name is None


def test_status_reads_what_the_merge_step_reports() -> None:
    status = LabelJobStatus.model_validate({
        "phase": "Succeeded", "counts": {"total": 1797, "autoAccepted": 900},
        "threshold": 0.98, "certifiedLowerBound": 0.951, "futureField": 1})
    assert status.counts is not None and status.counts.auto_accepted == 900
    assert status.certified_lower_bound == 0.951


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return render_crd(LABELJOB_RESOURCE)


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")


def spec_schema(crd: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema["properties"]["spec"]  # type: ignore[no-any-return]


def test_crd_names_columns_and_category(crd: dict[str, Any]) -> None:
    names = crd["spec"]["names"]
    assert names["kind"] == "LabelJob" and names["categories"] == ["cogwork"]
    assert names["shortNames"] == ["cwlabel", "cwlj"]
    columns = {c["name"]: c["jsonPath"] for c in crd["spec"]["versions"][0][
        "additionalPrinterColumns"]}
    assert columns == {"Phase": ".status.phase", "Predicted": ".status.predictedText",
                       "Auto": ".status.counts.autoAccepted",
                       "Review": ".status.counts.routedToReview",
                       "Precision>=": ".status.certifiedLowerBound",
                       "Round": ".status.round", "Age": ".metadata.creationTimestamp"}


def test_every_spec_field_is_documented_and_typed(crd: dict[str, Any]) -> None:
    text = json.dumps(crd)
    assert "$ref" not in text and '"null"' not in text
    for path, node in walk(spec_schema(crd), "spec"):
        if not path.endswith("[]"):
            assert node.get("description"), f"{path} has no description"
        assert node.get("type") or node.get("x-kubernetes-int-or-string"), path


def test_schema_carries_the_enums_and_required_fields(crd: dict[str, Any]) -> None:
    spec = spec_schema(crd)
    assert set(spec["required"]) == {"model", "pool"}
    review = spec["properties"]["review"]
    assert review["properties"]["strategy"]["enum"] == [
        "margin", "entropy", "leastConfidence", "coreset", "random"]
    assert review["default"]["strategy"] == "margin"
    assert spec["properties"]["autoAccept"]["properties"]["targetPrecision"]["type"] == "string"


def test_every_spec_field_is_either_mutable_or_immutable(crd: dict[str, Any]) -> None:
    spec = spec_schema(crd)
    guarded = {r["fieldPath"] for r in spec["x-kubernetes-validations"] if "oldSelf" in r["rule"]}
    mutable = {".suspend", ".review", ".ttlSecondsAfterFinished"}
    assert guarded == {f".{name}" for name in spec["properties"]} - mutable


@needs_celcheck
def test_apiserver_validation_decides_every_case_the_same_way(tmp_path: Path) -> None:
    cases = [{"name": name, "new": labeljob(**spec), "old": None,
              "expect": [error] if error else []} for name, spec, error in CREATE_CASES]
    old = labeljob()
    changed = copy.deepcopy(old)
    changed["spec"]["pool"] = {"dataset": "digits", "idField": "other"}
    more_rounds = copy.deepcopy(old)
    more_rounds["spec"]["review"] = {"maxRounds": 3}
    cases += [
        {"name": "pool is immutable", "new": changed, "old": old,
         "expect": ["spec.pool is immutable"]},
        {"name": "review may change", "new": more_rounds, "old": old, "expect": []},
    ]
    managed = labeljob(managedBy=MULTIKUEUE)
    cases += [{"name": f"managedBy {name}", "new": new, "old": old_, "expect": expect}
              for name, old_, new, expect in (
                  ("kept while review changes", managed,
                   labeljob(managedBy=MULTIKUEUE, review={"maxRounds": 3}), []),
                  ("changed", managed, labeljob(managedBy="example.com/other"),
                   ["spec.managedBy is immutable"]),
                  ("added", old, managed, ["spec.managedBy is immutable"]),
                  ("removed", managed, old, ["spec.managedBy is immutable"]))]
    assert_apiserver_decides(CRDS / "labeljobs.cogwork.dev.yaml", cases, tmp_path)
