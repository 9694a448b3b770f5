"""`python -m harness up`: run the local cluster for a person until Ctrl-C (`make cluster`)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from .cluster import Cluster
from .controlplane import REPO_ROOT, binary_path
from .kueue import Kueue


def write_kubectl_shim(bin_dir: Path) -> Path:
    """`kubectl` on PATH that runs the kubectl built into the kubecluster binary."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    shim = bin_dir / "kubectl"
    shim.write_text(f'#!/bin/sh\nexec "{binary_path()}" kubectl "$@"\n')
    shim.chmod(0o755)
    return shim


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m harness")
    parser.add_argument("command", choices=["up"])
    parser.add_argument("--workdir",
                        default=os.environ.get("COGWORK_CLUSTER_DIR", "/tmp/cogwork-cluster"))
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--gpus", type=int, default=0)
    parser.add_argument("--ready-file", help="touch this file once the cluster is ready")
    parser.add_argument("--kueue", action="store_true",
                        help="also run Kueue (`make kueue`) with its CRDs and webhooks")
    args = parser.parse_args()

    workdir = Path(args.workdir)
    if workdir.exists():
        import shutil

        shutil.rmtree(workdir)
    cluster = Cluster(workdir, nodes=args.nodes, gpus_per_node=args.gpus)
    kueue = Kueue(cluster.control_plane) if args.kueue else None
    t0 = time.monotonic()
    cluster.start()
    if kueue:
        try:
            kueue.start()
        except BaseException:
            cluster.stop()
            raise
        print(f"kueue running (webhooks at {kueue.webhook_url}; log {kueue.log_file})")
    shim = write_kubectl_shim(REPO_ROOT / ".build" / "bin")
    kubeconfig = cluster.control_plane.kubeconfig("admin")
    print(f"cluster ready in {time.monotonic() - t0:.1f}s; logs in {cluster.control_plane.log_dir}")
    print(f"export KUBECONFIG={kubeconfig} PATH={shim.parent}:$PATH")
    print(cluster.kubectl("get", "nodes").stdout, flush=True)
    if args.ready_file:
        Path(args.ready_file).write_text(str(kubeconfig))

    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        while not stop:
            cluster.control_plane.check_alive()
            if kueue:
                kueue.check_alive()
            time.sleep(1)
    finally:
        print("stopping cluster", flush=True)
        if kueue:
            kueue.stop()
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
