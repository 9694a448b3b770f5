"""A team's own image (the harness's bare image: torch, numpy and their script, nothing of
Cogwork) runs as an elastic TrainJob: the store runs the trainer image, the launcher and the SDK
reach the workers through an init container, the plain DDP script trains across two pods and
resumes from its own checkpoint, its stdout metrics reach status, and the SDK script reports
progress, checkpoints before a scale-down and stops when asked."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from harness.images import (
    BARE_IMAGE,
    HF_IMAGE,
    HF_PACKAGES,
    LIGHTNING_IMAGE,
    LIGHTNING_PACKAGES,
    installed,
)
from harness.jobs import Jobs
from harness.operator import Operator

pytestmark = pytest.mark.cluster


def plain_script_job(name: str, *args: str, epochs: int = 3, **overrides: Any
                     ) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "image": BARE_IMAGE,
        "script": {"command": ["python", "train_ddp.py"],
                   "args": ["--epochs", str(epochs), "--checkpoint-dir", "/cogwork/checkpoints",
                            *args]},
        "nodes": {"min": 1, "max": 2},
        "resources": {"cpu": "1", "memory": "1Gi"},
        "rendezvous": {"joinTimeoutSeconds": 60, "lastCallTimeoutSeconds": 2},
        **overrides,
    }
    return {"apiVersion": "cogwork.dev/v1alpha1", "kind": "TrainJob",
            "metadata": {"name": name}, "spec": spec}


def test_plain_ddp_script_on_bare_image_succeeds(jobs: Jobs) -> None:
    jobs.apply(plain_script_job("plain"))

    def store_and_worker() -> dict[str, Any] | None:
        pods = {p["metadata"]["name"]: p for p in jobs.pods("cogwork.dev/job-name=plain")}
        return pods if {"plain-rdzv", "plain-node-0"} <= set(pods) else None

    # Looked at while the job runs: a finished job's pods are deleted.
    pods = jobs.wait_for("store and worker pods", store_and_worker, timeout=120)
    status = jobs.wait_phase("plain", "Succeeded", "Failed", timeout=300)
    assert status["phase"] == "Succeeded", status.get("conditions")
    worker = pods["plain-node-0"]
    assert worker["spec"]["containers"][0]["image"] == BARE_IMAGE
    (init,) = worker["spec"]["initContainers"]
    assert init["image"] != BARE_IMAGE  # the launcher comes from the trainer image
    assert "cogwork_sdk.install" in init["command"]
    assert pods["plain-rdzv"]["spec"]["containers"][0]["image"] != BARE_IMAGE
    logs = "".join(jobs.cluster.pod_log(jobs.namespace, f"plain-node-{i}", "trainer")
                   for i in range(2))
    assert "epoch=3 loss=" in logs and "val_accuracy=" in logs
    assert "ModuleNotFoundError" not in logs
    # Zero-code metrics: the script's `epoch=3 loss=... val_accuracy=...` lines, in status.
    latest = {m["name"]: float(m["value"]) for m in status["metrics"]["latest"]}
    assert set(latest) == {"loss", "val_accuracy", "epoch_seconds"}
    assert 0.5 < latest["val_accuracy"] <= 1
    assert status["progress"]["epoch"] == 3
    printed = re.findall(r"epoch=3 loss=\S+ val_accuracy=(\S+)", logs)
    assert float(printed[-1]) == latest["val_accuracy"]


def _epoch(jobs: Jobs, name: str) -> int:
    return int((jobs.status(name).get("progress") or {}).get("epoch") or 0)


def test_plain_script_killed_worker_resumes_from_its_own_checkpoint(jobs: Jobs) -> None:
    """The script checkpoints every epoch before printing it, so the epoch status shows when
    the pod is killed is on disk: the restarted group loses at most that one interval."""
    name = "plain-kill"
    jobs.apply(plain_script_job(name, "--step-delay", "0.05", epochs=8))
    jobs.wait_for("two epochs done", lambda: _epoch(jobs, name) >= 2, timeout=240)
    epoch_before = _epoch(jobs, name)
    jobs.cluster.kubectl("delete", "pod", f"{name}-node-1", "-n", jobs.namespace,
                         "--wait=false")
    status = jobs.wait_phase(name, "Succeeded", "Failed", timeout=420)
    assert status["phase"] == "Succeeded", status.get("conditions")
    assert status["restarts"] >= 1
    logs = "".join(jobs.cluster.pod_log(jobs.namespace, f"{name}-node-{i}", "trainer")
                   for i in range(2))
    resumed = [int(n) for n in re.findall(r"resumed after epoch (\d+)", logs)]
    assert resumed and min(resumed) >= epoch_before, (resumed, epoch_before)
    assert status["progress"]["epoch"] == 8


def sdk_job(name: str, **overrides: Any) -> dict[str, Any]:
    job = plain_script_job(name, **overrides)
    job["spec"]["script"] = {"command": ["python", "train_sdk.py"],
                             "args": ["--epochs", "40", "--step-delay", "0.05"]}
    job["spec"]["checkpoint"] = {"everySteps": 1000}  # only the operator's requests checkpoint
    return job


def test_sdk_script_progress_scale_down_and_graceful_stop(jobs: Jobs) -> None:
    name = "sdk"
    jobs.apply(sdk_job(name, nodes={"min": 1, "max": 3, "count": 3}))
    progress = jobs.wait_for(
        "progress with an ETA",
        lambda: (p := jobs.status(name).get("progress") or {}).get(
            "estimatedRemainingSeconds") is not None and p.get("step", 0) >= 5 and p,
        timeout=240)
    assert 0 <= progress["progressPercentage"] < 100 and progress["totalSteps"] == 40 * 25
    jobs.wait_for("3 workers", lambda: len(jobs.pods(f"cogwork.dev/job-name={name},"
                                                     "cogwork.dev/role=worker")) == 3,
                  timeout=60)

    jobs.cluster.kubectl("scale", f"trainjob/{name}", "-n", jobs.namespace, "--replicas=2")
    acked = jobs.wait_for(
        "checkpoint acknowledged",
        lambda: ((s := jobs.status(name)).get("checkpointRequest") or {}).get("acknowledged") and s,
        timeout=120)
    saved = int(acked["lastCheckpointStep"])
    resumed = jobs.wait_for(
        "resumed on 2 nodes",
        lambda: (jobs.status(name).get("progress") or {}).get("resumedFromStep"), timeout=180)
    assert resumed == saved  # no step lost: the group restarts from the requested checkpoint
    assert all(p["metadata"]["name"] != f"{name}-node-2" for p in
               jobs.pods(f"cogwork.dev/job-name={name},cogwork.dev/role=worker"))

    jobs.cluster.kubectl("patch", f"trainjob/{name}", "-n", jobs.namespace, "--type=merge",
                         "-p", '{"spec": {"stop": true}}')
    status = jobs.wait_phase(name, "Succeeded", "Failed", timeout=180)
    assert status["phase"] == "Succeeded", status.get("conditions")
    succeeded = next(c for c in status["conditions"] if c["type"] == "Succeeded")
    assert succeeded["reason"] == "Stopped"
    assert saved < int(status["progress"]["step"]) < 40 * 25  # stopped early, after the resume
    # Rank 0 (which prints) may be on either remaining node after the new rendezvous.
    logs = "".join(jobs.cluster.pod_log(jobs.namespace, f"{name}-node-{i}", "trainer")
                   for i in range(2))
    assert f"resumed from step {saved} at world size 2" in logs


def test_bare_image_cannot_run_the_builtin_task(jobs: Jobs) -> None:
    """The built-in task needs cogwork_trainer: on the bare image it fails, with the import
    error in the worker's log, as it would with a real image that lacks it."""
    job = plain_script_job("builtin-on-bare", script=None,
                           task={"name": "image-classification", "epochs": 1},
                           data={"dataset": "digits"}, nodes={"min": 1, "max": 1})
    del job["spec"]["script"]
    jobs.apply(job)
    status = jobs.wait_phase("builtin-on-bare", "Succeeded", "Failed", timeout=300)
    assert status["phase"] == "Failed", status.get("conditions")
    log = jobs.cluster.pod_log(jobs.namespace, "builtin-on-bare-node-0", "trainer")
    assert "No module named 'cogwork_trainer'" in log


