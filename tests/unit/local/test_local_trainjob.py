"""`cogwork run` end to end on this machine: the store and two torchrun nodes as local processes."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from cogwork.local.dispatch import run_document
from cogwork.local.processes import descendants

REPO = Path(__file__).resolve().parents[3]


def tiny_job(name: str = "tiny", **spec: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        # 22 steps per epoch at the global batch of 64
        "task": {"name": "image-classification", "model": "mlp", "epochs": 2,
                 "batchSize": 64, "learningRate": "0.05"},
        "data": {"dataset": "digits"},
        "nodes": {"min": 1, "max": 2},
        "checkpoint": {"everySteps": 10},
        "rendezvous": {"joinTimeoutSeconds": 60, "lastCallTimeoutSeconds": 1},
    }
    doc.update(spec)
    return {"apiVersion": "cogwork.dev/v1alpha1", "kind": "TrainJob",
            "metadata": {"name": name}, "spec": doc}


def processes_with_env(needle: str) -> list[int]:
    """Pids whose environment contains `needle` (our job uid marks every process we start)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle.encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def alive(pids: set[int]) -> set[int]:
    return {pid for pid in pids if Path(f"/proc/{pid}").exists()}


@pytest.mark.timeout(120)
def test_two_nodes_train_to_success_and_print_the_evaluation(tmp_path: Path) -> None:
    uid = str(uuid.uuid4())
    doc = tiny_job()
    doc["metadata"]["uid"] = uid
    out = io.StringIO()
    # Children this pytest process already had (e.g. multiprocessing's resource tracker,
    # started by earlier tests) are not the runner's.
    before = descendants(os.getpid())

    assert run_document(doc, workdir=tmp_path, out=out) == 0

    text = out.getvalue()
    evaluation = json.loads((tmp_path / "checkpoints" / "evaluation.json").read_text())
    matrix = evaluation["confusionMatrix"]
    assert sum(map(sum, matrix)) == evaluation["samples"] == 360  # 20% of 1,797 digits
    assert evaluation["accuracy"] > 0.8  # two epochs of the default MLP reach ~0.94
    assert f"accuracy  {evaluation['accuracy']:.4f}" in text
    assert f"macro F1  {evaluation['macroF1']:.4f}" in text
    assert "confusion matrix" in text
    assert "2 node(s) x 1 process(es)" in text
    assert "step 44/44" in text and text.rstrip().endswith("succeeded")
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "44"
    assert (tmp_path / "checkpoints" / "model.pt").exists()
    # Both nodes were in the world (the per-rank batch split is what makes it 2 nodes).
    worker_logs = list((tmp_path / "logs").rglob("worker/*/combined.log"))
    assert len(worker_logs) == 2
    assert any("rank 0 of world 2" in p.read_text() for p in worker_logs)
    assert processes_with_env(uid) == []
    assert descendants(os.getpid()) - before == set()  # the store was stopped too


@pytest.mark.parametrize(("change", "field"), [
    ({"nodes": {"min": 0, "max": 2}}, "spec.nodes.min"),
    ({"nodez": {"min": 1}}, "spec.nodez"),
    ({"task": {"name": "image-classification", "batchSize": "many"}}, "spec.task.batchSize"),
])
def test_an_invalid_manifest_exits_2_naming_the_field(tmp_path: Path, change: dict[str, Any],
                                                      field: str) -> None:
    out = io.StringIO()
    assert run_document(tiny_job(**change), workdir=tmp_path / "w", out=out) == 2
    assert "invalid TrainJob manifest" in out.getvalue()
    assert f"  {field}: " in out.getvalue()
    assert not (tmp_path / "w").exists()  # nothing started, nothing written


def test_an_unknown_kind_exits_2(tmp_path: Path) -> None:
    out = io.StringIO()
    assert run_document({"kind": "PodGroup"}, workdir=tmp_path, out=out) == 2
    assert "cannot run kind 'PodGroup'" in out.getvalue()


@pytest.mark.timeout(120)
def test_a_failing_program_fails_the_run_with_its_log(tmp_path: Path) -> None:
    doc = tiny_job(nodes={"min": 1, "max": 1}, data={"path": str(tmp_path / "missing.npz")},
                   rendezvous={"maxRestarts": 0})  # retrying cannot find the file
    out = io.StringIO()
    assert run_document(doc, workdir=tmp_path, out=out) == 1
    text = out.getvalue()
    assert "failed (FAILED)" in text
    assert "missing.npz" in text  # the trainer's own error, from the node's log


@pytest.mark.timeout(120)
def test_ctrl_c_stops_every_process(tmp_path: Path) -> None:
    uid = str(uuid.uuid4())
    doc = tiny_job(task={"name": "image-classification", "epochs": 1000})  # minutes of work
    doc["metadata"]["uid"] = uid
    manifest = tmp_path / "job.yaml"
    manifest.write_text(yaml.safe_dump(doc))
    cli = subprocess.Popen(
        [sys.executable, "-m", "cogwork.cli", "run", "-f", str(manifest),
         "--workdir", str(tmp_path / "w")],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert cli.stdout is not None
        for line in cli.stdout:  # training is under way once a step is reported
            if line.startswith("step "):
                break
        started = descendants(cli.pid)
        assert len(started) >= 5  # store, two agents, two ranks (and maybe their helpers)
        assert len(processes_with_env(uid)) >= 4  # agents and ranks carry the job uid
        cli.send_signal(signal.SIGINT)
        assert cli.wait(timeout=60) == 130
    finally:
        if cli.poll() is None:
            cli.kill()
    assert "interrupted" in cli.stdout.read()
    deadline = time.monotonic() + 10
    while alive(started) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert alive(started) == set(), "processes outlived Ctrl-C"
    assert processes_with_env(uid) == []
    assert (tmp_path / "w" / "checkpoints" / "latest").exists()
