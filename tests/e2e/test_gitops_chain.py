"""The label -> tune -> train -> label flywheel declared in one `kubectl apply -f dir/`, as a
GitOps repository holds it: every object references the one before it by name (fromTrainJob,
fromLabelJob, fromTuneJob), nothing is created by hand or promoted by the operator, and applied
in reverse order it still converges. And every reference that cannot resolve says so."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness.jobs import Jobs, digits_job

pytestmark = pytest.mark.cluster

API = "cogwork.dev/v1alpha1"
TASK = {"name": "image-classification", "epochs": 4, "batchSize": 64, "learningRate": "0.05"}
ONE_NODE = {"min": 1, "max": 1}


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), {})


def labeljob(name: str, model_from: str) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "LabelJob", "metadata": {"name": name},
            "spec": {"model": {"fromTrainJob": model_from}, "pool": {"dataset": "digits"},
                     "seed": {"count": 300},
                     "inference": {"replicas": 1, "cpu": "1", "memory": "1Gi"},
                     "autoAccept": {"targetPrecision": "0.95", "confidence": "0.95",
                                    "validation": {"humanBudget": 400}}}}


def tunejob(name: str, template: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "TuneJob", "metadata": {"name": name},
            "spec": {"parameters": [{"name": "lr", "field": "task.learningRate",
                                     "logUniform": {"min": "0.01", "max": "0.1"}}],
                     "search": {"algorithm": "random", "seed": 3},
                     "budget": {"maxTrials": 2, "parallelTrials": 2},
                     "trialTemplate": template, **spec}}


def phase_of(jobs: Jobs, name: str, kind: str) -> dict[str, Any] | None:
    status = jobs.get(name, kind).get("status") or {}
    return status if status.get("phase") in ("Succeeded", "Failed") else None


def test_the_flywheel_in_one_apply_in_reverse_order_converges(jobs: Jobs, tmp_path: Path
                                                              ) -> None:
    seed = digits_job("seed", task=TASK, nodes=ONE_NODE)
    labels = labeljob("labels", model_from="seed")
    on_labels = {"task": TASK, "data": {"fromLabelJob": "labels"}, "nodes": ONE_NODE,
                 "resources": {"cpu": "1", "memory": "1Gi"}, "checkpoint": {"everySteps": 10}}
    tune = tunejob("tune", on_labels)
    final = {"apiVersion": API, "kind": "TrainJob", "metadata": {"name": "final"},
             "spec": {**on_labels, "fromTuneJob": "tune",
                      "task": {**TASK, "epochs": 6, "learningRate": "0.5"}}}
    relabel = labeljob("relabel", model_from="final")
    repo = tmp_path / "repo"
    repo.mkdir()
    # kubectl applies a directory in file-name order: the last link of the chain first.
    for i, doc in enumerate([relabel, final, tune, labels, seed]):
        (repo / f"{i:02d}-{doc['metadata']['name']}.yaml").write_text(yaml.safe_dump(doc))
    jobs.cluster.kubectl("apply", "-n", jobs.namespace, "-f", str(repo))

    # Before its inputs exist, each link waits and says for what.
    waiting = jobs.wait_for("final waiting for its parameters", lambda: (
        c if (c := condition(jobs.status("final"), "Created")).get("reason")
        == "WaitingForParameters" else None), timeout=60)
    assert "spec.fromTuneJob=tune" in waiting["message"]

    done = jobs.wait_for("relabel to finish", lambda: phase_of(jobs, "relabel", "labeljob"),
                         timeout=900)
    assert done["phase"] == "Succeeded", done
    tuned = jobs.get("tune", "tunejob")["status"]
    trained = jobs.status("final")
    assert trained["phase"] == "Succeeded"
    best = tuned["bestTrial"]
    assert trained["tunedFrom"]["tuneJob"] == "tune"
    assert trained["tunedFrom"]["trial"] == best["name"]
    assert trained["tunedFrom"]["values"] == [{"name": "lr", "field": "task.learningRate",
                                                "value": best["params"]["lr"]}]
    # The tuned value, not the manifest's 0.5, is what the final job's pods trained with.
    pod = next(p for p in jobs.pods("cogwork.dev/job-name=final")
               if p["metadata"]["name"] == "final-node-0")
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    task = json.loads(env["COGWORK_TASK"])
    assert float(task["learningRate"]) == pytest.approx(float(best["params"]["lr"]))
    assert task["epochs"] == 6  # the rest is the final job's own spec
    promoted = jobs.cluster.kubectl("get", "trainjob", "tune-best", "-n", jobs.namespace,
                                    check=False)
    assert promoted.returncode != 0  # nothing promoted: the repository declares the final job
    # Every object is in the repository: kstatus reads all five Current.
    for name, kind in (("seed", "trainjob"), ("labels", "labeljob"), ("tune", "tunejob"),
                       ("final", "trainjob"), ("relabel", "labeljob")):
        assert condition(jobs.get(name, kind)["status"], "Ready")["status"] == "True", name


def test_references_that_cannot_resolve_fail_or_wait_naming_the_reference(jobs: Jobs) -> None:
    # A TuneJob that fails (its deadline passes at once) fails the TrainJob that needs it.
    template = {"task": TASK, "data": {"dataset": "digits"}, "nodes": ONE_NODE}
    jobs.apply(tunejob("doomed", template, activeDeadlineSeconds=1))
    jobs.apply({"apiVersion": API, "kind": "TrainJob", "metadata": {"name": "after-doomed"},
                "spec": {**template, "fromTuneJob": "doomed"}})
    failed = jobs.wait_phase("after-doomed", "Failed", "Succeeded", timeout=120)
    reason = condition(failed, "Failed")
    assert reason["reason"] == "ReferenceFailed", failed
    assert reason["message"].startswith("spec.fromTuneJob=doomed: the TuneJob failed")
    assert not jobs.pods("cogwork.dev/job-name=after-doomed")  # nothing half-created

    # A TrainJob and a LabelJob that need each other: a cycle, refused, not a silent wait.
    jobs.apply(labeljob("ring-labels", model_from="ring"))
    jobs.apply({"apiVersion": API, "kind": "TrainJob", "metadata": {"name": "ring"},
                "spec": {"task": TASK, "data": {"fromLabelJob": "ring-labels"},
                         "nodes": ONE_NODE}})
    ring = jobs.wait_phase("ring", "Failed", timeout=60)
    assert "reference cycle" in condition(ring, "Failed")["message"]
    ring_labels = jobs.wait_for("ring-labels to fail", lambda: phase_of(
        jobs, "ring-labels", "labeljob"), timeout=60)
    assert "reference cycle" in condition(ring_labels, "Failed")["message"]

    # A missing TuneJob is waited for, by name, with nothing created.
    jobs.apply({"apiVersion": API, "kind": "TrainJob", "metadata": {"name": "orphan"},
                "spec": {**template, "fromTuneJob": "not-yet"}})
    created = jobs.wait_for("orphan waiting", lambda: (
        c if (c := condition(jobs.status("orphan"), "Created")).get("status") == "False"
        else None), timeout=60)
    assert created["reason"] == "WaitingForParameters"
    assert created["message"] == "spec.fromTuneJob=not-yet: TuneJob not found (yet)"
    assert condition(jobs.status("orphan"), "Stalled")["status"] == "False"
    assert not jobs.pods("cogwork.dev/job-name=orphan")


def test_a_labeljob_deleted_under_a_running_trainjob_is_said_and_training_goes_on(jobs: Jobs
                                                                                    ) -> None:
    """The dataset's location is kept in status.dataFrom once resolved: deleting the LabelJob
    (and with it, by garbage collection, its claim) under a running TrainJob does not stall the
    job on "LabelJob not found"; it says what happened and trains to the end on the claim the
    running pod still holds."""
    jobs.apply(digits_job("gone-seed", task={**TASK, "epochs": 2}, nodes=ONE_NODE))
    jobs.apply(labeljob("gone-labels", model_from="gone-seed"))
    jobs.apply({"apiVersion": API, "kind": "TrainJob", "metadata": {"name": "on-gone"},
                "spec": {"task": {**TASK, "epochs": 40}, "data": {"fromLabelJob": "gone-labels"},
                         "nodes": ONE_NODE, "resources": {"cpu": "1", "memory": "1Gi"}}})
    kept = jobs.wait_for("the dataset resolved", lambda: jobs.status("on-gone").get("dataFrom"),
                         timeout=600)
    uid = jobs.get("gone-labels", "labeljob")["metadata"]["uid"]
    assert kept == {"kind": "LabelJob", "name": "gone-labels", "uid": uid,
                    "path": "labels/dataset.npz", "claimName": "gone-labels-labels"}
    jobs.wait_for("training", lambda: (jobs.status("on-gone").get("progress") or {}).get("step"),
                  timeout=240)
    jobs.cluster.kubectl("delete", "labeljob", "gone-labels", "-n", jobs.namespace,
                         "--wait=false")
    said = jobs.wait_for("InputAvailable=False", lambda: (
        c if (c := condition(jobs.status("on-gone"), "InputAvailable")).get("status") == "False"
        else None), timeout=60)
    assert said["reason"] == "SourceDeleted"
    assert said["message"].startswith("spec.data.fromLabelJob=gone-labels: the LabelJob was "
                                      "deleted while this job used its dataset "
                                      "(labels/dataset.npz on claim gone-labels-labels)")
    done = jobs.wait_phase("on-gone", "Succeeded", "Failed", timeout=300)
    assert done["phase"] == "Succeeded", done.get("conditions")
    assert done["dataFrom"] == kept
    events = jobs.cluster.kubectl_json("get", "events", "-n", jobs.namespace, "--field-selector",
                                       "involvedObject.name=on-gone,reason=SourceDeleted")
    assert len(events["items"]) == 1  # said once, not every pass
