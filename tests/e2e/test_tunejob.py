"""TuneJob end to end on the real control plane: 8 digits trials, 2 at a time, ASHA pruning,
an operator restart mid-search, promotion of the best parameters."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from harness.jobs import Jobs
from harness.operator import Operator

pytestmark = pytest.mark.cluster

TRIAL_LABEL = "cogwork.dev/tunejob"


def tunejob(name: str) -> dict[str, Any]:
    """Short trials: 1 node, 6 epochs of digits; rungs at 1 and 3 epochs."""
    return {
        "apiVersion": "cogwork.dev/v1alpha1", "kind": "TuneJob", "metadata": {"name": name},
        "spec": {
            "objective": {"metric": "val_accuracy", "direction": "maximize"},
            "parameters": [
                {"name": "lr", "field": "task.learningRate",
                 "logUniform": {"min": "0.0005", "max": "0.5"}},
                {"name": "width", "field": "task.hiddenSize",
                 "int": {"min": 8, "max": 128, "step": 8}},
                {"name": "batch", "field": "task.batchSize",
                 "categorical": {"values": ["32", "64"]}},
            ],
            "search": {"algorithm": "tpe", "seed": 42, "startupTrials": 4},
            "pruner": {"algorithm": "asha", "resource": "epoch", "minResource": 1,
                       "reductionFactor": 3},
            "budget": {"maxTrials": 8, "parallelTrials": 2, "maxFailedTrials": 2},
            "promote": {"enabled": True},
            "trialTemplate": {
                "task": {"name": "image-classification", "epochs": 6},
                "data": {"dataset": "digits"},
                "nodes": {"min": 1, "max": 1},
                "resources": {"cpu": "1", "memory": "1Gi"},
                "checkpoint": {"everySteps": 20},
                "rendezvous": {"joinTimeoutSeconds": 60, "lastCallTimeoutSeconds": 1},
            },
        },
    }


def trials(jobs: Jobs, name: str) -> list[dict[str, Any]]:
    items = jobs.cluster.kubectl_json("get", "trainjobs", "-n", jobs.namespace, "-l",
                                      f"{TRIAL_LABEL}={name}")["items"]
    return items  # type: ignore[no-any-return]


def tune_status(jobs: Jobs, name: str) -> dict[str, Any]:
    return jobs.get(name, kind="tunejob").get("status") or {}


def test_tunejob_prunes_survives_restart_and_promotes(jobs: Jobs, operator: Operator) -> None:
    name = "digits-tune"
    jobs.apply(tunejob(name))
    jobs.wait_for("3 trials created", lambda: len(trials(jobs, name)) >= 3, timeout=300)
    operator.restart()  # mid-search: trials running, some finished or pruned
    deadline = time.monotonic() + 1200
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = tune_status(jobs, name)
        if status.get("phase") in ("Succeeded", "Failed"):
            break
        time.sleep(2)
    assert status.get("phase") == "Succeeded", json.dumps(status, indent=1)[:3000]

    children = trials(jobs, name)
    names = sorted(t["metadata"]["name"] for t in children)
    assert names == sorted(f"{name}-t{i}" for i in range(8)), names  # none lost or duplicated
    pruned = [t for t in children if "cogwork.dev/pruned-at" in t["metadata"]["annotations"]]
    assert pruned, "ASHA pruned no trial"
    for trial in pruned:
        reasons = {c["type"]: c["reason"] for c in trial["status"]["conditions"]
                   if c["status"] == "True"}
        assert reasons.get("Succeeded") == "Stopped", (trial["metadata"]["name"], reasons)
    counts = status["trials"]
    assert counts["pruned"] == len(pruned)
    assert counts["completed"] + counts["pruned"] + counts["failed"] == 8
    assert counts["completed"] >= 1 and counts["running"] == 0

    best = status["bestTrial"]
    best_trial = next(t for t in children if t["metadata"]["name"] == best["name"])
    reported = {m["name"]: float(m["value"]) for m in best_trial["status"]["metrics"]["latest"]}
    assert best["value"] == pytest.approx(reported["val_accuracy"])
    completed_values = [float(m["value"]) for t in children if t not in pruned
                        for m in (t["status"].get("metrics") or {}).get("latest", [])
                        if m["name"] == "val_accuracy"]
    assert best["value"] == pytest.approx(max(completed_values))
    assert best["value"] > 0.5

    promoted = jobs.get(status["promotedTrainJob"])
    assert promoted["metadata"]["name"] == f"{name}-best"
    task = promoted["spec"]["task"]
    assert task["learningRate"] == best["params"]["lr"]
    assert str(task["hiddenSize"]) == best["params"]["width"]
    assert str(task["batchSize"]) == best["params"]["batch"]
    owners = promoted["metadata"].get("ownerReferences") or []
    assert [o["kind"] for o in owners] == ["TuneJob"]
