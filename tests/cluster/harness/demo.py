"""`make demo`: local cluster + the chart (real helm) + operator, apply the example TrainJob,
follow it live."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from cogwork.local.console import evaluation_lines

from .__main__ import write_kubectl_shim
from .cluster import Cluster
from .controlplane import REPO_ROOT
from .kueue import Kueue
from .operator import HELM, Operator, install_chart, install_crds, install_rbac


def follow(cluster: Cluster, namespace: str, name: str, timeout: float) -> dict[str, Any]:
    """Print a line whenever the job's phase or progress changes; return the final object."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        job = cluster.kubectl_json("get", "trainjob", name, "-n", namespace)
        status: dict[str, Any] = job.get("status") or {}  # type: ignore[assignment]
        progress = status.get("progress") or {}
        latest = {m["name"]: m["value"] for m in (status.get("metrics") or {}).get("latest", [])}
        line = (f"{status.get('phase', 'Pending'):<10} nodes {status.get('nodesText', '-'):<5} "
                f"restarts {status.get('restarts', 0)}  "
                f"step {progress.get('step', 0)}/{progress.get('totalSteps', '?')} "
                f"({progress.get('progressPercentage', 0)}%)  "
                f"epoch {progress.get('epoch', '-')}  "
                + "  ".join(f"{k} {v}" for k, v in sorted(latest.items())))
        if line != last:
            print(time.strftime("%H:%M:%S"), line, flush=True)
            last = line
        if status.get("phase") in ("Succeeded", "Failed"):
            return job
        time.sleep(1)
    raise TimeoutError(f"{name} did not finish in {timeout}s")


def install(cluster: Cluster, workdir: Path, operator: Operator) -> None:
    """The chart with the real helm (no operator pod: the operator runs here, under the chart's
    ServiceAccount), or, before `make helm`, crds/ and the chart's RBAC rules applied as-is."""
    if HELM.exists():
        operator.service_account = install_chart(cluster.control_plane, workdir / "helm")
        print(f"helm install cogwork charts/cogwork: operator runs as ServiceAccount "
              f"{operator.service_account}", flush=True)
    else:
        print(f"{HELM} missing (`make helm` builds it): applying crds/ and the chart's RBAC "
              "rules without helm", flush=True)
        install_crds(cluster.control_plane)
        install_rbac(cluster.control_plane)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.demo")
    parser.add_argument("-f", "--file", default=str(REPO_ROOT / "examples/trainjob-digits.yaml"))
    parser.add_argument("--workdir", default="/tmp/cogwork-demo")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--keep", action="store_true", help="leave the cluster running")
    parser.add_argument("--kueue", action="store_true",
                        help="also run Kueue (`make kueue`) with its CRDs and webhooks")
    args = parser.parse_args()

    workdir = Path(args.workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    cluster = Cluster(workdir, nodes=3)
    operator = Operator(cluster.control_plane, workdir / "operator")
    kueue = Kueue(cluster.control_plane) if args.kueue else None
    t0 = time.monotonic()
    try:
        cluster.start()
        print(f"control plane + node agent ready in {time.monotonic() - t0:.1f}s", flush=True)
        if kueue:
            kueue.start()
            print(f"kueue running (log {kueue.log_file})", flush=True)
        install(cluster, workdir, operator)
        operator.start()
        print("operator running; applying", args.file, flush=True)
        applied = cluster.kubectl("apply", "-n", "default", "-f", args.file).stdout
        print(applied.strip(), flush=True)
        name = applied.split()[0].split("/")[-1]
        kubectl = write_kubectl_shim(REPO_ROOT / ".build" / "bin")
        kubeconfig = cluster.control_plane.kubeconfig("admin")
        # The node agent serves containerLogs, so kubectl logs works as on a real cluster.
        print(f"a worker's output, from another terminal while it runs:\n"
              f"  {kubectl} --kubeconfig {kubeconfig} logs -f {name}-node-0", flush=True)
        job = follow(cluster, "default", name, args.timeout)
        status = job["status"]
        # The way `cogwork run` shows it: accuracy, macro F1, the confusion matrix as a table.
        print(f"phase {status.get('phase')}, restarts {status.get('restarts', 0)}")
        for line in evaluation_lines(status.get("evaluation") or {}):
            print(line)
        if status.get("phase") != "Succeeded":
            print(f"job failed; logs under {workdir}", file=sys.stderr)
            return 1
        cluster.kubectl("wait", f"trainjob/{name}", "-n", "default",
                        "--for=condition=Succeeded", "--timeout=10s")
        print(f"kubectl wait --for=condition=Succeeded: ok ({time.monotonic() - t0:.0f}s total)")
        tail = cluster.kubectl("logs", f"{name}-node-0", "-n", "default", "--tail=3",
                               check=False)
        if tail.returncode == 0:
            print(f"kubectl logs {name}-node-0 --tail=3:\n{tail.stdout.rstrip()}")
        if args.keep:
            print(f"export KUBECONFIG={kubeconfig} PATH={kubectl.parent}:$PATH")
            print(f"kubectl logs {name}-node-0   # a worker's output")
            input("cluster running; press Enter to stop ")
        return 0
    finally:
        operator.stop()
        if kueue:
            kueue.stop()
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