def finished_search(jobs: Jobs, name: str
                    ) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """A TuneJob's final status (asserted Succeeded), its trials and the pruned ones."""
    status = jobs.wait_for(
        "search finished",
        lambda: (s := jobs.get(name, kind="tunejob").get("status") or {}).get("phase") in
        ("Succeeded", "Failed") and s, timeout=900)
    assert status["phase"] == "Succeeded", status
    children = jobs.cluster.kubectl_json("get", "trainjobs", "-n", jobs.namespace, "-l",
                                         f"cogwork.dev/tunejob={name}")["items"]
    pruned = [t for t in children if "cogwork.dev/pruned-at" in t["metadata"]["annotations"]]
    return status, children, pruned


def test_tunejob_asha_over_the_sdk_script_prunes_and_promotes(jobs: Jobs) -> None:
    """Trials of the SDK script on the bare image: the learning rate reaches it through env,
    its per-epoch val_accuracy is the objective, ASHA stops weak trials at the next step."""
    name = "sdk-tune"
    # Rungs at 1 and 3 epochs (reduction 3); 8 epochs, so the next rung (9) lies past the end:
    # a trial pruned at its last epoch could not stop early.
    epochs, steps_per_epoch = 8, 25
    template = sdk_job("unused")["spec"]
    # 0.15 s a step: a trial pruned at epoch 3 has > 15 s left, so the pruner's stop (carried
    # by the downward-API file) reaches it well before its end even on a loaded machine.
    template["script"]["args"] = ["--epochs", str(epochs), "--step-delay", "0.15"]
    template["nodes"] = {"min": 1, "max": 1}
    jobs.apply({
        "apiVersion": "cogwork.dev/v1alpha1", "kind": "TuneJob", "metadata": {"name": name},
        "spec": {
            "objective": {"metric": "val_accuracy", "direction": "maximize"},
            "parameters": [{"name": "lr", "env": "LR",
                            "logUniform": {"min": "0.00001", "max": "0.5"}}],
            "search": {"algorithm": "random", "seed": 7},
            "pruner": {"algorithm": "asha", "resource": "epoch", "minResource": 1,
                       "reductionFactor": 3},
            "budget": {"maxTrials": 5, "parallelTrials": 2, "maxFailedTrials": 1},
            "promote": {"enabled": True},
            "trialTemplate": template,
        },
    })
    status, _, pruned = finished_search(jobs, name)
    assert pruned and status["trials"]["pruned"] == len(pruned)
    full_budget = epochs * steps_per_epoch
    for trial in pruned:
        progress = trial["status"]["progress"]
        assert progress["step"] < full_budget, trial["metadata"]["name"]  # stopped early
        reasons = {c["type"]: c["reason"] for c in trial["status"]["conditions"]
                   if c["status"] == "True"}
        assert reasons.get("Succeeded") == "Stopped", reasons
    best = status["bestTrial"]
    promoted = jobs.get(status["promotedTrainJob"])
    assert {"name": "LR", "value": best["params"]["lr"]} in promoted["spec"]["env"]
    assert promoted["spec"]["image"] == BARE_IMAGE


