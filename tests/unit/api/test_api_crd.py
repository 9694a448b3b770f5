"""The generated CRD: structural, documented, validated, fresh in crds/, and (when the Go checker
is available) accepted by the apiserver's own CRD validation with every admission case."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cogwork.api.common import CustomResource
from cogwork.api.crdgen import (
    RESOURCES,
    SchemaError,
    render_crd,
    render_crds,
    stale_files,
    structural_schema,
)
from cogwork.api.trainjob import TRAINJOB_RESOURCE
from pydantic import BaseModel
from trainjob_cases import ALL_CASES, assert_apiserver_decides, needs_celcheck

REPO = Path(__file__).resolve().parents[3]
CRDS = REPO / "crds"


@pytest.fixture(scope="module")
def crd() -> dict[str, Any]:
    return render_crd(TRAINJOB_RESOURCE)


def schema_of(crd: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def test_crds_directory_is_fresh() -> None:
    assert stale_files(CRDS) == [], "run: python -m cogwork.api.crdgen --write crds/"


def test_every_kind_has_a_file() -> None:
    assert sorted(render_crds()) == sorted(f"{r.plural}.cogwork.dev.yaml" for r in RESOURCES)


def test_schema_is_structural(crd: dict[str, Any]) -> None:
    text = json.dumps(crd)
    assert "$ref" not in text and "$defs" not in text and '"null"' not in text
    for path, node in walk(schema_of(crd)):
        if node.get("x-kubernetes-int-or-string"):
            assert "type" not in node and node["anyOf"] == [{"type": "integer"},
                                                            {"type": "string"}], path
            continue
        assert node.get("type") in {"object", "array", "string", "integer", "number",
                                    "boolean"}, path
        assert "anyOf" not in node and "allOf" not in node and "title" not in node, path
        if "properties" in node:
            assert "additionalProperties" not in node, path


def test_every_spec_field_is_documented(crd: dict[str, Any]) -> None:
    spec = schema_of(crd)["properties"]["spec"]
    for path, node in walk(spec, "spec"):
        if path.endswith(("[]", "{}")):
            continue  # list items and map values inherit their field's description
        assert node.get("description"), f"{path} has no description (kubectl explain)"


def test_defaults_and_constraints_reach_the_schema(crd: dict[str, Any]) -> None:
    spec = schema_of(crd)["properties"]["spec"]["properties"]
    assert spec["image"]["default"] == "ghcr.io/cogwork/trainer:0.1.0"
    assert spec["nodes"]["default"] == {"min": 1, "max": 1}
    assert spec["checkpoint"]["properties"]["everySteps"]["default"] == 50
    assert spec["resources"]["properties"]["gpu"]["minimum"] == 0
    assert spec["task"]["properties"]["name"]["enum"] == ["image-classification"]
    assert spec["task"]["properties"]["optimizer"]["enum"] == ["sgd", "adam", "adamw"]
    assert spec["data"]["properties"]["dataset"]["enum"] == ["digits"]
    assert spec["env"]["x-kubernetes-list-type"] == "map"
    assert spec["env"]["x-kubernetes-list-map-keys"] == ["name"]
    action = spec["failurePolicy"]["properties"]["rules"]["items"]["properties"]["action"]
    assert action["enum"] == ["RestartNode", "RestartJob", "FailJob", "Ignore"]


def rules_at(node: dict[str, Any]) -> list[str]:
    return [r["message"] for r in node.get("x-kubernetes-validations", [])]


def test_validation_rules_are_attached_where_they_belong(crd: dict[str, Any]) -> None:
    root = schema_of(crd)
    spec = root["properties"]["spec"]
    messages = rules_at(spec)
    assert "exactly one of spec.task or spec.script must be set" in messages
    assert "spec.data is required when spec.task is set" in messages
    immutable = {m.split()[0] for m in messages if m.endswith("is immutable")}
    assert {"spec.image", "spec.task", "spec.nodes.min", "spec.nodes.max", "spec.resources",
            "spec.env", "spec.checkpoint", "spec.failurePolicy", "spec.managedBy"} <= immutable
    mutable = {"spec.nodes.count", "spec.suspend", "spec.stop", "spec.ttlSecondsAfterFinished"}
    assert not immutable & mutable
    assert len([m for m in messages if "only while the job is suspended" in m]) == 4
    nodes = spec["properties"]["nodes"]
    assert any("spec.nodes.count must be between" in m for m in rules_at(nodes))
    env_item = spec["properties"]["env"]["items"]
    assert env_item["x-kubernetes-validations"][0]["fieldPath"] == ".name"
    assert any("metadata.name" in m for m in rules_at(root))
    for _, node in walk(root):
        for rule in node.get("x-kubernetes-validations", []):
            assert rule["message"] and rule["rule"]


def test_every_spec_field_is_either_mutable_or_guarded(crd: dict[str, Any]) -> None:
    """A new spec field must be added to the immutable (or Kueue) list, or here on purpose."""
    spec = schema_of(crd)["properties"]["spec"]
    guarded = {r["fieldPath"] for r in spec["x-kubernetes-validations"] if "oldSelf" in r["rule"]}
    mutable = {".suspend", ".stop", ".ttlSecondsAfterFinished", ".nodes.count"}
    # Fields that exist only to be refused when true: nothing to guard.
    mutable |= {f".podTemplate.{name}" for name in (
        "hostNetwork", "hostPID", "hostIPC", "automountServiceAccountToken")}
    expected = set()
    for name, node in spec["properties"].items():
        if name in ("nodes", "podTemplate"):  # guarded field by field
            expected |= {f".{name}.{sub}" for sub in node["properties"]}
        else:
            expected.add(f".{name}")
    assert guarded == expected - mutable


def test_crd_names_subresources_and_columns(crd: dict[str, Any]) -> None:
    names = crd["spec"]["names"]
    assert names["shortNames"] == ["cwtrain", "cwtj"] and names["categories"] == ["cogwork"]
    assert "trainjob" not in names["shortNames"]  # Kubeflow Trainer's TrainJob may exist
    version = crd["spec"]["versions"][0]
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.nodes.count", "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector"}
    assert version["subresources"]["status"] == {}
    columns = {c["name"]: (c["jsonPath"], c["type"]) for c in version["additionalPrinterColumns"]}
    assert columns == {
        "Phase": (".status.phase", "string"), "Nodes": (".status.nodesText", "string"),
        "Restarts": (".status.restarts", "integer"),
        "Progress": (".status.progress.progressPercentage", "integer"),
        "Accuracy": (".status.evaluation.accuracy", "number"),
        "Age": (".metadata.creationTimestamp", "date"),
        "Queue": (".metadata.labels.kueue\\.x-k8s\\.io/queue-name", "string")}  # -o wide


def test_generator_refuses_unions_it_cannot_express() -> None:
    class Bad(BaseModel):
        value: int | list[str]

    with pytest.raises(SchemaError, match="unions are not structural"):
        structural_schema(Bad)


def test_generator_is_generic_over_kinds() -> None:
    class WidgetSpec(BaseModel):
        size: int = 1

    class WidgetStatus(BaseModel):
        ready: bool | None = None

    widget = CustomResource(kind="Widget", plural="widgets", singular="widget",
                            spec_model=WidgetSpec, status_model=WidgetStatus,
                            description="A test kind.")
    out = yaml.safe_load(render_crds([widget])["widgets.cogwork.dev.yaml"])
    schema = out["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert schema["properties"]["spec"]["properties"]["size"] == {"type": "integer",
                                                                  "default": 1}
    assert "scale" not in out["spec"]["versions"][0]["subresources"]


@needs_celcheck
def test_apiserver_validation_accepts_crd_and_decides_every_case(tmp_path: Path) -> None:
    assert_apiserver_decides(CRDS / "trainjobs.cogwork.dev.yaml",
                             [c.as_json() for c in ALL_CASES], tmp_path)


def test_pod_template_refusals_and_free_form_fields(crd: dict[str, Any]) -> None:
    template = schema_of(crd)["properties"]["spec"]["properties"]["podTemplate"]
    props = template["properties"]
    for flag in ("hostNetwork", "hostPID", "hostIPC", "automountServiceAccountToken"):
        (rule,) = props[flag]["x-kubernetes-validations"]
        assert rule["rule"] == "!self" and rule["reason"] == "FieldValueForbidden"
        assert rule["message"].startswith(f"spec.podTemplate.{flag} is forbidden: ")
    volume_rules = props["volumes"]["items"]["x-kubernetes-validations"]
    assert {r.get("fieldPath") for r in volume_rules} >= {".hostPath", ".projected", ".name"}
    # Free-form (unpruned) only where nothing can grant privilege, or to be refused.
    free = {path for path, node in walk(template, "podTemplate")
            if node.get("x-kubernetes-preserve-unknown-fields")}
    assert free == {"podTemplate.affinity.nodeAffinity", "podTemplate.affinity.podAffinity",
                    "podTemplate.affinity.podAntiAffinity",
                    "podTemplate.topologySpreadConstraints[].labelSelector",
                    "podTemplate.volumes[].hostPath", "podTemplate.volumes[].projected"}
    for path, node in walk(template, "podTemplate"):
        for rule in node.get("x-kubernetes-validations", []):
            assert rule["message"].startswith("spec."), (path, rule)  # names the field
