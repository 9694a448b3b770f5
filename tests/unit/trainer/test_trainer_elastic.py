"""End to end on loopback: a standalone rendezvous store + torchrun agents, as in a TrainJob.

Two nodes train; the operator asks for a checkpoint; the node hosting rank 0 is killed (agent and
worker, as a kubelet kills a pod's cgroup); the survivor re-rendezvouses alone and resumes from
`latest` at world size 1; a stop request ends it cleanly; two nodes then resume that checkpoint
and finish. The result must equal an uninterrupted single-process run's: the global batch and
the data order never depend on the world size.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from cogwork_sdk.contract import PROGRESS_PREFIX
from cogwork_trainer import train
from cogwork_trainer.data import load_dataset
from cogwork_trainer.models import load_model

TRAINER_IMAGE = Path(__file__).resolve().parents[3] / "trainer-image"
TASK = {"epochs": 3, "seed": 0}  # 22 steps per epoch at the default global batch of 64
TOTAL_STEPS = 66


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COGWORK_", "RANK", "WORLD"))}
    env.update(
        PYTHONPATH=str(TRAINER_IMAGE), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
        TORCH_DISABLE_SHARE_RDZV_TCP_STORE="1", COGWORK_TASK=json.dumps(TASK),
        COGWORK_CHECKPOINT_DIR=str(tmp / "ckpt"), COGWORK_HEARTBEAT_FILE=str(tmp / "heartbeat"),
    )
    env.update(extra)
    return env


def events(log: Path) -> list[dict[str, Any]]:
    lines = log.read_text().splitlines() if log.exists() else []
    return [json.loads(x[len(PROGRESS_PREFIX):]) for x in lines if x.startswith(PROGRESS_PREFIX)]


def wait_for(what: str, cond: Callable[[], bool], procs: list[subprocess.Popen[bytes]],
             timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        if all(p.poll() is not None for p in procs):
            if cond():
                return
            raise AssertionError(f"all processes exited before {what}")
        time.sleep(0.05)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    log = tmp_path / "store.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cogwork_trainer.rdzv_store", "--host", "127.0.0.1",
         "--port", str(port)],
        env=base_env(tmp_path), stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        wait_for("the store", lambda: "listening" in log.read_text(), [proc], timeout=30)
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0  # exits cleanly on SIGTERM


def torchrun(port: int, rdzv_id: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    # keep_alive_*: a killed node leaves the rendezvous after 3 s instead of the default 15 s.
    conf = ("is_host=false,join_timeout=30,last_call_timeout=2,"
            "keep_alive_interval=1,keep_alive_max_attempt=3")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1:2", "--nproc-per-node=1",
           "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", f"--rdzv-id={rdzv_id}",
           f"--rdzv-conf={conf}", "--max-restarts=2", "--monitor-interval=1",
           "--local-addr=127.0.0.1", "-m", "cogwork_trainer.train"]
    return subprocess.Popen(cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def descendants(pid: int) -> list[int]:
    """Child processes, recursively (torchrun starts workers in their own sessions)."""
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            parent[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, frontier = [], [pid]
    while frontier:
        kids = [c for c, p in parent.items() if p in frontier]
        out += kids
        frontier = kids
    return out


def kill_node(agent: subprocess.Popen[bytes]) -> None:
    for pid in [agent.pid, *descendants(agent.pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    agent.wait(timeout=10)


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            leftovers = descendants(p.pid)
            p.send_signal(signal.SIGTERM)  # the agent forwards it to its workers
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=15)
            for pid in [p.pid, *leftovers]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def outcome(evs: list[dict[str, Any]]) -> tuple[list[list[int]], float]:
    """(confusion matrix, final training loss) of a completed run."""
    done = evs[-1]
    assert done["event"] == "completed", done
    loss = {m["name"]: float(m["value"]) for m in done["metrics"]}["loss"]
    return done["evaluation"]["confusionMatrix"], loss


@pytest.mark.timeout(120)
def test_kill_rank0_node_stop_and_resume_at_other_world_sizes(
    store: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    control = tmp_path / "control"
    control.mkdir()
    annotations = control / "annotations"
    latest = tmp_path / "ckpt" / "latest"
    logs = [tmp_path / "a0.log", tmp_path / "a1.log"]
    env_a = base_env(tmp_path, COGWORK_CONTROL_DIR=str(control), COGWORK_CHECKPOINT_EVERY="5",
                     COGWORK_STEP_DELAY_SECONDS="0.1")
    run_a = [torchrun(store, "run-a", env_a, log) for log in logs]
    try:
        # World size 2: periodic checkpoints, then an operator checkpoint request.
        wait_for("a periodic checkpoint", latest.exists, run_a)
        annotations.write_text('cogwork.dev/checkpoint-request="scale-down-1"\n')
        wait_for("the checkpoint event",
                 lambda: any(e["event"] == "checkpoint" for log in logs for e in events(log)),
                 run_a)
        (rank0,) = [i for i in (0, 1) if events(logs[i])]  # only rank 0 reports
        (ck,) = [e for e in events(logs[rank0]) if e["event"] == "checkpoint"]

        # Lose the node that hosts rank 0: the survivor must carry on alone.
        kill_node(run_a[rank0])
        survivor, slog = run_a[1 - rank0], logs[1 - rank0]
        wait_for("the survivor's resume",
                 lambda: any(e["event"] == "resumed" for e in events(slog)), [survivor])
        (resumed,) = [e for e in events(slog) if e["event"] == "resumed"]
        assert resumed["resumedFromStep"] == int(latest.read_text())
        assert resumed["resumedFromStep"] >= ck["checkpointStep"]

        wait_for("training at world size 1",
                 lambda: any(e["event"] == "progress" for e in events(slog)), [survivor])

        # Stop request (tuner pruning): checkpoint, report `stopped`, exit 0.
        annotations.write_text('cogwork.dev/checkpoint-request="scale-down-1"\n'
                               'cogwork.dev/stop="true"\n')
        assert survivor.wait(timeout=40) == 0
    finally:
        stop_all(run_a)

    assert ck["checkpointRequest"] == "scale-down-1" and ck["checkpointStep"] == ck["step"]
    # The survivor's worker was rank 1 and died on the lost peer; its new round made it rank 0.
    assert "[rank1]: RuntimeError" in slog.read_text()
    sev = events(slog)
    assert sev[0]["event"] == "resumed"
    # The request annotation outlived the restart: it is answered again, without a new save.
    assert all(e["checkpointStep"] == resumed["resumedFromStep"]
               for e in sev if e["event"] == "checkpoint")
    assert all(e["step"] > resumed["resumedFromStep"] for e in sev if e["event"] == "progress")
    (stopped,) = [e for e in sev if e["event"] == "stopped"]
    stop_step = stopped["checkpointStep"]
    assert resumed["resumedFromStep"] < stop_step < TOTAL_STEPS  # stopped mid-training
    assert int(latest.read_text()) == stop_step
    assert not (tmp_path / "ckpt" / "evaluation.json").exists()

    # Scale back to two nodes: resume the stop checkpoint and finish.
    logs_b = [tmp_path / "b0.log", tmp_path / "b1.log"]
    run_b = [torchrun(store, "run-b", base_env(tmp_path), log) for log in logs_b]
    try:
        for p, log in zip(run_b, logs_b, strict=True):
            assert p.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        stop_all(run_b)
    evs_b = events(logs_b[0]) or events(logs_b[1])
    assert evs_b[0]["event"] == "resumed" and evs_b[0]["resumedFromStep"] == stop_step
    assert evs_b[-1]["step"] == TOTAL_STEPS
    evaluation = json.loads((tmp_path / "ckpt" / "evaluation.json").read_text())
    assert evaluation == evs_b[-1]["evaluation"]
    assert evaluation["accuracy"] > 0.9 and evaluation["samples"] == 360

    # model.pt is self-contained: it reproduces the reported accuracy on the raw split.
    model, meta = load_model(tmp_path / "ckpt" / "model.pt")
    ds = load_dataset("digits", seed=0, test_fraction=0.2)
    with torch.no_grad():
        pred = model(torch.from_numpy(ds.x_test)).argmax(1).numpy()
    assert meta["classes"] == [str(i) for i in range(10)]
    assert float(np.mean(pred == ds.y_test)) == pytest.approx(evaluation["accuracy"])

    # 2 nodes -> killed -> 1 node -> stopped -> 2 nodes ends where one uninterrupted process ends.
    # (In this process: it is already warm, and no process group means the single-process path.)
    for k, v in base_env(tmp_path, COGWORK_CHECKPOINT_DIR=str(tmp_path / "ref")).items():
        monkeypatch.setenv(k, v)
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "COGWORK_CONTROL_DIR"):
        monkeypatch.delenv(k, raising=False)
    capsys.readouterr()
    assert train.main() == 0
    ref_evs = [json.loads(x[len(PROGRESS_PREFIX):]) for x in capsys.readouterr().out.splitlines()
               if x.startswith(PROGRESS_PREFIX)]
    matrix, loss = outcome(evs_b)
    ref_matrix, ref_loss = outcome(ref_evs)
    assert matrix == ref_matrix
    assert loss == pytest.approx(ref_loss, rel=1e-3)


def test_failed_agent_keeps_rendezvous_open_for_its_replacement(
        store: int, tmp_path: Path) -> None:
    """A node whose program fails for good exits with the program's code and leaves the
    rendezvous open, so the pod replacing it (RestartNode) can join the same group."""
    marker = tmp_path / "ran"

    def agent(program: str) -> subprocess.CompletedProcess[bytes]:
        cmd = [sys.executable, "-m", "cogwork_sdk.launch", "--nnodes=1:2",
               "--nproc-per-node=1", "--rdzv-backend=c10d",
               f"--rdzv-endpoint=127.0.0.1:{store}", "--rdzv-id=job-uid-1",
               "--rdzv-conf=is_host=false,join_timeout=20,last_call_timeout=1",
               "--max-restarts=0", "--monitor-interval=1", "--local-addr=127.0.0.1",
               "--no-python", "sh", "-c", program]
        return subprocess.run(cmd, env=base_env(tmp_path), capture_output=True, timeout=60)

    failed = agent("exit 3")
    assert failed.returncode == 3, failed.stderr.decode()[-2000:]
    replacement = agent(f"touch {marker}")
    assert replacement.returncode == 0, replacement.stderr.decode()[-2000:]
    assert marker.exists()