USER_POD_CHECK = """
import hashlib, os, pathlib, sys
token = os.environ["HF_TOKEN"]
assert hashlib.sha256(token.encode()).hexdigest() == sys.argv[1], "the Secret, by valueFrom"
files = sorted(p.name for p in pathlib.Path("/data/shards").iterdir())
assert files == ["part-0.txt", "part-1.txt"], files
assert pathlib.Path("/data/shards/part-1.txt").read_text() == "rows 100-199", "claim data"
shm = os.statvfs("/dev/shm")
print("shm_bytes=%d" % (shm.f_blocks * shm.f_frsize))
print("data_files=%d" % len(files))
"""


def test_secret_claim_data_and_shm_size_on_bare_image(jobs: Jobs, operator: Operator) -> None:
    """A team's pod needs: a token from a Secret (never shown anywhere by the operator), its
    data in a claim, a /dev/shm of the size it asked for."""
    secret = f"hf_{uuid.uuid4().hex}"
    jobs.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hf"},
                "stringData": {"token": secret}})
    jobs.apply({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": "team-data"},
                "spec": {"accessModes": ["ReadWriteMany"],
                         "resources": {"requests": {"storage": "1Gi"}}}})
    bound = jobs.wait_for("claim bound", lambda: jobs.cluster.kubectl_json(
        "get", "pvc", "team-data", "-n", jobs.namespace)["spec"].get("volumeName"), timeout=60)
    pv = jobs.cluster.kubectl_json("get", "pv", str(bound))
    shards = Path(pv["spec"]["hostPath"]["path"]) / "shards"
    shards.mkdir(parents=True)
    (shards / "part-0.txt").write_text("rows 0-99")
    (shards / "part-1.txt").write_text("rows 100-199")

    job = plain_script_job("team-pod", nodes={"min": 1, "max": 1},
                           env=[{"name": "HF_TOKEN", "valueFrom": {
                               "secretKeyRef": {"name": "hf", "key": "token"}}}],
                           podTemplate={
                               "volumes": [{"name": "team-data", "persistentVolumeClaim": {
                                   "claimName": "team-data", "readOnly": True}}],
                               "volumeMounts": [{"name": "team-data", "mountPath": "/data",
                                                 "readOnly": True}],
                               "shmSize": "128Mi"})
    digest = hashlib.sha256(secret.encode()).hexdigest()  # the spec must not hold the value
    job["spec"]["script"] = {"command": ["python", "-c", USER_POD_CHECK, digest]}
    jobs.apply(job)
    status = jobs.wait_phase("team-pod", "Succeeded", "Failed", timeout=240)
    assert status["phase"] == "Succeeded", status.get("conditions")
    assert status["metrics"]["latest"] and {m["name"]: m["value"] for m in
                                            status["metrics"]["latest"]} == {
        "shm_bytes": f"{128 * 2**20:.6g}", "data_files": "2"}
    log = jobs.cluster.pod_log(jobs.namespace, "team-pod-node-0", "trainer")
    assert f"shm_bytes={128 * 2**20}" in log
    # The value reached the process, and nothing the operator writes shows it.
    shown = json.dumps(jobs.get("team-pod")) + json.dumps(jobs.events("team-pod"))
    assert secret not in shown and secret not in operator.log_file.read_text(errors="replace")


