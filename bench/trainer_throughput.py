"""Trainer steps/s under `cogwork run` vs a plain torchrun DDP script, measured in one process.

    .venv/bin/python bench/trainer_throughput.py [--epochs 60] [--repeats 3] [--layout 2x1]

Both sides: 2 worker processes, gloo over loopback, OMP_NUM_THREADS=1 per process, the same MLP,
digits split and GLOBAL batch (64). `--layout 2x1` runs the TrainJob as 2 nodes x 1 process (two
torchrun agents and the separate rendezvous store, as on a cluster); `1x2` as 1 node x 2
processes. The baseline is `torchrun --standalone --nproc-per-node=2 bench/plain_ddp.py`.

Only steady-state steps count: the first 10% of the steps (process start, rendezvous, first DDP
iterations) are excluded on both sides, and both sides are timed with rank 0's own clock (the
trainer's reports carry step and samples/s since its loop started, which gives the elapsed time
at each report). Runs alternate plain/cogwork to share the machine's noise; medians are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))
from cogwork.local.console import parse_report  # noqa: E402
from cogwork.plan.progress import ProgressReport  # noqa: E402

WARMUP_FRACTION = 0.1
DIGITS_TRAIN = 1437  # 80% of scikit-learn's 1,797 digits


def bench_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COGWORK_", "TORCHX_"))}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def run_plain(epochs: int, batch: int) -> float:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
           "--nproc-per-node=2", str(REPO / "bench" / "plain_ddp.py"), "--epochs", str(epochs),
           "--batch-size", str(batch), "--warmup-fraction", str(WARMUP_FRACTION)]
    out = subprocess.run(cmd, env=bench_env(), cwd=REPO, capture_output=True, text=True,
                         check=True).stdout
    (line,) = [x for x in out.splitlines() if x.startswith("PLAIN_DDP ")]
    return float(json.loads(line.removeprefix("PLAIN_DDP "))["steady_steps_per_s"])


def trainjob(epochs: int, batch: int, layout: str, checkpoint_every: int) -> dict[str, Any]:
    nodes, nproc = (2, 1) if layout == "2x1" else (1, 2)
    return {
        "apiVersion": "cogwork.dev/v1alpha1", "kind": "TrainJob",
        "metadata": {"name": "throughput"},
        "spec": {
            "task": {"name": "image-classification", "model": "mlp", "epochs": epochs,
                     "batchSize": batch, "learningRate": "0.05", "optimizer": "sgd"},
            "data": {"dataset": "digits"},
            "nodes": {"min": nodes, "max": nodes},
            "nprocPerNode": nproc,
            "resources": {"cpu": str(nproc)},  # OMP_NUM_THREADS = cpu / nproc = 1
            "checkpoint": {"everySteps": checkpoint_every},
            "rendezvous": {"joinTimeoutSeconds": 60, "lastCallTimeoutSeconds": 1},
        },
    }


def reports(workdir: Path) -> list[ProgressReport]:
    found = []
    for log in sorted((workdir / "logs").rglob("worker/*/stdout.log")):
        for line in log.read_text(errors="replace").splitlines():
            report = parse_report(line)
            if report is not None:
                found.append(report)
    return found


def steady_rate_from_reports(found: list[ProgressReport], total_steps: int,
                             global_batch: int) -> float:
    """Steps/s between the first report past the warm-up and the last progress report.

    A report at step s with samples/s v was sent s * G / v seconds after the loop started.
    """
    points = [(r.step, r.step * global_batch / r.samples_per_second) for r in found
              if r.event == "progress" and r.step and r.samples_per_second]
    warmup = max(1, int(total_steps * WARMUP_FRACTION))
    steady = [p for p in points if p[0] >= warmup]
    if len(steady) < 2:
        raise RuntimeError(f"too few progress reports after step {warmup}: {points}")
    (s0, t0), (s1, t1) = steady[0], steady[-1]
    return (s1 - s0) / (t1 - t0)


def run_cogwork(epochs: int, batch: int, layout: str, checkpoint_every: int) -> float:
    with tempfile.TemporaryDirectory(prefix="cogwork-bench-") as tmp:
        manifest = Path(tmp) / "job.yaml"
        manifest.write_text(yaml.safe_dump(trainjob(epochs, batch, layout, checkpoint_every)))
        workdir = Path(tmp) / "work"
        cmd = [sys.executable, "-m", "cogwork.cli", "run", "-f", str(manifest),
               "--workdir", str(workdir)]
        subprocess.run(cmd, env=bench_env(), cwd=REPO, capture_output=True, text=True,
                       check=True)
        total = epochs * (DIGITS_TRAIN // batch)
        return steady_rate_from_reports(reports(workdir), total, batch)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=64, help="GLOBAL batch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--layout", choices=("2x1", "1x2"), default="2x1",
                        help="nodes x processes per node of the TrainJob")
    parser.add_argument("--checkpoint-every", type=int, default=500,
                        help="TrainJob checkpoint.everySteps (API default 50: each DCP save "
                             "costs tens of ms, which a 3 ms step feels; see bench/README.md)")
    args = parser.parse_args()

    plain, cogwork = [], []
    for i in range(args.repeats):
        plain.append(run_plain(args.epochs, args.batch_size))
        cogwork.append(run_cogwork(args.epochs, args.batch_size, args.layout,
                                   args.checkpoint_every))
        print(f"run {i + 1}/{args.repeats}: plain torchrun {plain[-1]:.1f} steps/s, "
              f"cogwork run {cogwork[-1]:.1f} steps/s", flush=True)
    p, c = statistics.median(plain), statistics.median(cogwork)
    print(f"layout: TrainJob {args.layout} (nodes x procs) vs plain torchrun 1x2; "
          f"global batch {args.batch_size}, {args.epochs} epochs, OMP_NUM_THREADS=1, gloo, "
          f"checkpoint every {args.checkpoint_every} steps (trainer only)")
    print(f"baseline plain torchrun DDP: {p:.1f} steps/s (median of {args.repeats})")
    print(f"cogwork run trainer:         {c:.1f} steps/s (median of {args.repeats})")
    print(f"ratio cogwork/plain: {c / p:.3f} (medians), {max(cogwork) / max(plain):.3f} "
          "(best runs)  (goal >= 0.95)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
