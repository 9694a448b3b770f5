"""Operator throughput, latency and memory on a real control plane (no node agent: pods stay
Pending, so only the control path is measured).

    .venv/bin/python bench/operator_throughput.py [--jobs 200] [--live 1000] [--nodes 1] \
        [--rounds 3]

1. Throughput, in rounds that alternate baseline and operator on the same apiserver (this
   machine's speed drifts; neighbours drift less): the baseline creates as many pods as the
   jobs need (rdzv + one worker per script TrainJob) directly, one at a time; then a backlog
   of N script TrainJobs (suspend=false, `--nodes` workers) is created while the operator is
   down, and the clock runs from its /healthz until every job's pods exist (seen by a pod
   watch). Ratio = operator pods/s / raw pods/s; the median over the rounds is reported, and
   each round's namespace is deleted before the next. A 1-node job costs 6 writes for its 2
   pods (its Service, the checkpoint PVC, one status patch, one Created Event), so the ratio
   grows with --nodes. Also reported: raw creates from a pool of 6 threads.
2. Latency per job: its create call -> the last of its pods seen by the watch (p50, p99), one
   job at a time and in a burst of 100 created back to back while the operator runs.
3. RSS: the operator process's resident memory, idle and with `--live` suspended TrainJobs
   (suspended: no pods) after every one of them shows phase Suspended.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests/cluster"))

from harness.controlplane import ControlPlane  # noqa: E402
from harness.operator import Operator, install_crds, install_rbac  # noqa: E402
from kubernetes import client, config, watch  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402
from urllib3.exceptions import ProtocolError  # noqa: E402

GROUP, VERSION = "cogwork.dev", "v1alpha1"
NODES = 1  # workers per job (--nodes); a job's pods are the rendezvous store + its workers
RAW_THREADS = 6


def raw_pod(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["true"]}]}}


def pod_suffixes() -> list[str]:
    return ["rdzv", *[f"node-{i}" for i in range(NODES)]]


def script_job(name: str, suspend: bool) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "TrainJob", "metadata": {"name": name},
            "spec": {"suspend": suspend, "script": {"command": ["python", "-c", "pass"]},
                     "nodes": {"min": NODES, "max": NODES},
                     "resources": {"cpu": "100m", "memory": "128Mi"}}}


def create_namespace(core: client.CoreV1Api, name: str) -> None:
    core.create_namespace({"metadata": {"name": name}})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # pods need the namespace's default ServiceAccount
        if core.list_namespaced_service_account(name).items:
            return
        time.sleep(0.2)
    raise TimeoutError(f"no default ServiceAccount in {name}")


def raw_creates(core: client.CoreV1Api, namespace: str, count: int, threads: int) -> float:
    """Pods per second creating `count` pods directly."""
    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda i: core.create_namespaced_pod(namespace, raw_pod(f"p-{i}")),
                      range(count)))
    return count / (time.monotonic() - started)


class PodWatch(threading.Thread):
    """First time each pod name is seen in a namespace."""

    def __init__(self, core: client.CoreV1Api, namespace: str) -> None:
        super().__init__(daemon=True)
        self.core, self.namespace = core, namespace
        self.first_seen: dict[str, float] = {}
        self.ready = threading.Event()

    def run(self) -> None:
        # A watch can end early under load (a dropped stream once hung a run): list what was
        # missed (seen now: at worst a late time, never a lost pod) and watch on from there.
        while True:
            try:
                listed = self.core.list_namespaced_pod(self.namespace)
                now = time.monotonic()
                for pod in listed.items:
                    self.first_seen.setdefault(pod.metadata.name, now)
                self.ready.set()
                for event in watch.Watch().stream(
                        self.core.list_namespaced_pod, self.namespace, timeout_seconds=1800,
                        resource_version=listed.metadata.resource_version):
                    self.first_seen.setdefault(event["object"].metadata.name, time.monotonic())
            except (ProtocolError, ApiException, OSError):  # also: the control plane stopped
                time.sleep(0.5)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settle(pid: int, busy: float = 0.1, timeout: float = 60) -> None:
    """Wait until the process uses under `busy` of a core over a second (or `timeout`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = cpu_seconds(pid)
        time.sleep(1)
        if cpu_seconds(pid) - before < busy:
            return


def create_jobs(custom: client.CustomObjectsApi, pods: PodWatch, names: list[str],
                one_at_a_time: bool) -> dict[str, float]:
    """Create script TrainJobs; returns each job's apply->pods latency once all pods exist."""
    created: dict[str, float] = {}
    for name in names:
        custom.create_namespaced_custom_object(GROUP, VERSION, pods.namespace, "trainjobs",
                                               script_job(name, suspend=False))
        created[name] = time.monotonic()
        if one_at_a_time:
            wait_pods(pods, [name])
    wait_pods(pods, names)
    return {job: max(pods.first_seen[f"{job}-{s}"] for s in pod_suffixes()) - at
            for job, at in created.items()}


def wait_pods(pods: PodWatch, jobs: list[str], timeout: float = 900) -> None:
    wanted = {f"{job}-{suffix}" for job in jobs for suffix in pod_suffixes()}
    deadline = time.monotonic() + timeout
    while not wanted <= pods.first_seen.keys():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(wanted - pods.first_seen.keys())} pods never appeared")
        time.sleep(0.01)


