"""Reliability and security on the real control plane, operator under the chart's RBAC
(installed by helm): malformed input, PodSecurity `restricted`, no secrets in what the operator
writes nor readable by its account, an apiserver restart mid-job, and the operator killed at
random points while 50 jobs are live."""

from __future__ import annotations

import copy
import json
import random
import re
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness.cluster import Cluster
from harness.controlplane import free_port
from harness.jobs import Jobs, digits_job, script_job
from harness.kueue import QUEUE_LABEL, Kueue
from harness.operator import OPERATOR_NAMESPACE, Operator

pytestmark = pytest.mark.cluster

MALFORMED = Path(__file__).parent / "malformed"
PLURALS = {"TrainJob": "trainjobs", "TuneJob": "tunejobs", "LabelJob": "labeljobs"}
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}")
# The operator killed at random points while this many script TrainJobs are live.
KILL_TEST_JOBS = 50
# Each job runs two torch-importing processes (torchrun and the rendezvous store), ~290 MB of
# private memory apiece with PyPI's CUDA wheel: 100 at once would not fit this 24 GiB machine,
# and its 2 cores import torch no faster with more at once. So all 50 exist from the start and
# Kueue admits at most this many at a time, each whole: store and worker together (queueing
# pods in the scheduler instead deadlocks: store pods fill every slot, workers wait).
KILL_TEST_ADMITTED = 12
# The ClusterQueue's quota fits exactly KILL_TEST_ADMITTED jobs. A job's Workload has two pod
# sets: its worker (script_job's resources, 100m / 256Mi; the trainer image: no init container)
# and its rendezvous store (the operator's config, the chart's trainer.rendezvous default
# 100m / 512Mi): 200m / 768Mi a job, 2400m / 9216Mi (9Gi) for 12; a 13th would need 2600m.
KILL_TEST_QUOTA = {"cpu": f"{12 * 200}m", "memory": f"{12 * 768}Mi"}
# Script run time: the jobs Kueue admits first outlast the early kills (three operator
# restarts, each waiting for the new process to be healthy: 12-40 s apiece while the first
# wave's 24 processes import torch; 60 s from the apply was too short), the rest are short.
# Which jobs Kueue admits first depends on the order the operator creates their Workloads, so
# every job sleeps at least LATER_SECONDS and until FIRST_WAVE_SECONDS after the apply began:
# the first wave ends together, whichever it is.
FIRST_WAVE_SECONDS, LATER_SECONDS = 120, 3
TERMINAL = ("Succeeded", "Failed")
EARLY_KILLS = 3  # while all 50 jobs are live: children being created, pods starting


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def corpus() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(case, manifest) for every malformed manifest."""
    bases = yaml.safe_load((MALFORMED / "bases.yaml").read_text())
    cases = yaml.safe_load((MALFORMED / "corpus.yaml").read_text())["cases"]
    out = []
    for case in cases:
        manifest = merge_patch(bases[case["kind"]], case["patch"])
        manifest["metadata"] = {"name": case.get("metadataName", case["name"])}
        out.append((case, manifest))
    return out


def operator_log_since(operator: Operator, offset: int) -> str:
    return operator.log_file.read_bytes()[offset:].decode(errors="replace")


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), {})


# -- (a) malformed input ---------------------------------------------------------------------
def test_malformed_manifests_are_rejected_naming_the_field(jobs: Jobs, operator: Operator,
                                                           cluster: Cluster) -> None:
    cases = corpus()
    assert len(cases) >= 40 and {c["kind"] for c, _ in cases} == set(PLURALS)
    log_offset = operator.log_file.stat().st_size
    admitted = []
    for case, manifest in cases:
        result = jobs.apply(manifest, check=False)
        if case.get("operator"):
            assert result.returncode == 0, f"{case['name']}: {result.stderr}"
            admitted.append(case)
            continue
        assert result.returncode != 0, f"{case['name']} was admitted"
        if "metadataName" in case:  # a rule on the name names metadata.name, not <nil>
            assert "<nil>" not in result.stderr, f"{case['name']}: {result.stderr}"
        for text in case["expect"]:
            assert text in result.stderr, f"{case['name']}: {text!r} not in {result.stderr!r}"
    assert len(admitted) >= 2
    for case in admitted:  # only the operator can tell: Failed/InvalidSpec naming the field
        status = jobs.wait_for(f"{case['name']} InvalidSpec",
                               lambda c=case: invalid_status(jobs, c), timeout=60)
        message = condition(status, "Failed")["message"]
        for text in case["expect"]:
            assert text in message, f"{case['name']}: {text!r} not in {message!r}"
        assert status["phase"] == "Failed"
        assert condition(status, "Stalled")["status"] == "True"  # kstatus: Argo/Flux see it
    # The operator survived all of it, without a single traceback.
    assert operator.proc is not None and operator.proc.poll() is None
    assert "Traceback" not in operator_log_since(operator, log_offset)
    assert not jobs.pods(), "no malformed job started a pod"


def invalid_status(jobs: Jobs, case: dict[str, Any]) -> dict[str, Any] | None:
    status = jobs.get(case["name"], PLURALS[case["kind"]]).get("status") or {}
    return status if condition(status, "Failed").get("reason") == "InvalidSpec" else None


# -- (b) PodSecurity restricted, (c) no secrets in status, events or logs ------------------------
def test_restricted_namespace_runs_a_job_and_nothing_leaks(cluster: Cluster, operator: Operator,
                                                           namespace: str) -> None:
    restricted = f"{namespace[:50]}-rst"
    cluster.create_namespace(restricted, {"pod-security.kubernetes.io/enforce": "restricted",
                                          "pod-security.kubernetes.io/enforce-version": "latest"})
    jobs = Jobs(cluster, restricted)
    try:
        # PodSecurity really enforces here: a root, privileged pod is refused.
        bad = cluster.kubectl("run", "root", "-n", restricted, "--image=busybox",
                              "--privileged", check=False)
        assert bad.returncode != 0 and "violates PodSecurity" in bad.stderr
        secret_value = f"s3cret-{random.randrange(10**12):012d}"
        cluster.kubectl("create", "secret", "generic", "db", "-n", restricted,
                        f"--from-literal=password={secret_value}")
        log_offset = operator.log_file.stat().st_size
        job = digits_job("restricted", nodes={"min": 1, "max": 1},
                         task={"name": "image-classification", "epochs": 3, "batchSize": 64,
                               "learningRate": "0.05"})
        jobs.apply(job)
        jobs.wait_phase("restricted", "Running", "Succeeded", "Failed", timeout=180)
        tokens = report_tokens(cluster, jobs)
        assert tokens, "the workers mount a projected report token"
        status = jobs.wait_phase("restricted", "Succeeded", "Failed", timeout=300)
        assert status["phase"] == "Succeeded", json.dumps(status)[:2000]
        assert status.get("progress", {}).get("step"), "reports (token-authenticated) arrived"
        pods = jobs.pods("cogwork.dev/job-name=restricted")
        assert pods and all(p["spec"]["securityContext"]["runAsNonRoot"] for p in pods)
        # (c) Nothing secret in what the operator writes or logs.
        events = json.dumps(cluster.kubectl_json("get", "events", "-n", restricted))
        written = {"status": json.dumps(jobs.get("restricted")), "events": events,
                   "operator log": operator_log_since(operator, log_offset)}
        for where, text in written.items():
            assert secret_value not in text, f"secret value in {where}"
            for token in tokens:
                assert token not in text, f"report token in {where}"
            assert not JWT.search(text), f"a bearer token in {where}"
    finally:
        cluster.kubectl("delete", "namespace", restricted, "--wait=false", check=False)


def report_tokens(cluster: Cluster, jobs: Jobs) -> set[str]:
    """The projected report tokens the node agent minted for the job's pods (as a kubelet)."""
    found: set[str] = set()
    for pod in jobs.pods("cogwork.dev/job-name=restricted"):
        root = cluster.workdir / "agent" / "pods" / pod["metadata"]["uid"] / "volumes"
        for path in root.glob("report-token/**/token"):
            found.add(path.read_text().strip())
    return {t for t in found if t}


