"""TuneJob with spec.engine katib on the real control plane, without a Katib controller.

A minimal structural Experiment CRD (tests/cluster/katib/experiment-crd.yaml) stands in for
Katib's: first absent (the TuneJob says KatibNotInstalled), then installed (the operator creates
an Experiment the apiserver accepts, exactly as built, owned by the TuneJob). The test then plays
Katib's controller: it writes currentOptimalTrial and conditions into the Experiment's status
and checks the TuneJob mirrors them, before and after an operator restart (which switches from
reading the Experiment to watching it), up to the promoted TrainJob.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from cogwork.api.tunejob import TuneJob
from cogwork.plan import tunejob_katib_render as katib
from harness.controlplane import REPO_ROOT
from harness.jobs import Jobs
from harness.operator import Operator

pytestmark = pytest.mark.cluster

CRD = REPO_ROOT / "tests/cluster/katib/experiment-crd.yaml"
NAME = "digits-katib"
OPTIMAL = {"bestTrialName": f"{NAME}-q8w2k5zt",
           "observation": {"metrics": [{"name": "val_accuracy", "latest": "0.9444",
                                        "max": "0.95", "min": "0.3"}]},
           "parameterAssignments": [{"name": "lr", "value": "0.0321"},
                                    {"name": "width", "value": "96"},
                                    {"name": "batch", "value": "64"}]}


def tunejob() -> dict[str, Any]:
    return {
        "apiVersion": "cogwork.dev/v1alpha1", "kind": "TuneJob", "metadata": {"name": NAME},
        "spec": {
            "engine": "katib",
            "objective": {"metric": "val_accuracy", "direction": "maximize", "goal": "0.99"},
            "parameters": [
                {"name": "lr", "field": "task.learningRate",
                 "logUniform": {"min": "0.0005", "max": "0.5"}},
                {"name": "width", "field": "task.hiddenSize",
                 "int": {"min": 8, "max": 128, "step": 8}},
                {"name": "batch", "field": "task.batchSize",
                 "categorical": {"values": ["32", "64"]}},
            ],
            "search": {"algorithm": "tpe", "seed": 42},
            "pruner": {"algorithm": "median", "minResource": 2},
            "budget": {"maxTrials": 6, "parallelTrials": 2, "maxFailedTrials": 1},
            "promote": {"enabled": True},
            # Suspended: the promoted TrainJob must exist, not train, on a shared machine.
            "trialTemplate": {"suspend": True,
                              "task": {"name": "image-classification", "epochs": 2},
                              "data": {"dataset": "digits"}},
        },
    }


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), {})


def tune_status(jobs: Jobs) -> dict[str, Any]:
    return jobs.get(NAME, kind="tunejob").get("status") or {}


def experiment(jobs: Jobs) -> dict[str, Any] | None:
    found = jobs.cluster.kubectl("get", "experiments.kubeflow.org", NAME, "-n", jobs.namespace,
                                 "-o", "json", check=False)
    return json.loads(found.stdout) if found.returncode == 0 else None


def play_katib(jobs: Jobs, status: dict[str, Any]) -> None:
    jobs.cluster.kubectl("patch", "experiments.kubeflow.org", NAME, "-n", jobs.namespace,
                         "--subresource=status", "--type=merge",
                         "-p", json.dumps({"status": status}))


def test_katib_engine_creates_an_accepted_experiment_and_mirrors_it(
        jobs: Jobs, operator: Operator) -> None:
    cp = jobs.cluster.control_plane
    assert cp.kubectl("get", "crd", "experiments.kubeflow.org", check=False).returncode != 0
    jobs.apply(tunejob())
    status = jobs.wait_for("KatibNotInstalled", lambda: (
        s if condition(s := tune_status(jobs), "EngineReady").get("reason")
        == "KatibNotInstalled" else None), timeout=120)
    assert condition(status, "EngineReady")["status"] == "False"
    assert status["phase"] == "Pending"

    cp.kubectl("apply", "-f", str(CRD))
    cp.kubectl("wait", "--for=condition=Established", "crd/experiments.kubeflow.org",
               "--timeout=60s")
    created = jobs.wait_for("the Experiment", lambda: experiment(jobs), timeout=120)

    # Accepted as built: nothing pruned or defaulted away by the typed schema.
    stored = jobs.get(NAME, kind="tunejob")
    expected = katib.build(TuneJob.model_validate(stored))
    assert created["spec"] == expected.experiment["spec"]
    spec = created["spec"]
    assert spec["algorithm"] == {"algorithmName": "tpe",
                                 "algorithmSettings": [{"name": "random_state", "value": "42"}]}
    assert spec["earlyStopping"]["algorithmName"] == "medianstop"
    assert spec["objective"]["goal"] == 0.99
    assert spec["metricsCollectorSpec"] == {"collector": {"kind": "Push"}}
    assert spec["trialTemplate"]["configMap"]["configMapName"] == f"{NAME}-katib-trial"
    [owner] = created["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("TuneJob", NAME, True)
    assert created["metadata"]["labels"]["cogwork.dev/tunejob"] == NAME
    config_map = jobs.cluster.kubectl_json("get", "configmap", f"{NAME}-katib-trial",
                                           "-n", jobs.namespace)
    template = config_map["data"]["trialTemplate.yaml"]  # type: ignore[index]
    assert "hiddenSize: ${trialParameters.width}" in template
    assert config_map["metadata"]["ownerReferences"][0]["name"] == NAME  # type: ignore[index]
    status = tune_status(jobs)
    assert condition(status, "EngineReady")["status"] == "True"

    # The stand-in CRD is strict enough to catch a wrong shape (bounds are strings in Katib).
    bad = copy.deepcopy(created)
    bad["metadata"] = {"name": "wrong-shape"}
    bad["spec"]["parameters"][0]["feasibleSpace"]["min"] = 0.0005
    refused = jobs.apply(bad, check=False)
    assert refused.returncode != 0 and "feasibleSpace.min" in refused.stderr, refused.stderr

    # Katib (played here) reports a running search with a current optimal trial.
    play_katib(jobs, {"conditions": [{"type": "Running", "status": "True",
                                      "reason": "ExperimentRunning"}],
                      "trials": 3, "trialsRunning": 2, "trialsSucceeded": 1,
                      "currentOptimalTrial": OPTIMAL})
    status = jobs.wait_for("bestTrial mirrored", lambda: (
        s if (s := tune_status(jobs)).get("bestTrial") else None), timeout=120)
    assert status["bestTrial"] == {"name": f"{NAME}-q8w2k5zt", "index": -1, "value": 0.9444,
                                   "params": {"batch": "64", "lr": "0.0321", "width": "96"}}
    assert status["trials"] == {"created": 3, "running": 2, "completed": 1, "pruned": 0,
                                "failed": 0}
    assert status["phase"] == "Running"

    # After a restart Kopf serves experiments from the start: the watch path mirrors the end.
    operator.restart()
    play_katib(jobs, {"conditions": [{"type": "Succeeded", "status": "True",
                                      "reason": "ExperimentMaxTrialsReached",
                                      "message": "Experiment has succeeded"}],
                      "trials": 6, "trialsRunning": 0, "trialsSucceeded": 6})
    status = jobs.wait_for("Succeeded", lambda: (
        s if (s := tune_status(jobs)).get("phase") == "Succeeded" else None), timeout=120)
    assert condition(status, "Succeeded")["reason"] == "ExperimentMaxTrialsReached"
    assert status["trialsText"] == "6/6"
    assert status["promotedTrainJob"] == f"{NAME}-best"
    promoted = jobs.get(f"{NAME}-best")
    task = promoted["spec"]["task"]
    assert (task["learningRate"], task["hiddenSize"], task["batchSize"]) == ("0.0321", 96, 64)
    assert promoted["metadata"]["ownerReferences"][0]["name"] == NAME