def backlog_rate(core: client.CoreV1Api, custom: client.CustomObjectsApi, operator: Operator,
                 jobs: int, namespace: str) -> tuple[float, PodWatch]:
    """A backlog of `jobs` TrainJobs created while the operator is down; the clock runs from
    the operator's /healthz until every pod exists. Returns pods/s; the operator keeps running."""
    create_namespace(core, namespace)
    pods = PodWatch(core, namespace)
    pods.start()
    pods.ready.wait()
    backlog = [f"j-{i:04d}" for i in range(jobs)]
    for name in backlog:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "trainjobs",
                                               script_job(name, suspend=False))
    started = time.monotonic()
    operator.start()
    healthy = time.monotonic()
    assert operator.proc is not None
    cpu_before = cpu_seconds(operator.proc.pid)
    wait_pods(pods, backlog)
    done = max(pods.first_seen[f"{j}-{s}"] for j in backlog for s in pod_suffixes())
    cpu = cpu_seconds(operator.proc.pid) - cpu_before
    rate = jobs * (NODES + 1) / (done - healthy)
    print(f"  operator: backlog of {jobs} TrainJobs -> {jobs * (NODES + 1)} pods at {rate:.1f} "
          f"pods/s from /healthz ({done - healthy:.1f} s; {done - started:.1f} s from process "
          f"start; operator CPU {cpu:.1f} s = {100 * cpu / (done - healthy):.0f}% of a core)")
    return rate, pods


def latencies(custom: client.CustomObjectsApi, operator: Operator, pods: PodWatch) -> None:
    """Apply->pods latency of jobs created while the operator runs: one at a time (an otherwise
    quiet operator: the backlog's follow-up passes end first), then a burst of 100 created back
    to back (the client's create rate bounds the burst)."""
    assert operator.proc is not None
    settle(operator.proc.pid)
    alone = create_jobs(custom, pods, [f"a-{i:02d}" for i in range(20)], True)
    burst_started = time.monotonic()
    burst = create_jobs(custom, pods, [f"b-{i:04d}" for i in range(100)], False)
    burst_wall = time.monotonic() - burst_started
    for label, values in (("one job at a time (20)", alone.values()),
                          (f"burst of 100 ({100 / burst_wall:.0f} creates/s)", burst.values())):
        v = list(values)
        print(f"apply->pods latency, {label}: p50 {statistics.median(v):.2f} s, "
              f"p99 {percentile(v, 0.99):.2f} s")


def delete_namespace(core: client.CoreV1Api, name: str, timeout: float = 300) -> None:
    """Delete a namespace and wait until it is gone: the next round starts on a quiet cluster."""
    core.delete_namespace(name)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            core.read_namespace(name)
        except ApiException as err:
            if err.status == 404:
                return
            raise
        time.sleep(0.5)
    raise TimeoutError(f"namespace {name} was not deleted")