def test_operator_account_is_the_charts_and_reads_no_secrets(cluster: Cluster,
                                                             operator: Operator) -> None:
    who = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{operator.service_account}"

    def can_i(verb: str, resource: str) -> str:
        return cluster.kubectl("auth", "can-i", verb, resource, f"--as={who}",
                               "--all-namespaces", check=False).stdout.strip()

    assert can_i("create", "pods") == "yes"  # the chart's ClusterRoleBinding is in effect
    for verb in ("get", "list", "watch"):
        assert can_i(verb, "secrets") == "no"


# -- (d) the apiserver restarts under a running job ------------------------------------------
def test_apiserver_restart_mid_job(cluster: Cluster, operator: Operator, jobs: Jobs) -> None:
    # Metrics on: the same run checks the operator's /metrics endpoint.
    operator.extra_env["COGWORK_METRICS_PORT"] = str(free_port())
    operator.restart()
    jobs.apply(digits_job("survivor", nodes={"min": 1, "max": 1},
                          task={"name": "image-classification", "epochs": 4, "batchSize": 64,
                                "learningRate": "0.05"}))
    jobs.wait_phase("survivor", "Running", timeout=180)
    cluster.control_plane.restart_apiserver()
    status = jobs.wait_phase("survivor", "Succeeded", "Failed", timeout=300)
    assert status["phase"] == "Succeeded", json.dumps(status)[:2000]
    assert operator.proc is not None and operator.proc.poll() is None
    assert condition(status, "Ready")["status"] == "True"
    port = operator.extra_env["COGWORK_METRICS_PORT"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    assert re.search(r'cogwork_reconcile_total\{controller="trainjob",result="ok"\} [1-9]', text)
    assert re.search(r'cogwork_jobs\{kind="TrainJob",phase="Succeeded"\} [1-9]', text)
    assert "cogwork_reconcile_time_seconds_bucket" in text


# -- (e) the operator killed at random points -------------------------------------------------
class PodWatch:
    """Every (pod name, uid) the apiserver reported, from one watch that spans the whole test:
    a pod deleted and recreated between two polls still shows up here."""

    def __init__(self, cluster: Cluster, namespace: str, selector: str) -> None:
        cp = cluster.control_plane
        self.log = cluster.workdir / f"podwatch-{namespace}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [str(cp.binary), "kubectl", f"--kubeconfig={cp.kubeconfig('admin')}", "get",
                 "pods", "-n", namespace, "-l", selector, "--watch",
                 "-o", 'jsonpath={.metadata.name} {.metadata.uid}{"\\n"}'],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def uids(self) -> dict[str, set[str]]:
        seen: dict[str, set[str]] = {}
        for line in self.log.read_text().splitlines():
            name, _, uid = line.partition(" ")
            seen.setdefault(name, set()).add(uid)
        return seen

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def stop_policy(cluster: Cluster, cluster_queue: str, policy: str) -> None:
    cluster.kubectl("patch", "clusterqueue", cluster_queue, "--type=merge",
                    "-p", json.dumps({"spec": {"stopPolicy": policy}}))


