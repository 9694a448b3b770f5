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
