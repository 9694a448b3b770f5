"""LabelJob end to end on the real control plane: the data flywheel TrainJob -> LabelJob ->
TrainJob, declared all at once (references wait for what they name), plus an uncertifiable
target and a missing Label Studio secret."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from harness.jobs import Jobs, digits_job

pytestmark = pytest.mark.cluster

API = "cogwork.dev/v1alpha1"


def labeljob(name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": {"fromTrainJob": "digits"},
        "pool": {"dataset": "digits"},
        "seed": {"count": 300},
        "inference": {"replicas": 3, "cpu": "1", "memory": "1Gi"},
        "autoAccept": {"targetPrecision": "0.95", "confidence": "0.95",
                       "validation": {"humanBudget": 400}},
        "review": {"strategy": "margin", "batchSize": 100},
        "labelErrors": {"enabled": True, "folds": 3},
    }
    body.update(spec)
    return {"apiVersion": API, "kind": "LabelJob", "metadata": {"name": name}, "spec": body}


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), {})


def label_status(jobs: Jobs, name: str) -> dict[str, Any]:
    return jobs.get(name, kind="labeljob").get("status") or {}


def claim_dir(jobs: Jobs, claim: str) -> Path:
    """The host directory behind a claim (the harness provisions hostPath volumes)."""
    pvc = jobs.cluster.kubectl_json("get", "pvc", claim, "-n", jobs.namespace)
    pv = jobs.cluster.kubectl_json("get", "pv", str(pvc["spec"]["volumeName"]))  # type: ignore[index]
    return Path(pv["spec"]["hostPath"]["path"])  # type: ignore[index]


def test_trainjob_labeljob_trainjob_flywheel(jobs: Jobs) -> None:
    # Declared at once, in reverse order: each reference waits for what it names.
    jobs.apply(digits_job("from-labels", data={"fromLabelJob": "digits-labels"},
                          nodes={"min": 1, "max": 1},
                          task={"name": "image-classification", "epochs": 4, "batchSize": 64,
                                "learningRate": "0.05"}))
    jobs.apply(labeljob("digits-labels"))
    jobs.apply(digits_job("digits", nodes={"min": 1, "max": 1},
                          task={"name": "image-classification", "epochs": 10, "batchSize": 64,
                                "learningRate": "0.05"}))

    def waiting(name: str, kind: str, reason: str) -> bool:
        created = condition(jobs.get(name, kind=kind).get("status") or {}, "Created")
        return created.get("status") == "False" and created.get("reason") == reason

    jobs.wait_for("LabelJob waiting for its model",
                  lambda: waiting("digits-labels", "labeljob", "WaitingForModel"), timeout=60)
    jobs.wait_for("TrainJob waiting for its data",
                  lambda: waiting("from-labels", "trainjob", "WaitingForData"), timeout=60)
    assert "spec.data.fromLabelJob=digits-labels" in \
        condition(jobs.status("from-labels"), "Created")["message"]
    assert jobs.wait_phase("digits", "Succeeded", "Failed", timeout=300)["phase"] == "Succeeded"

    status = jobs.wait_for("LabelJob finished", lambda: (
        s if (s := label_status(jobs, "digits-labels")).get("phase") in ("Succeeded", "Failed")
        else None), timeout=420)
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)[:3000]
    counts = status["counts"]
    assert counts["total"] == counts["predicted"] == 1797
    assert counts["humanLabeled"] == 400 and counts["autoAccepted"] > 0
    # Review takes the most doubtful of what is neither labeled nor accepted, up to batchSize.
    routed = counts["routedToReview"]
    assert routed == min(100, 1797 - 300 - 400 - counts["autoAccepted"])
    assert status["predictedText"] == "1797/1797"
    assert 0 < status["threshold"] < 1 and status["certifiedLowerBound"] >= 0.95
    assert status["coverage"] == pytest.approx(counts["autoAccepted"] / 1797, abs=1e-6)
    assert status["itemsPerSecond"] > 0 and status["modelVersion"].startswith("digits-g")
    assert condition(status, "Certified")["status"] == "True"
    pods = {p["metadata"]["name"]: p for p in jobs.pods("cogwork.dev/job-name=digits-labels")}
    assert {f"digits-labels-score-{i}" for i in range(3)} | {"digits-labels-merge"} <= set(pods)
    for pod in pods.values():
        assert pod["metadata"]["labels"]["cogwork.dev/kind"] == "LabelJob"
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True

    # The outputs are on the claim, and agree with the status.
    output = claim_dir(jobs, "digits-labels-labels") / "labels"
    with open(output / "labels.csv", newline="") as f:
        sources = [row["source"] for row in csv.DictReader(f)]
    assert sources.count("auto") == counts["autoAccepted"]
    assert sources.count("seed") == 300 and sources.count("human") == 400
    assert len(json.loads((output / "review-tasks.json").read_text())) == routed
    with np.load(output / "dataset.npz") as data:
        assert len(data["x"]) == len(data["y"]) == len(sources)

    # The TrainJob that waited trains on the LabelJob's dataset.
    trained = jobs.wait_phase("from-labels", "Succeeded", "Failed", timeout=300)
    assert trained["phase"] == "Succeeded", trained.get("conditions")
    assert trained["evaluation"]["accuracy"] >= 0.8
    samples = trained["evaluation"]["samples"]
    assert samples == pytest.approx(0.2 * len(sources), abs=2)  # the labeled set, not all digits

    # An uncertifiable target (0.999 on 100 labels) accepts nothing and says so; a missing
    # Label Studio secret is a condition naming the field, not a crash.
    jobs.apply(labeljob(
        "strict", model={"path": "model.pt", "claimName": "digits-ckpt"},
        inference={"replicas": 1, "cpu": "1", "memory": "1Gi"},
        autoAccept={"targetPrecision": "0.999", "confidence": "0.95",
                    "validation": {"humanBudget": 100}},
        sink={"labelStudio": {"url": "http://label-studio:8080",
                              "secretRef": {"name": "no-such-secret"}, "project": 1}}))
    strict = jobs.wait_for("strict job's sink condition", lambda: (
        s if condition(s := label_status(jobs, "strict"), "SinkReady").get("status") == "False"
        else None), timeout=300)
    certified = condition(strict, "Certified")
    assert certified["status"] == "False" and certified["reason"] == "TargetNotCertified"
    assert "0.999" in certified["message"]
    assert strict["counts"]["autoAccepted"] == 0 and strict["coverage"] == 0
    sink = condition(strict, "SinkReady")
    assert "spec.sink.labelStudio.secretRef" in sink["message"]
    assert "no-such-secret" in sink["message"]
    assert strict["phase"] == "Running"


def test_review_rounds_collect_retrain_and_relabel(jobs: Jobs) -> None:
    # Two review rounds: round 0 routes up to 50 items, the demo's annotators (the dataset's
    # hidden labels) answer, TrainJob <job>-r1 retrains a copy of `first` on the labels so far,
    # round 1 relabels the pool with it. A 0.99 target leaves doubtful items to route (at 0.95
    # this model auto-accepts all but one).
    jobs.apply(digits_job("first", nodes={"min": 1, "max": 1},
                          task={"name": "image-classification", "epochs": 4, "batchSize": 64,
                                "learningRate": "0.05"}))
    jobs.apply(labeljob("rounds", model={"fromTrainJob": "first"},
                        inference={"replicas": 2, "cpu": "1", "memory": "1Gi"},
                        autoAccept={"targetPrecision": "0.99", "confidence": "0.95",
                                    "validation": {"humanBudget": 400}},
                        review={"strategy": "margin", "batchSize": 50, "maxRounds": 2,
                                "maxHumanLabels": 100},
                        labelErrors={"enabled": False}))
    status = jobs.wait_for("LabelJob finished", lambda: (
        s if (s := label_status(jobs, "rounds")).get("phase") in ("Succeeded", "Failed")
        else None), timeout=600)
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)[:3000]
    assert status["round"] == 1 and status["modelVersion"].startswith("rounds-r1-g")
    assert "after 2 round(s)" in condition(status, "Succeeded")["message"]
    counts = status["counts"]

    # The retrain is an owned TrainJob on the LabelJob's claim, and it succeeded.
    retrain = jobs.get("rounds-r1")
    assert retrain["spec"]["data"] == {"path": "labels/train-r1.npz",
                                       "claimName": "rounds-labels", "testPercent": 20}
    owner = retrain["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "LabelJob" and owner["name"] == "rounds"
    assert retrain["status"]["phase"] == "Succeeded"
    # About the source's optimizer steps on a smaller set, so the new model is no worse off.
    source_steps = jobs.status("first")["progress"]["totalSteps"]
    assert retrain["spec"]["task"]["epochs"] >= 4
    assert retrain["status"]["progress"]["totalSteps"] >= 0.8 * source_steps
    assert retrain["status"]["evaluation"]["accuracy"] >= 0.8
    pods = {p["metadata"]["name"]: p for p in jobs.pods("cogwork.dev/job-name=rounds")}
    assert pods["rounds-collect"]["status"]["phase"] == "Succeeded"
    assert {"rounds-r1-score-0", "rounds-r1-score-1", "rounds-r1-merge"} <= set(pods)

    def summary(pod: str) -> dict[str, Any]:  # a step's termination message
        state = pods[pod]["status"]["containerStatuses"][0]["state"]
        return json.loads(state["terminated"]["message"])  # type: ignore[no-any-return]

    round0 = summary("rounds-merge")
    routed0, auto_round0 = round0["routedToReview"], round0["autoAccepted"]
    assert 0 < routed0 <= 50
    collected = summary("rounds-collect")
    assert collected["collected"] == routed0 and collected["round"] == 0
    assert counts["humanLabeled"] == 400 + routed0  # validation labels + round 0's batch
    assert counts["routedToReview"] <= 100 - routed0  # round 1's batch, within the budget left

    # What came back is exactly round 0's batch, and the tables agree with the status.
    output = claim_dir(jobs, "rounds-labels") / "labels"
    with open(output / "human-labels.csv", newline="") as f:
        human = {row["item_id"] for row in csv.DictReader(f)}
    assert len(human) == routed0
    with open(output / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sum(r["source"] == "human" for r in rows) == 400 + routed0
    assert sum(r["source"] == "auto" for r in rows) == counts["autoAccepted"]
    assert {r["item_id"] for r in rows if r["source"] == "human"} >= human
    round1_batch = {t["data"]["item_id"] for t in
                    json.loads((output / "review-tasks.json").read_text())}
    assert not round1_batch & human  # nobody is asked twice
    with np.load(output / "train-r1.npz") as data:
        # seeds + reviewed + round 0's auto-accepted labels, never the 400 validation items
        assert len(data["x"]) == len(data["y"]) == collected["trainingItems"] \
            == 300 + routed0 + auto_round0
