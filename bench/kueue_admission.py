"""Operator throughput with Kueue in front: time from a TrainJob's admission to its first pod,
on a real control plane with a real Kueue (harness/kueue.py, `make kueue`; no node agent: pods
stay Pending, so only the control path is measured).

    .venv/bin/python bench/kueue_admission.py [--jobs 20,40] [--rounds 1]

For each N (default 20 and 40, to show how the cost grows with the burst), in the same process
and on the same apiserver, Kueue and operator:

1. Baseline: N script TrainJobs without a queue label created back to back; per job, its create
   call -> its first pod seen by a pod watch.
2. Kueue: N script TrainJobs labelled `kueue.x-k8s.io/queue-name` for a LocalQueue whose
   ClusterQueue has room for all of them, created back to back; per job, the first time a
   Workload watch sees its Workload with Admitted=True (time.monotonic(): lastTransitionTime
   has second precision) -> its first pod seen by the pod watch. That is the operator's cost of
   the gate: it hears of the admission (a Workload event mapped to its job), re-reads the
   Workload, and renders and creates the pods. Also printed: create -> Admitted (the operator
   creating the Workload, then Kueue's own admission) and create -> first pod.

Printed: p50 and p99 of each, and the ratio of the Kueue path's admission -> pod to the
baseline's create -> pod. Each run gets a fresh namespace.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "bench"), str(REPO / "tests/cluster")]

from harness.controlplane import ControlPlane  # noqa: E402
from harness.kueue import API_VERSION, QUEUE_LABEL, Kueue  # noqa: E402
from harness.operator import Operator, install_crds, install_rbac  # noqa: E402
from kubernetes import client, config, watch  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402
from operator_throughput import (  # noqa: E402
    GROUP,
    VERSION,
    PodWatch,
    create_namespace,
    delete_namespace,
    percentile,
    script_job,
    settle,
)
from urllib3.exceptions import ProtocolError  # noqa: E402

KUEUE_GROUP, KUEUE_VERSION = API_VERSION.split("/")
QUEUE = "bench"
SLOW = 5.0  # seconds admitted->pod named in the output


class AdmittedWatch(threading.Thread):
    """First time each Workload of a namespace is seen with condition Admitted=True."""

    def __init__(self, custom: client.CustomObjectsApi, namespace: str) -> None:
        super().__init__(daemon=True)
        self.custom, self.namespace = custom, namespace
        self.admitted: dict[str, float] = {}
        self.ready = threading.Event()

    def note(self, workload: dict[str, Any], now: float) -> None:
        conditions = (workload.get("status") or {}).get("conditions") or []
        if any(c.get("type") == "Admitted" and c.get("status") == "True" for c in conditions):
            self.admitted.setdefault(workload["metadata"]["name"], now)

    def run(self) -> None:
        args = (KUEUE_GROUP, KUEUE_VERSION, self.namespace, "workloads")
        while True:  # as PodWatch: list what a dropped stream missed, watch on from there
            try:
                listed = self.custom.list_namespaced_custom_object(*args)
                now = time.monotonic()
                for item in listed["items"]:
                    self.note(item, now)
                self.ready.set()
                for event in watch.Watch().stream(
                        self.custom.list_namespaced_custom_object, *args, timeout_seconds=1800,
                        resource_version=listed["metadata"]["resourceVersion"]):
                    self.note(event["object"], time.monotonic())
            except (ProtocolError, ApiException, OSError):
                time.sleep(0.5)


def wait_until(what: str, done: Any, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.01)


def burst(custom: client.CustomObjectsApi, pods: PodWatch, count: int, queue: str | None
          ) -> tuple[dict[str, float], dict[str, float]]:
    """Create `count` script TrainJobs back to back; returns (create time, first pod time) per
    job once every job has a pod."""
    created: dict[str, float] = {}
    for i in range(count):
        job = script_job(f"j-{i:04d}", suspend=False)
        if queue is not None:
            job["metadata"]["labels"] = {QUEUE_LABEL: queue}
        custom.create_namespaced_custom_object(GROUP, VERSION, pods.namespace, "trainjobs", job)
        created[job["metadata"]["name"]] = time.monotonic()

    def first_pod(job: str) -> float | None:
        seen = [t for name, t in list(pods.first_seen.items()) if name.startswith(f"{job}-")]
        return min(seen) if seen else None

    wait_until(f"pods for {count} jobs", lambda: all(first_pod(j) is not None for j in created))
    return created, {j: first_pod(j) or 0.0 for j in created}


def summary(values: list[float]) -> str:
    return f"p50 {statistics.median(values):.3f} s, p99 {percentile(values, 0.99):.3f} s"


def run(core: client.CoreV1Api, custom: client.CustomObjectsApi, kueue: Kueue,
        operator: Operator, count: int, tag: str) -> dict[str, list[float]]:
    """One baseline burst and one queued burst of `count` jobs; their latencies."""
    assert operator.proc is not None
    out: dict[str, list[float]] = {}
    namespace = f"bench-plain-{tag}"
    create_namespace(core, namespace)
    pods = PodWatch(core, namespace)
    pods.start()
    pods.ready.wait()
    settle(operator.proc.pid)
    created, first = burst(custom, pods, count, None)
    out["plain create->pod"] = [first[j] - created[j] for j in created]
    delete_namespace(core, namespace)

    namespace = f"bench-queued-{tag}"
    create_namespace(core, namespace)
    cluster_queue = kueue.queue(namespace, QUEUE, cpu=str(count), memory=f"{count}Gi")
    pods = PodWatch(core, namespace)
    admitted = AdmittedWatch(custom, namespace)
    pods.start()
    admitted.start()
    pods.ready.wait()
    admitted.ready.wait()
    settle(operator.proc.pid)
    created, first = burst(custom, pods, count, QUEUE)
    wait_until("every Workload admitted",
               lambda: all(f"trainjob-{j}" in admitted.admitted for j in created))
    at = {j: admitted.admitted[f"trainjob-{j}"] for j in created}
    early = [j for j in created if first[j] < at[j]]
    if early:  # the gate failed: pods before Kueue's admission (a bug, not a latency)
        print(f"  !! {len(early)} jobs had pods before their Workload was seen admitted")
    out["queued admitted->pod"] = [first[j] - at[j] for j in created]
    slow = sorted(j for j in created if first[j] - at[j] > SLOW)
    if slow:  # the operator missed the Workload's event and ran on its next timed pass
        print(f"  {namespace}: {len(slow)} of {count} jobs over {SLOW:.0f} s admitted->pod: "
              f"{', '.join(f'{j} {first[j] - at[j]:.1f} s' for j in slow)}")
    out["queued create->admitted"] = [at[j] - created[j] for j in created]
    out["queued create->pod"] = [first[j] - created[j] for j in created]
    kueue.delete_queue(namespace, QUEUE, cluster_queue)
    # Not waited for: Kueue's finalizer on an admitted Workload may hold it a while.
    core.delete_namespace(namespace)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", default="20,40", help="burst sizes, comma-separated")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each burst size")
    args = parser.parse_args()
    sizes = [int(n) for n in args.jobs.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="cogwork-bench-kueue-"))
    cp = ControlPlane(workdir)
    cp.start()
    kueue = Kueue(cp)
    operator = Operator(cp, workdir / "operator")
    try:
        install_crds(cp)
        install_rbac(cp)
        kueue.start()  # before the operator: it watches Workloads only if served at start-up
        operator.start()
        config.load_kube_config(str(cp.kubeconfig("admin")))
        api = client.ApiClient()
        api.configuration.connection_pool_maxsize = 16
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        for count in sizes:
            merged: dict[str, list[float]] = {}
            for r in range(args.rounds):
                for key, values in run(core, custom, kueue, operator, count,
                                       f"{count}-{r}").items():
                    merged.setdefault(key, []).extend(values)
            print(f"{count} jobs created back to back ({args.rounds} round(s)):")
            for key, values in merged.items():
                print(f"  {key:24s} {summary(values)}")
            base, gated = merged["plain create->pod"], merged["queued admitted->pod"]
            print(f"  ratio admitted->pod / plain create->pod: p50 "
                  f"{statistics.median(gated) / statistics.median(base):.2f}, p99 "
                  f"{percentile(gated, 0.99) / percentile(base, 0.99):.2f}")
    finally:
        operator.stop()
        kueue.stop()
        cp.stop()


if __name__ == "__main__":
    main()