def live_jobs_rss(custom: client.CustomObjectsApi, core: client.CoreV1Api, operator: Operator,
                  count: int) -> float:
    namespace = "bench-live"
    create_namespace(core, namespace)
    with ThreadPoolExecutor(RAW_THREADS) as pool:
        list(pool.map(lambda i: custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "trainjobs", script_job(f"live-{i:04d}", True)),
            range(count)))
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace,
                                                     "trainjobs")["items"]
        if sum((i.get("status") or {}).get("phase") == "Suspended" for i in items) >= count:
            break
        time.sleep(2)
    else:
        raise TimeoutError("live jobs never all Suspended")
    time.sleep(5)  # let the reconcile loops settle into their timers
    assert operator.proc is not None
    return rss_mb(operator.proc.pid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200, help="TrainJobs for the rate test")
    parser.add_argument("--live", type=int, default=1000,
                        help="suspended TrainJobs for RSS (0 skips it)")
    parser.add_argument("--nodes", type=int, default=1, help="worker pods per TrainJob")
    parser.add_argument("--rounds", type=int, default=3,
                        help="baseline/operator rounds; the ratio reported is their median")
    args = parser.parse_args()
    global NODES
    NODES = args.nodes
    workdir = Path(tempfile.mkdtemp(prefix="cogwork-bench-"))
    cp = ControlPlane(workdir)
    cp.start()
    operator = Operator(cp, workdir / "operator")
    try:
        install_crds(cp)
        install_rbac(cp)
        config.load_kube_config(str(cp.kubeconfig("admin")))
        api = client.ApiClient()
        api.configuration.connection_pool_maxsize = 16  # type: ignore[attr-defined]
        core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
        pods = args.jobs * (NODES + 1)
        operator.start()  # idle: no jobs yet
        assert operator.proc is not None
        idle_rss = rss_mb(operator.proc.pid)
        operator.stop()
        # Rounds alternate the baseline and the operator on the same apiserver: this machine's
        # speed drifts, and a ratio of neighbours drifts less than one of separate runs.
        ratios: list[float] = []
        for r in range(args.rounds):
            if r:
                operator.stop()
                delete_namespace(core, f"bench-operator-{r - 1}")
            create_namespace(core, f"bench-raw-seq-{r}")
            raw_seq = raw_creates(core, f"bench-raw-seq-{r}", pods, 1)
            delete_namespace(core, f"bench-raw-seq-{r}")
            print(f"round {r + 1}: raw pod creates ({pods} pods, sequential) {raw_seq:.1f} pods/s")
            rate, watch_ = backlog_rate(core, custom, operator, args.jobs, f"bench-operator-{r}")
            ratios.append(rate / raw_seq)
            print(f"  ratio operator/raw sequential: {ratios[-1]:.2f}")
        create_namespace(core, "bench-raw")
        raw_par = raw_creates(core, "bench-raw", pods, RAW_THREADS)
        print(f"raw pod creates ({pods} pods) from {RAW_THREADS} threads: {raw_par:.1f} pods/s "
              f"(last round's operator: {rate / raw_par:.2f} of it)")
        print(f"ratio operator/raw sequential, median of {args.rounds} rounds: "
              f"{statistics.median(ratios):.2f} (rounds: "
              f"{', '.join(f'{x:.2f}' for x in ratios)}; goal >= 0.5)")
        latencies(custom, operator, watch_)
        if not args.live:
            return
        live_rss = live_jobs_rss(custom, core, operator, args.live)
        print(f"operator RSS: idle {idle_rss:.0f} MB, with {args.live} live suspended TrainJobs "
              f"(+{args.jobs + 120} unsuspended ones from the rate test) {live_rss:.0f} MB "
              "(goal <= 150 MB)")
    finally:
        operator.stop()
        cp.stop()


if __name__ == "__main__":
    main()
