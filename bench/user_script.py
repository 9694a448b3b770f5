"""A team's plain DDP script (examples/user-code/train_ddp.py) under a TrainJob vs the same
script under plain torchrun, measured in one process.

    .venv/bin/python bench/user_script.py [--epochs 40] [--repeats 5] [--layout 2x1]

Both sides run the unmodified script with 2 worker processes, gloo over loopback,
OMP_NUM_THREADS=1. The TrainJob side is `cogwork run` of a script TrainJob: the launcher
(cogwork_sdk.launch) wraps torchrun and copies the workers' stdout through its pipe, parsing
every line for zero-code metrics, and the separate rendezvous store serves the group, as on a
cluster; `--layout 2x1` is 2 nodes x 1 process, `1x2` 1 node x 2 processes. The baseline is
`torchrun --standalone --nproc-per-node=2 train_ddp.py`.

The script times each epoch itself (`epoch_seconds=` on its metric line, rank 0's clock), so
both sides are measured the same way, with gloo on the loopback interface; the first epochs
(start-up, first DDP iterations) are left out. Steps per epoch are the same on both sides, so
the ratio of steps/s is the inverse ratio of median epoch times. Runs alternate plain/cogwork
to share the machine's noise.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from trainer_throughput import REPO  # noqa: E402
from trainer_throughput import bench_env as _trainer_bench_env  # noqa: E402

SCRIPT = REPO / "examples" / "user-code" / "train_ddp.py"
LINE = re.compile(r"^epoch=(\d+) .*epoch_seconds=([\d.]+)", re.MULTILINE)
STEPS_PER_EPOCH = 25  # train_ddp.py: 1,638 training samples, global batch 64


def bench_env() -> dict[str, str]:
    # Gloo over loopback on both sides: plain torchrun --standalone would otherwise pick the
    # interface of the host name, the TrainJob the --local-addr it is given (127.0.0.1 here).
    return {**_trainer_bench_env(), "GLOO_SOCKET_IFNAME": "lo"}


def steady_epoch_seconds(text: str, warmup_epochs: int) -> float:
    """Median epoch time after the first `warmup_epochs` epochs."""
    times = [float(s) for e, s in LINE.findall(text) if int(e) > warmup_epochs]
    if len(times) < 3:
        raise RuntimeError(f"too few epoch lines after epoch {warmup_epochs}: {text[-2000:]}")
    return statistics.median(times)


def run_plain(epochs: int, warmup: int, tmp: Path) -> float:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
           "--nproc-per-node=2", str(SCRIPT), "--epochs", str(epochs),
           "--checkpoint-dir", str(tmp / "plain-ckpt")]
    out = subprocess.run(cmd, env=bench_env(), cwd=tmp, capture_output=True, text=True,
                         check=True).stdout
    return steady_epoch_seconds(out, warmup)


def trainjob(epochs: int, layout: str) -> dict[str, Any]:
    nodes, nproc = (2, 1) if layout == "2x1" else (1, 2)
    return {
        "apiVersion": "cogwork.dev/v1alpha1", "kind": "TrainJob",
        "metadata": {"name": "user-script"},
        "spec": {
            "image": "cogwork.test/bare:1",  # locally every image is this Python
            "script": {"command": ["python", str(SCRIPT)],
                       "args": ["--epochs", str(epochs),
                                "--checkpoint-dir", "$(COGWORK_CHECKPOINT_DIR)"]},
            "nodes": {"min": nodes, "max": nodes},
            "nprocPerNode": nproc,
            "resources": {"cpu": str(nproc)},  # OMP_NUM_THREADS = cpu / nproc = 1
            "rendezvous": {"joinTimeoutSeconds": 60, "lastCallTimeoutSeconds": 1},
        },
    }


def run_cogwork(epochs: int, warmup: int, layout: str, tmp: Path) -> float:
    manifest = tmp / "job.yaml"
    manifest.write_text(yaml.safe_dump(trainjob(epochs, layout)))
    workdir = tmp / "work"
    cmd = [sys.executable, "-m", "cogwork.cli", "run", "-f", str(manifest),
           "--workdir", str(workdir)]
    subprocess.run(cmd, env=bench_env(), cwd=tmp, capture_output=True, text=True, check=True)
    logs = "\n".join(p.read_text(errors="replace")
                     for p in sorted((workdir / "logs").rglob("worker/*/stdout.log")))
    return steady_epoch_seconds(logs, warmup)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--warmup-epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--layout", choices=("2x1", "1x2"), default="2x1")
    args = parser.parse_args()

    plain, cogwork, ratios = [], [], []
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="cogwork-bench-") as tmp:
            plain.append(STEPS_PER_EPOCH / run_plain(args.epochs, args.warmup_epochs, Path(tmp)))
        with tempfile.TemporaryDirectory(prefix="cogwork-bench-") as tmp:
            cogwork.append(STEPS_PER_EPOCH / run_cogwork(args.epochs, args.warmup_epochs,
                                                          args.layout, Path(tmp)))
        ratios.append(cogwork[-1] / plain[-1])
        print(f"run {i + 1}/{args.repeats}: plain torchrun {plain[-1]:.0f} steps/s, "
              f"TrainJob {cogwork[-1]:.0f} steps/s, ratio {ratios[-1]:.3f}", flush=True)
    print(f"TrainJob {args.layout} (nodes x procs) vs plain torchrun 1x2; "
          f"{args.epochs} epochs of {STEPS_PER_EPOCH} steps, first {args.warmup_epochs} left out")
    print(f"baseline plain torchrun: {statistics.median(plain):.0f} steps/s (median)")
    print(f"TrainJob (cogwork run):  {statistics.median(cogwork):.0f} steps/s (median)")
    print(f"ratio TrainJob/plain: {statistics.median(ratios):.3f} (median of {args.repeats} "
          "alternating pairs)  (goal >= 0.95)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
