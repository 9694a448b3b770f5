"""A failed job keeps what a person needs to debug it: the failed worker's pod (so `kubectl
logs` shows why) until spec.ttlSecondsAfterFinished, no child created after the job ended,
and a command that is not in the image named in the condition with exit code 127."""

from __future__ import annotations

import time
from typing import Any

import pytest
from harness.jobs import Jobs, digits_job, script_job

pytestmark = pytest.mark.cluster

FAILING = ("import sys; print('loading shard 7', flush=True); "
           "sys.exit('bad shard 7: checksum mismatch')")


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), {})


def pods_of(jobs: Jobs, name: str) -> dict[str, dict[str, Any]]:
    return {p["metadata"]["name"]: p for p in jobs.pods(f"cogwork.dev/job-name={name}")}


def test_a_failed_worker_keeps_its_pod_and_logs_until_the_ttl(jobs: Jobs) -> None:
    jobs.apply(script_job("broken", ["python", "-c", FAILING], ttlSecondsAfterFinished=25))
    status = jobs.wait_phase("broken", "Failed", "Succeeded", timeout=180)
    failed = condition(status, "Failed")
    assert status["phase"] == "Failed" and failed["reason"] == "ExitCode1", status
    assert "kubectl logs broken-node-0" in failed["message"]

    time.sleep(5)  # what a pass after the failure would still delete or create
    pods = pods_of(jobs, "broken")
    assert pods["broken-node-0"]["status"]["phase"] == "Failed"
    logs = jobs.cluster.kubectl("logs", "-n", jobs.namespace, "broken-node-0").stdout
    assert "loading shard 7" in logs and "bad shard 7: checksum mismatch" in logs
    # Nothing was created after the job ended (a store pod made again, a replacement).
    ended = status["completionTime"]
    assert all(p["metadata"]["creationTimestamp"] <= ended for p in pods.values()), pods

    # The TTL deletes the job; garbage collection takes the pods with it.
    jobs.wait_for("the TTL to delete the job", lambda: jobs.cluster.kubectl(
        "get", "trainjob", "broken", "-n", jobs.namespace, check=False).returncode != 0,
        timeout=120)
    jobs.wait_for("its pods to go", lambda: not pods_of(jobs, "broken"), timeout=120)


def test_a_command_that_is_not_in_the_image_is_named_with_exit_code_127(jobs: Jobs) -> None:
    jobs.apply(script_job("typo", ["trian.sh", "--epochs", "1"]))
    status = jobs.wait_phase("typo", "Failed", "Succeeded", timeout=180)
    failed = condition(status, "Failed")
    assert failed["reason"] == "ExitCode127", status
    assert "command not found: trian.sh (spec.script.command)" in failed["message"]
    assert status["lastFailure"]["exitCode"] == 127
    assert "typo-node-0" in pods_of(jobs, "typo")


def test_a_deleted_service_is_made_again_before_the_next_restart(jobs: Jobs) -> None:
    """The headless Service is what a replaced pod resolves its peers through."""
    jobs.apply(digits_job("svc", nodes={"min": 1, "max": 1}))
    jobs.wait_for("training past a checkpoint", lambda: int(
        jobs.status("svc").get("lastCheckpointStep") or 0) > 0, timeout=300)
    jobs.cluster.kubectl("delete", "service", "svc", "-n", jobs.namespace)
    jobs.cluster.kubectl("delete", "pod", "svc-node-0", "-n", jobs.namespace, "--wait=false")
    jobs.wait_for("the Service again", lambda: jobs.cluster.kubectl(
        "get", "service", "svc", "-n", jobs.namespace, check=False).returncode == 0, timeout=120)
    status = jobs.wait_phase("svc", "Succeeded", "Failed", timeout=420)
    assert status["phase"] == "Succeeded", status.get("conditions")
    assert status["restarts"] >= 1 and status["progress"]["resumedFromStep"] > 0


def test_a_diverging_run_fails_with_its_own_reason_and_counts_as_a_failed_trial(
        jobs: Jobs) -> None:
    """A learning rate of 1e6 turns the loss NaN within a few steps: not a success."""
    diverging = digits_job("nan", nodes={"min": 1, "max": 1},
                           task={"name": "image-classification", "epochs": 3,
                                 "learningRate": "1e6"})
    jobs.apply(diverging)
    status = jobs.wait_phase("nan", "Failed", "Succeeded", timeout=240)
    failed = condition(status, "Failed")
    assert status["phase"] == "Failed" and failed["reason"] == "NonFiniteLoss", status
    assert "non-finite loss" in failed["message"]
    assert status.get("restarts", 0) == 0  # a restart from the checkpoint diverges again

    # In a search, such a trial counts as failed and the search goes on with the others.
    template = digits_job("unused", nodes={"min": 1, "max": 1},
                          task={"name": "image-classification", "epochs": 3})["spec"]
    jobs.apply({"apiVersion": "cogwork.dev/v1alpha1", "kind": "TuneJob",
                "metadata": {"name": "lrs"},
                "spec": {"parameters": [{"name": "lr", "field": "task.learningRate",
                                         "categorical": {"values": ["0.05", "1e6"]}}],
                         "search": {"algorithm": "grid"},
                         "budget": {"maxTrials": 2, "parallelTrials": 2},
                         "trialTemplate": template}})
    tuned = jobs.wait_for("the search to finish", lambda: (
        s if (s := jobs.get("lrs", "tunejob").get("status") or {}).get("phase")
        in ("Succeeded", "Failed") else None), timeout=300)
    assert tuned["phase"] == "Succeeded", tuned
    assert tuned["trials"]["failed"] == 1 and tuned["trials"]["completed"] == 1
    assert tuned["bestTrial"]["params"]["lr"] == "0.05"