def kill_test_job(name: str, queue: str, wave_ends: float) -> dict[str, Any]:
    job = script_job(name, ["python", "-c", "import time; time.sleep(max("
                            f"{LATER_SECONDS}, {wave_ends:.1f} - time.time()))"])
    job["metadata"].setdefault("labels", {})[QUEUE_LABEL] = queue
    return job


def test_operator_killed_at_random_points(cluster: Cluster, kueue: Kueue, operator: Operator,
                                          jobs: Jobs) -> None:
    rng = random.Random(6)
    names = [f"sleep-{i:02d}" for i in range(KILL_TEST_JOBS)]
    cluster_queue = kueue.queue(jobs.namespace, "kill-test", **KILL_TEST_QUOTA)
    watch = PodWatch(cluster, jobs.namespace, "cogwork.dev/kind=TrainJob")
    starts_before = operator.starts
    try:
        # All 50 exist before Kueue admits any: held, the queue admits nothing (were the first
        # jobs' pods importing torch while the apply runs, it would take minutes).
        stop_policy(cluster, cluster_queue, "Hold")
        wave_ends = time.time() + FIRST_WAVE_SECONDS  # wall clock: the pods' processes read it
        jobs.apply({"apiVersion": "v1", "kind": "List", "items": [
            kill_test_job(name, "kill-test", wave_ends) for name in names]})
        stop_policy(cluster, cluster_queue, "None")
        kills, most = run_with_random_kills(operator, jobs, rng, timeout=720)
        assert watch.proc.poll() is None, "the pod watch ended early: it may have missed pods"
        print(f"\nkill points ({len(kills)}):", "; ".join(
            f"{k['jobs']} live jobs ({k['admitted']} admitted), {k['pods']} pods "
            f"({k['running']} running)" for k in kills))
        print(f"at most {most['with_pods']} jobs with pods, {most['admitted']} admitted")
        assert all(k["jobs"] == KILL_TEST_JOBS for k in kills[:EARLY_KILLS]), kills
        unfinished = {n: p for n, p in job_phases(jobs).items() if p not in TERMINAL}
        assert not unfinished, f"not terminal after {len(kills)} kills: {unfinished}"
        statuses = {n: jobs.status(n) for n in names}
        assert all(s["phase"] == "Succeeded" for s in statuses.values()), {
            n: condition(s, "Failed").get("message") for n, s in statuses.items()}
        assert all(s.get("restarts", 0) == 0 for s in statuses.values())
        # Kueue's quota was the gate: never more jobs with pods than it fits, and all it fits.
        assert most["with_pods"] <= KILL_TEST_ADMITTED, most
        assert most["admitted"] == KILL_TEST_ADMITTED, most
        # Every Workload handed its quota back: Finished (the operator writes it right after
        # the job's terminal phase, so the last ones may trail the loop's end by a pass).
        finished = jobs.wait_for("every Workload Finished", lambda: (
            w if len(w := workload_conditions(jobs)) == KILL_TEST_JOBS
            and all("Finished" in c for c in w.values()) else None), timeout=60)
        assert set(finished) == {f"trainjob-{n}" for n in names}, sorted(finished)
    finally:
        watch.stop()
        kueue.delete_queue(jobs.namespace, "kill-test", cluster_queue)
    # No duplicates: each job had one store and one worker, never deleted and recreated.
    seen = watch.uids()
    for name in names:
        pods = {pod: uids for pod, uids in seen.items() if pod.startswith(f"{name}-")}
        assert set(pods) == {f"{name}-rdzv", f"{name}-node-0"}, (name, pods)
        assert all(len(uids) == 1 for uids in pods.values()), (name, pods)
    assert operator.starts == starts_before + len(kills)
    assert operator.proc is not None and operator.proc.poll() is None


