"""TrainJob end to end on the real control plane + node agent: training, elastic recovery,
failure policy, suspend, scale, restart safety."""

from __future__ import annotations

import time
from typing import Any

import pytest
from harness.cluster import Cluster
from harness.jobs import Jobs, digits_job
from harness.operator import Operator

pytestmark = pytest.mark.cluster


def workers(jobs: Jobs, name: str) -> list[dict[str, Any]]:
    return jobs.pods(f"cogwork.dev/job-name={name},cogwork.dev/role=worker")


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), {})


def test_two_node_digits_succeeds(jobs: Jobs, cluster: Cluster) -> None:
    jobs.apply(digits_job("digits"))
    jobs.wait_for("2 worker pods", lambda: len(workers(jobs, "digits")) == 2, timeout=60)
    status = jobs.wait_phase("digits", "Succeeded", "Failed", timeout=420)
    assert status["phase"] == "Succeeded", status.get("conditions")
    waited = cluster.kubectl("wait", "trainjob/digits", "-n", jobs.namespace,
                             "--for=condition=Succeeded", "--timeout=30s")
    assert "condition met" in waited.stdout
    assert status["evaluation"]["accuracy"] >= 0.95
    assert len(status["evaluation"]["confusionMatrix"]) == 10
    assert status["progress"]["progressPercentage"] == 100
    assert status.get("restarts", 0) == 0
    assert {m["name"] for m in status["metrics"]["latest"]} >= {"loss"}
    # A finished job keeps no running children: the rendezvous store is gone too.
    running = [p for p in jobs.pods("cogwork.dev/job-name=digits")
               if p["status"].get("phase") in ("Pending", "Running")
               and not p["metadata"].get("deletionTimestamp")]
    assert running == [], [p["metadata"]["name"] for p in running]


def _progress_step(jobs: Jobs, name: str) -> int:
    return int((jobs.status(name).get("progress") or {}).get("step") or 0)


@pytest.mark.parametrize("victim", ["node-1", "node-0", "rdzv"])
def test_killed_pod_resumes_from_checkpoint(jobs: Jobs, victim: str) -> None:
    name = f"kill-{victim}"
    every = 10
    jobs.apply(digits_job(name, checkpoint={"everySteps": every}))
    jobs.wait_for("training past step 40", lambda: _progress_step(jobs, name) >= 40, timeout=300)
    before = jobs.status(name)
    checkpoint_before = int(before.get("lastCheckpointStep") or 0)
    step_before = int(before["progress"]["step"])
    assert checkpoint_before > 0
    jobs.cluster.kubectl("delete", "pod", f"{name}-{victim}", "-n", jobs.namespace,
                         "--wait=false")
    status = jobs.wait_phase(name, "Succeeded", "Failed", timeout=420)
    assert status["phase"] == "Succeeded", status.get("conditions")
    assert status["restarts"] >= 1
    resumed = status["progress"]["resumedFromStep"]
    # It resumed from a checkpoint at least as new as the one we saw, and lost at most one
    # checkpoint interval of the work done when the pod was killed.
    assert resumed >= checkpoint_before
    assert resumed % every == 0
    assert resumed >= step_before - every
    assert status["evaluation"]["accuracy"] >= 0.93
    assert condition(status, "Restarting").get("status") == "False"
    reasons = {e["reason"] for e in jobs.events(name)}
    assert "Restarting" in reasons


def test_scale_down_checkpoints_first(jobs: Jobs) -> None:
    name = "scale"
    jobs.apply(digits_job(name, nodes={"min": 1, "max": 3, "count": 2}))
    jobs.wait_for("training past step 20", lambda: _progress_step(jobs, name) >= 20, timeout=300)
    jobs.cluster.kubectl("scale", f"trainjob/{name}", "-n", jobs.namespace, "--replicas=1")
    acked = jobs.wait_for(
        "checkpoint acknowledged",
        lambda: (jobs.status(name).get("checkpointRequest") or {}).get("acknowledged"),
        timeout=120)
    assert acked is True
    jobs.wait_for("node-1 removed",
                  lambda: all(p["metadata"]["name"] != f"{name}-node-1"
                              for p in workers(jobs, name)), timeout=120)
    status = jobs.wait_phase(name, "Succeeded", "Failed", timeout=420)
    assert status["phase"] == "Succeeded"
    assert status["replicas"] <= 1
    assert "ScaledDown" in {e["reason"] for e in jobs.events(name)}


def _script_job(name: str, code: int, **overrides: Any) -> dict[str, Any]:
    job = digits_job(name, **overrides)
    del job["spec"]["task"], job["spec"]["data"]
    job["spec"]["script"] = {"command": ["python", "-c", f"import sys; sys.exit({code})"]}
    job["spec"]["nodes"] = {"min": 1, "max": 1}
    job["spec"]["rendezvous"] = {"joinTimeoutSeconds": 30, "lastCallTimeoutSeconds": 1,
                                 "maxRestarts": 0}
    return job


def test_non_retryable_exit_code_fails_job(jobs: Jobs) -> None:
    jobs.apply(_script_job("exit2", 2))
    status = jobs.wait_phase("exit2", "Failed", "Succeeded", timeout=180)
    failed = condition(status, "Failed")
    assert failed["status"] == "True"
    assert failed["reason"] == "ExitCode2"
    assert "exited with code 2" in failed["message"]
    assert status["lastFailure"]["exitCode"] == 2
    # Nothing keeps running after a failure.
    jobs.wait_for("no running pods", lambda: not [
        p for p in jobs.pods("cogwork.dev/job-name=exit2")
        if p["status"].get("phase") in ("Pending", "Running")], timeout=60)


