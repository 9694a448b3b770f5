"""`cogwork render` for every kind: what the operator's first passes create, offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from cogwork.cli import main
from cogwork.local.render import render_document
from cogwork.plan.settings import RenderSettings

EXAMPLES = Path(__file__).parents[3] / "examples"
SETTINGS = RenderSettings(report_base_url="https://10.0.0.1:8443")


def example(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    return doc


def trainjob(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"task": {"name": "image-classification"},
                            "data": {"dataset": "digits"}, "nodes": {"min": 1, "max": 3}}
    body.update(spec)
    return {"apiVersion": "cogwork.dev/v1alpha1", "kind": "TrainJob",
            "metadata": {"name": "digits", "namespace": "ml", "uid": "u-1"}, "spec": body}


def kinds_and_names(objects: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(o["kind"], o["metadata"]["name"]) for o in objects]


def test_a_trainjob_renders_every_child_in_dependency_order() -> None:
    objects = render_document(trainjob(nodes={"min": 1, "max": 3, "count": 2}), SETTINGS)
    assert kinds_and_names(objects) == [
        ("Service", "digits"), ("PersistentVolumeClaim", "digits-ckpt"),
        ("Pod", "digits-rdzv"), ("Pod", "digits-node-0"), ("Pod", "digits-node-1")]
    assert {o["metadata"]["namespace"] for o in objects} == {"ml"}
    assert all("ownerReferences" not in o["metadata"] for o in objects)


def test_without_namespace_or_uid_defaults_are_used() -> None:
    doc = trainjob()
    doc["metadata"] = {"name": "digits"}
    pods = [o for o in render_document(doc) if o["kind"] == "Pod"]
    assert {p["metadata"]["namespace"] for p in pods} == {"default"}
    command = pods[1]["spec"]["containers"][0]["command"]
    assert "--rdzv-endpoint=digits-rdzv.digits.default.svc:29400" in command


def test_a_tunejob_renders_its_first_trials_with_their_parameters() -> None:
    doc = example("tunejob-digits.yaml")
    objects = render_document(doc)
    parallel = doc["spec"]["budget"]["parallelTrials"]
    assert kinds_and_names(objects) == [("TrainJob", f"digits-tune-t{i}")
                                        for i in range(parallel)]
    again = render_document(doc)  # the same seeds: the same proposals
    assert [o["spec"]["task"] for o in again] == [o["spec"]["task"] for o in objects]
    lrs = {o["spec"]["task"]["learningRate"] for o in objects}
    assert len(lrs) == parallel  # each trial its own parameters


def test_a_katib_tunejob_renders_its_experiment() -> None:
    doc = example("tunejob-digits.yaml")
    doc["spec"]["engine"] = "katib"
    doc["spec"]["pruner"] = {"algorithm": "none"}
    doc["spec"]["objective"].pop("goal", None)
    kinds = [o["kind"] for o in render_document(doc)]
    assert kinds[-1] == "Experiment"


def test_a_labeljob_renders_its_claim_and_score_pods() -> None:
    doc = example("labeljob-digits.yaml")
    objects = render_document(doc, SETTINGS)
    kinds = [o["kind"] for o in objects]
    assert kinds[0] == "PersistentVolumeClaim"
    replicas = doc["spec"].get("inference", {}).get("replicas", 1)
    assert kinds.count("Pod") == replicas
    source = doc["spec"]["model"]["fromTrainJob"]
    claims = {v["persistentVolumeClaim"]["claimName"]
              for o in objects if o["kind"] == "Pod" for v in o["spec"]["volumes"]
              if "persistentVolumeClaim" in v}
    assert f"{source}-ckpt" in claims  # the model, from the TrainJob's checkpoint claim


@pytest.mark.parametrize("doc, says", [
    ({"kind": "Deployment"}, "cannot render kind 'Deployment'"),
    (trainjob(data=None), "spec.data is required"),
])
def test_bad_input_is_one_clear_line_and_exit_2(tmp_path: Path, doc: dict[str, Any], says: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["render", "-f", str(path)]) == 2
    captured = capsys.readouterr()
    assert says in captured.err and "Traceback" not in captured.err
    assert captured.out == ""
