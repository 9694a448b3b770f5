"""Time to resume after a killed worker under `cogwork run`, and the steps it cost.

    .venv/bin/python bench/recovery.py [--checkpoint-every 50] [--kill rank|node]

A 2-node TrainJob (nodes 1..2, 1 process each, rendezvous join 60 s / last call 2 s as in the
e2e tests) trains digits with a checkpoint every N steps. Mid-training, between two checkpoints,
the bench SIGKILLs rank 1's training process (`--kill rank`: torchrun on that node restarts the
worker group, and both nodes re-rendezvous) or that node's whole process tree (`--kill node`,
as a kubelet kills a pod: the survivor carries on alone at world size 1).

Printed: seconds from the kill to the first completed step after the resume, steps lost (step
at the kill - step resumed from; the step at the kill is the last one rank 0 reported, read
within milliseconds of the kill), the checkpoint interval, and the baseline step time (steady
steps/s before the kill, on rank 0's clock).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))
from cogwork.local.console import parse_report  # noqa: E402
from cogwork.local.processes import LogTail, descendants  # noqa: E402
from cogwork.plan.progress import ProgressReport  # noqa: E402

GLOBAL_BATCH = 64


def trainjob(epochs: int, checkpoint_every: int) -> dict[str, Any]:
    return {
        "apiVersion": "cogwork.dev/v1alpha1", "kind": "TrainJob",
        "metadata": {"name": "recovery"},
        "spec": {
            "task": {"name": "image-classification", "model": "mlp", "epochs": epochs,
                     "batchSize": GLOBAL_BATCH, "learningRate": "0.05"},
            "data": {"dataset": "digits"},
            "nodes": {"min": 1, "max": 2, "count": 2},
            "resources": {"cpu": "1"},
            "checkpoint": {"everySteps": checkpoint_every},
            "rendezvous": {"joinTimeoutSeconds": 60, "lastCallTimeoutSeconds": 2},
        },
    }


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def has_env(pid: int, entry: str) -> bool:
    try:
        return f"\0{entry}\0".encode() in b"\0" + Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


def rank1_targets(runner_pid: int, whole_node: bool) -> list[int]:
    """Rank 1's training process, or its torchrun agent and everything below it."""
    procs = descendants(runner_pid)
    (rank1,) = [p for p in procs if "cogwork_trainer.train" in cmdline(p)
                and has_env(p, "RANK=1")]
    if not whole_node:
        return [rank1]
    (agent,) = [p for p in procs if "cogwork_sdk.launch" in cmdline(p)
                and rank1 in descendants(p)]
    return [agent, *descendants(agent)]


class Reports:
    """Progress reports from every node's stdout log, stamped with the bench's clock."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.tails: dict[Path, LogTail] = {}
        self.seen: list[tuple[float, ProgressReport]] = []

    def poll(self) -> list[ProgressReport]:
        for path in self.logs.rglob("worker/*/stdout.log"):
            self.tails.setdefault(path, LogTail(path))
        fresh = []
        for tail in self.tails.values():
            for line in tail.read_lines():
                report = parse_report(line)
                if report is not None:
                    fresh.append(report)
        now = time.monotonic()
        self.seen += [(now, r) for r in fresh]
        return fresh


def steady_rate(reports: list[ProgressReport], skip_steps: int) -> float:
    """Steps/s on rank 0's clock: a report at step s with v samples/s came s*G/v s in."""
    points = [(r.step, r.step * GLOBAL_BATCH / r.samples_per_second) for r in reports
              if r.event == "progress" and r.step and r.step >= skip_steps
              and r.samples_per_second]
    (s0, t0), (s1, t1) = points[0], points[-1]
    return (s1 - s0) / (t1 - t0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint-every", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--kill-after-checkpoints", type=int, default=6,
                        help="kill once this many checkpoint intervals have passed, mid-interval")
    parser.add_argument("--kill", choices=("rank", "node"), default="rank")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs) and print it")
    args = parser.parse_args()
    n = args.checkpoint_every
    target = args.kill_after_checkpoints * n + n // 2

    tmp = tempfile.mkdtemp(prefix="cogwork-recovery-")
    if args.keep:
        print(f"work dir: {tmp}")
    try:
        manifest = Path(tmp) / "job.yaml"
        manifest.write_text(yaml.safe_dump(trainjob(args.epochs, n)))
        env = {k: v for k, v in os.environ.items() if not k.startswith("COGWORK_")}
        runner = subprocess.Popen(
            [sys.executable, "-m", "cogwork.cli", "run", "-f", str(manifest), "--workdir",
             str(Path(tmp) / "work")], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        reports = Reports(Path(tmp) / "work" / "logs")
        deadline = time.monotonic() + args.timeout
        try:
            before: list[ProgressReport] = []
            while not any(r.step and r.step >= target for r in before):
                before += reports.poll()
                if runner.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the run ended before step {target}")
                time.sleep(0.005)
            victims = rank1_targets(runner.pid, whole_node=args.kill == "node")
            for pid in victims:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            t_kill = time.monotonic()
            step_at_kill = max(r.step or 0 for r in before)

            resumed: ProgressReport | None = None
            t_next: float | None = None
            while t_next is None:
                for report in reports.poll():
                    if report.event == "resumed":
                        resumed = report
                    elif resumed is not None and report.event == "progress":
                        t_next, first_after = time.monotonic(), report
                if runner.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("no step completed after the kill")
                time.sleep(0.005)
            code = runner.wait(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            if runner.poll() is None:
                runner.send_signal(signal.SIGINT)
                runner.wait(timeout=60)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    assert resumed is not None and resumed.resumed_from_step is not None
    rate = steady_rate(before, skip_steps=n)
    lost = step_at_kill - resumed.resumed_from_step
    print(f"killed: {args.kill} (rank 1's {'node' if args.kill == 'node' else 'process'}, "
          f"SIGKILL) at step {step_at_kill}; checkpoint every {n} steps; "
          f"rendezvous join 60 s, last call 2 s")
    print(f"baseline: {rate:.1f} steps/s before the kill = {1000 / rate:.2f} ms per step")
    print(f"resumed from step {resumed.resumed_from_step}; first step after the resume: "
          f"step {first_after.step}")
    print(f"recovery: {t_next - t_kill:.2f} s from the kill to the next completed step "
          f"(goal <= 15 s) = {(t_next - t_kill) * rate:.0f} baseline step times")
    print(f"steps lost: {lost} (goal <= {n}, one checkpoint interval)")
    # A killed node is not replaced locally (no operator), so its replica stays failed.
    print(f"cogwork run exit code: {code}")
    return 0 if code == 0 or args.kill == "node" else 1


if __name__ == "__main__":
    sys.exit(main())