POD_FIELDS_CHECK = """
import os, pathlib
assert os.environ["API_KEY"] == "s3cret", "valueFrom secretKeyRef"
assert os.environ["TEAM_MODE"] == "fast", "envFrom configMapRef with prefix"
assert pathlib.Path("/etc/team/MODE").read_text() == "fast", "configMap volume"
assert pathlib.Path("/creds/key").read_text() == "s3cret", "secret volume at an item path"
pathlib.Path("/scratch/x").write_text("ok")  # emptyDir
assert os.environ["HOME"] == "/cogwork/home", "HOME of a read-only root filesystem"
pathlib.Path(os.environ["HOME"], "cache").write_text("ok")
pathlib.Path("/tmp/x").write_text("ok")
print("pod fields ok")
"""


def test_pod_fields_reach_the_trainer(jobs: Jobs) -> None:
    jobs.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
                "stringData": {"key": "s3cret"}})
    jobs.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "team"},
                "data": {"MODE": "fast"}})
    job = _script_job("podfields", 0, env=[
        {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "key"}}}],
        envFrom=[{"configMapRef": {"name": "team"}, "prefix": "TEAM_"}],
        podTemplate={
            "volumes": [{"name": "team", "configMap": {"name": "team"}},
                        {"name": "creds", "secret": {"secretName": "creds",
                                                     "items": [{"key": "key", "path": "key"}]}},
                        {"name": "scratch", "emptyDir": {"sizeLimit": "64Mi"}}],
            "volumeMounts": [{"name": "team", "mountPath": "/etc/team", "readOnly": True},
                             {"name": "creds", "mountPath": "/creds", "readOnly": True},
                             {"name": "scratch", "mountPath": "/scratch"}],
            "shmSize": "256Mi", "securityContext": {"runAsUser": 1000}})
    job["spec"]["script"] = {"command": ["python", "-c", POD_FIELDS_CHECK]}
    jobs.apply(job)
    status = jobs.wait_phase("podfields", "Succeeded", "Failed", timeout=240)
    assert status["phase"] == "Succeeded", status.get("conditions")
    (pod,) = workers(jobs, "podfields")
    assert pod["spec"]["securityContext"]["runAsUser"] == 1000
    assert pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


def test_backoff_limit_exhausted_fails_job(jobs: Jobs) -> None:
    policy = {"backoffLimit": 1,
              "rules": [{"action": "RestartNode",
                         "onExitCodes": {"operator": "In", "values": [3]}}]}
    jobs.apply(_script_job("backoff", 3, failurePolicy=policy))
    status = jobs.wait_phase("backoff", "Failed", "Succeeded", timeout=240)
    assert condition(status, "Failed")["reason"] == "BackoffLimitExceeded"
    assert status["restarts"] == 1


def test_suspend_and_resume(jobs: Jobs) -> None:
    name = "suspended"
    job = digits_job(name)
    job["spec"]["suspend"] = True
    jobs.apply(job)
    jobs.wait_phase(name, "Suspended", timeout=60)
    time.sleep(3)
    assert jobs.pods(f"cogwork.dev/job-name={name}") == []
    jobs.cluster.kubectl("patch", "trainjob", name, "-n", jobs.namespace, "--type=merge",
                         "-p", '{"spec":{"suspend":false}}')
    jobs.wait_for("pods after resume", lambda: len(workers(jobs, name)) == 2, timeout=60)
    jobs.cluster.kubectl("patch", "trainjob", name, "-n", jobs.namespace, "--type=merge",
                         "-p", '{"spec":{"suspend":true}}')
    jobs.wait_for("pods gone after suspend",
                  lambda: jobs.pods(f"cogwork.dev/job-name={name}") == [], timeout=90)
    assert jobs.status(name)["phase"] == "Suspended"


@pytest.mark.parametrize("spec_patch, field", [
    ({"nodes": {"min": 3, "max": 1}}, "spec.nodes"),
    ({"resources": {"gpu": -1}}, "spec.resources.gpu"),
    ({"task": {"name": "speech-recognition"}}, "spec.task.name"),
    ({"data": None}, "spec.data"),
])
def test_bad_spec_rejected_at_apply(jobs: Jobs, spec_patch: dict[str, Any], field: str) -> None:
    job = digits_job("bad")
    for key, value in spec_patch.items():
        if value is None:
            del job["spec"][key]
        else:
            job["spec"][key] = value
    result = jobs.apply(job, check=False)
    assert result.returncode != 0
    assert field in result.stderr, result.stderr
    assert jobs.cluster.kubectl("get", "trainjob", "bad", "-n", jobs.namespace,
                                check=False).returncode != 0


def test_operator_restart_mid_job_no_duplicates(jobs: Jobs, operator: Operator) -> None:
    name = "restart-safe"
    jobs.apply(digits_job(name))
    jobs.wait_for("training started", lambda: _progress_step(jobs, name) >= 5, timeout=300)
    seen: set[str] = set()
    for _ in range(2):
        operator.restart()
        time.sleep(2)
        seen |= {p["metadata"]["uid"] for p in workers(jobs, name)}
    status = jobs.wait_phase(name, "Succeeded", "Failed", timeout=420)
    assert status["phase"] == "Succeeded"
    seen |= {p["metadata"]["uid"] for p in workers(jobs, name)}
    assert len(seen) == 2, "the operator restarts must not replace or duplicate worker pods"
    assert status.get("restarts", 0) == 0
    # A finished job never recreates pods, even after they are deleted.
    jobs.cluster.kubectl("delete", "pods", "-n", jobs.namespace, "-l",
                         f"cogwork.dev/job-name={name}", "--wait=true")
    operator.restart()
    time.sleep(5)
    assert jobs.pods(f"cogwork.dev/job-name={name}") == []