@pytest.mark.skipif(not all(installed(p) for p in HF_PACKAGES),
                    reason="transformers/accelerate not installed (the dev extra has them)")
def test_hugging_face_trainer_reports_and_stops_on_request(jobs: Jobs) -> None:
    """The HF script (one added line: the callback) on a team's HF image: progress with the
    Trainer's total steps, its eval metrics in status, and a stop request (what the tuner sends
    a pruned trial: spec.stop) ends it early with a checkpoint, Succeeded/Stopped."""
    name = "hf"
    job = plain_script_job(name, nodes={"min": 1, "max": 1},
                           resources={"cpu": "2", "memory": "2Gi"})
    job["spec"]["image"] = HF_IMAGE
    job["spec"]["script"] = {"command": ["python", "train_hf.py"],
                             "args": ["--max-steps", "3000", "--save-steps", "1000"]}
    jobs.apply(job)
    def evaluated() -> dict[str, Any] | None:
        status = jobs.status(name)
        latest = (status.get("metrics") or {}).get("latest") or []
        return status if any(m["name"] == "eval_loss" for m in latest) else None

    status = jobs.wait_for("an evaluation in status", evaluated, timeout=300)
    assert status["progress"]["totalSteps"] == 3000
    assert 0 < status["progress"]["step"] < 3000
    jobs.cluster.kubectl("patch", f"trainjob/{name}", "-n", jobs.namespace, "--type=merge",
                         "-p", '{"spec": {"stop": true}}')
    status = jobs.wait_phase(name, "Succeeded", "Failed", timeout=180)
    assert status["phase"] == "Succeeded", status.get("conditions")
    succeeded = next(c for c in status["conditions"] if c["type"] == "Succeeded")
    assert succeeded["reason"] == "Stopped"
    assert status["progress"]["step"] < 3000  # stopped early, at the next step
    assert status["lastCheckpointStep"] == status["progress"]["step"]  # saved on the way out
    latest = {m["name"] for m in status["metrics"]["latest"]}
    assert {"loss", "eval_loss", "learning_rate"} <= latest