def run_with_random_kills(operator: Operator, jobs: Jobs, rng: random.Random, timeout: float
                          ) -> tuple[list[dict[str, int]], dict[str, int]]:
    """Until all jobs are finished (Kueue admitting them as quota frees), SIGKILL the operator
    (no cleanup, whatever it was doing) a few times while every job is live, then once each when
    the live jobs first drop to two random thresholds (jobs finishing). Returns the kill points
    and the most jobs seen at once with pods and with their Workload admitted."""
    kills: list[dict[str, int]] = []
    most = {"with_pods": 0, "admitted": 0}
    thresholds = [rng.randint(25, 40), rng.randint(5, 20)]
    next_kill = time.monotonic() + rng.uniform(0.2, 2.0)  # the first: children being created
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # Pods first, then phases: a job counts as holding pods while it is not terminal (a
        # finished job's pods may linger), and the operator writes the terminal phase before
        # it marks the Workload Finished, so a job read live here still held its quota when its
        # pods were listed.
        pods = pod_rows(jobs)
        phases = job_phases(jobs)
        admitted = admitted_workloads(jobs)
        live = sum(p not in TERMINAL for p in phases.values())
        with_pods = {job for job, _ in pods if phases.get(job) not in TERMINAL}
        most["with_pods"] = max(most["with_pods"], len(with_pods))
        most["admitted"] = max(most["admitted"], admitted)
        if not live:
            break
        early = len(kills) < EARLY_KILLS
        if (early and time.monotonic() >= next_kill) or \
                (not early and thresholds and live <= thresholds[0]):
            kills.append({"jobs": live, "admitted": admitted, "pods": len(pods),
                          "running": sum(phase == "Running" for _, phase in pods)})
            operator.restart()
            if not early:
                thresholds.pop(0)
            next_kill = time.monotonic() + rng.uniform(0.5, 3.0)
        time.sleep(1)
    return kills, most


def job_phases(jobs: Jobs) -> dict[str, str]:
    out = jobs.cluster.kubectl("get", "trainjobs", "-n", jobs.namespace, "-o",
                               'jsonpath={range .items[*]}{.metadata.name} {.status.phase}'
                               '{"\\n"}{end}').stdout
    rows = (line.partition(" ") for line in out.splitlines())
    return {name: phase for name, _, phase in rows}


def pod_rows(jobs: Jobs) -> list[tuple[str, str]]:
    """(job name, pod phase) of every TrainJob pod."""
    out = jobs.cluster.kubectl("get", "pods", "-n", jobs.namespace, "-l",
                               "cogwork.dev/kind=TrainJob", "-o",
                               r'jsonpath={range .items[*]}{.metadata.labels.cogwork\.dev/job-name}'
                               ' {.status.phase}{"\\n"}{end}').stdout
    return [(job, phase) for job, _, phase in (line.partition(" ") for line in out.splitlines())]


def workload_conditions(jobs: Jobs) -> dict[str, set[str]]:
    """Each Workload's conditions that are True."""
    out = jobs.cluster.kubectl("get", "workloads.v1beta2.kueue.x-k8s.io", "-n", jobs.namespace,
                               "-o", 'jsonpath={range .items[*]}{.metadata.name}{" "}'
                               '{range .status.conditions[?(@.status=="True")]}{.type}{","}{end}'
                               '{"\\n"}{end}').stdout
    rows = (line.partition(" ") for line in out.splitlines())
    return {name: set(filter(None, types.split(","))) for name, _, types in rows}


def admitted_workloads(jobs: Jobs) -> int:
    """Workloads admitted and not finished: the jobs holding quota."""
    return sum("Admitted" in c and "Finished" not in c
               for c in workload_conditions(jobs).values())
