"""A team's own image (the harness's bare image: torch, numpy and their script, nothing of
Cogwork) runs as an elastic TrainJob: the store runs the trainer image, the launcher reaches the
workers through an init container, and the plain DDP script trains across two pods."""

from __future__ import annotations

from typing import Any

import pytest
from harness.images import BARE_IMAGE
from harness.jobs import Jobs

pytestmark = pytest.mark.cluster


def plain_script_job(name: str, **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "image": BARE_IMAGE,
        "script": {"command": ["python", "train_ddp.py"],
                   "args": ["--epochs", "3", "--checkpoint-dir", "/cogwork/checkpoints"]},
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
    assert "cogwork_trainer.install_launcher" in init["command"]
    assert pods["plain-rdzv"]["spec"]["containers"][0]["image"] != BARE_IMAGE
    logs = "".join(jobs.cluster.pod_log(jobs.namespace, f"plain-node-{i}", "trainer")
                   for i in range(2))
    assert "epoch=2 loss=" in logs and "val_accuracy=" in logs
    assert "ModuleNotFoundError" not in logs


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
