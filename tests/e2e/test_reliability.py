"""Reliability and security on the real control plane, operator under the chart's RBAC:
malformed input, PodSecurity `restricted`, no secrets in what the operator writes, an apiserver
restart mid-job, and the operator killed at random points while many jobs run."""

from __future__ import annotations

import copy
import json
import random
import re
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness.cluster import Cluster
from harness.controlplane import free_port
from harness.jobs import Jobs, digits_job
from harness.operator import Operator

pytestmark = pytest.mark.cluster

MALFORMED = Path(__file__).parent / "malformed"
PLURALS = {"TrainJob": "trainjobs", "TuneJob": "tunejobs", "LabelJob": "labeljobs"}
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}")
# Operator killed at random points while this many script TrainJobs run. 20, not the issue's
# 50: every job is two torch-importing processes, on a 2-core machine.
KILL_TEST_JOBS = 20


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
        manifest["metadata"] = {"name": case["name"]}
        out.append((case, manifest))
    return out


def operator_log_since(operator: Operator, offset: int) -> str:
    return operator.log_file.read_bytes()[offset:].decode(errors="replace")


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), {})


def script_job(name: str, command: list[str], **spec: Any) -> dict[str, Any]:
    job = digits_job(name)
    del job["spec"]["task"], job["spec"]["data"], job["spec"]["checkpoint"]
    job["spec"].update({
        "script": {"command": command},
        "nodes": {"min": 1, "max": 1},
        "resources": {"cpu": "100m", "memory": "256Mi"},
        "rendezvous": {"joinTimeoutSeconds": 120, "lastCallTimeoutSeconds": 1, "maxRestarts": 0},
        **spec,
    })
    return job


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
def test_operator_killed_at_random_points(cluster: Cluster, operator: Operator,
                                          jobs: Jobs) -> None:
    rng = random.Random(6)
    names = [f"sleep-{i:02d}" for i in range(KILL_TEST_JOBS)]
    for name in names:
        jobs.apply(script_job(name, ["python", "-c", "import time; time.sleep(6)"]))
    seen: dict[str, set[str]] = {}  # pod name -> every uid it ever had

    def observe() -> list[dict[str, Any]]:
        pods = jobs.pods("cogwork.dev/kind=TrainJob")
        for pod in pods:
            seen.setdefault(pod["metadata"]["name"], set()).add(pod["metadata"]["uid"])
        return pods

    def phases() -> dict[str, str | None]:
        items = jobs.cluster.kubectl_json("get", "trainjobs", "-n", jobs.namespace)["items"]
        return {i["metadata"]["name"]: (i.get("status") or {}).get("phase")
                for i in items}  # type: ignore[union-attr]

    for _ in range(3):
        observe()
        time.sleep(rng.uniform(0.5, 5.0))
        operator.restart()  # SIGKILL: no cleanup, whatever it was doing
    deadline = time.monotonic() + 360
    while time.monotonic() < deadline:
        observe()
        if all(p in ("Succeeded", "Failed") for p in phases().values()):
            break
        time.sleep(2)
    observe()
    unfinished = {n: p for n, p in phases().items() if p not in ("Succeeded", "Failed")}
    assert not unfinished, f"not terminal after 3 kills: {unfinished}"
    statuses = {n: jobs.status(n) for n in names}
    assert all(s["phase"] == "Succeeded" for s in statuses.values()), {
        n: condition(s, "Failed").get("message") for n, s in statuses.items()}
    assert all(s.get("restarts", 0) == 0 for s in statuses.values())
    # No duplicates: one worker per job, never deleted and recreated under the same name.
    for name in names:
        assert seen.get(f"{name}-node-0") and len(seen[f"{name}-node-0"]) == 1, name
        assert not [p for p in seen if p.startswith(f"{name}-node-") and p != f"{name}-node-0"]
    assert operator.starts >= 4 and operator.proc is not None and operator.proc.poll() is None