@pytest.mark.skipif(not all(installed(p) for p in HF_PACKAGES),
                    reason="transformers/accelerate not installed (the dev extra has them)")
def test_tunejob_prunes_hugging_face_trials_early(jobs: Jobs) -> None:
    """ASHA over the HF script's eval_loss (reported by the callback at every evaluation, by
    step): a pruned trial stops at its next step, well before max_steps."""
    name = "hf-tune"
    max_steps = 400
    template = plain_script_job("unused", nodes={"min": 1, "max": 1},
                                resources={"cpu": "1", "memory": "2Gi"})["spec"]
    template["image"] = HF_IMAGE
    template["script"] = {"command": ["python", "train_hf.py"],
                          "args": ["--max-steps", str(max_steps), "--save-steps", "1000"]}
    jobs.apply({
        "apiVersion": "cogwork.dev/v1alpha1", "kind": "TuneJob", "metadata": {"name": name},
        "spec": {
            "objective": {"metric": "eval_loss", "direction": "minimize"},
            "parameters": [{"name": "lr", "env": "LR",
                            "logUniform": {"min": "0.000001", "max": "0.005"}}],
            "search": {"algorithm": "random", "seed": 11},
            "pruner": {"algorithm": "asha", "resource": "step", "minResource": 50,
                       "reductionFactor": 3},
            "budget": {"maxTrials": 4, "parallelTrials": 2, "maxFailedTrials": 1},
            "trialTemplate": template,
        },
    })
    _, children, pruned = finished_search(jobs, name)
    assert pruned, [t["status"].get("progress") for t in children]
    for trial in pruned:
        assert trial["status"]["progress"]["step"] < max_steps, trial["metadata"]["name"]


@pytest.mark.skipif(not all(installed(p) for p in LIGHTNING_PACKAGES),
                    reason="lightning not installed (the dev extra has it)")
def test_lightning_script_reports_and_stops_on_request(jobs: Jobs) -> None:
    """The Lightning script (one added line: the callback) on a team's Lightning image, 2 nodes:
    progress with total steps, logged metrics in status, a stop request ends it early."""
    name = "lit"
    job = plain_script_job(name, nodes={"min": 2, "max": 2})
    job["spec"]["image"] = LIGHTNING_IMAGE
    job["spec"]["script"] = {"command": ["python", "train_lightning.py"],
                             "args": ["--max-steps", "100000"]}
    jobs.apply(job)

    def validated() -> dict[str, Any] | None:
        status = jobs.status(name)
        latest = (status.get("metrics") or {}).get("latest") or []
        return status if any(m["name"] == "val_accuracy" for m in latest) else None

    status = jobs.wait_for("a validation in status", validated, timeout=300)
    assert status["progress"]["totalSteps"] == 100000
    jobs.cluster.kubectl("patch", f"trainjob/{name}", "-n", jobs.namespace, "--type=merge",
                         "-p", '{"spec": {"stop": true}}')
    status = jobs.wait_phase(name, "Succeeded", "Failed", timeout=180)
    assert status["phase"] == "Succeeded", status.get("conditions")
    assert next(c for c in status["conditions"] if c["type"] == "Succeeded")["reason"] == \
        "Stopped"
    assert 0 < status["progress"]["step"] < 100000
    assert status["lastCheckpointStep"] == status["progress"]["step"]
    assert {"loss", "val_accuracy"} <= {m["name"] for m in status["metrics"]["latest"]}
