"""Children the real apiserver refuses (ResourceQuota, LimitRange, Priority and ServiceAccount
admission): every kind ends in the Created=False condition quoting the apiserver and naming the
spec field, kstatus Stalled, within seconds; retries back off (the operator's log grows by a
handful of lines, never a traceback); children made before the refusal are kept; a raised
quota lets the job go on."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from harness.jobs import Jobs, digits_job
from harness.operator import Operator

pytestmark = pytest.mark.cluster

API = "cogwork.dev/v1alpha1"
CONDITION_WITHIN_S = 60
QUIET_WINDOW_S = 30
# Lines the operator may log about one refused job in QUIET_WINDOW_S: retries at 5, 5, 10, 20 s.
MAX_LINES_IN_WINDOW = 8


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), {})


def created_false(jobs: Jobs, name: str, kind: str) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        status = jobs.get(name, kind).get("status") or {}
        return status if condition(status, "Created").get("status") == "False" else None
    return check


def quota(name: str, hard: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name},
            "spec": {"hard": hard}}


def cpu_limit_range(max_cpu: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "small"},
            "spec": {"limits": [{"type": "Container", "max": {"cpu": max_cpu}}]}}


def fixed_job(name: str, nodes: int = 1, **spec: Any) -> dict[str, Any]:
    job = digits_job(name, **spec)
    job["spec"]["nodes"] = {"min": nodes, "max": nodes}
    job["spec"]["task"]["epochs"] = 200  # never finishes by itself within the test
    return job


def assert_refused(jobs: Jobs, operator: Operator, name: str, kind: str, *,
                   quoted: str, field: str | None) -> dict[str, Any]:
    """The condition arrives within CONDITION_WITHIN_S, quotes `quoted`, names `field`; then
    the operator stays quiet about the job: no hot loop, no traceback."""
    offset = operator.log_file.stat().st_size
    started = time.monotonic()
    status = jobs.wait_for(f"{name} Created=False", created_false(jobs, name, kind),
                           timeout=CONDITION_WITHIN_S)
    took = time.monotonic() - started
    created = condition(status, "Created")
    assert created["reason"] == "ChildRejected", created
    assert "refused by the apiserver" in created["message"], created
    assert quoted in created["message"], created
    if field:
        assert f"(check {field})" in created["message"], created
    stalled = condition(status, "Stalled")
    assert stalled["status"] == "True" and stalled["reason"] == "ChildRejected", status
    assert condition(status, "Reconciling")["status"] == "False", status

    time.sleep(QUIET_WINDOW_S)
    log = operator.log_file.read_bytes()[offset:].decode(errors="replace")
    about = [line for line in log.splitlines() if jobs.namespace in line]
    lines = [line for line in about if "refused by the apiserver" in line or "ERROR" in line]
    print(f"{kind} {name}: condition after {took:.1f}s; {len(lines)} operator log lines about "
          f"the refusal ({len(about)} about the namespace) in {took + QUIET_WINDOW_S:.0f}s")
    assert "Traceback" not in log
    assert len(lines) <= MAX_LINES_IN_WINDOW, "\n".join(lines[-20:])
    events = [e for e in jobs.events(name) if e["reason"] == "ChildRejected"]
    assert events and events[0]["type"] == "Warning"
    assert sum(e.get("count", 1) for e in events) <= MAX_LINES_IN_WINDOW
    return status


def test_quota_refuses_a_worker_then_a_raised_quota_lets_it_run(
        jobs: Jobs, operator: Operator) -> None:
    # The store (100m) and one worker (1 CPU) fit; the second worker does not.
    jobs.apply(quota("compute", {"limits.cpu": "1500m"}))
    jobs.apply(fixed_job("quota", nodes=2))
    assert_refused(jobs, operator, "quota", "trainjob", quoted="exceeded quota: compute",
                   field="spec.resources")
    # Kept: what was admitted goes on (the workers are created at once: either one fits).
    names = {p["metadata"]["name"] for p in jobs.pods("cogwork.dev/job-name=quota")}
    assert len(names) == 2 and "quota-rdzv" in names, names
    assert jobs.status("quota").get("restarts", 0) == 0  # retrying a refusal is no restart

    offset = operator.log_file.stat().st_size
    jobs.apply(quota("compute", {"limits.cpu": "3"}))
    try:
        status = jobs.wait_for("Created=True after the quota was raised", lambda: (
            s if condition(s := jobs.status("quota"), "Created").get("status") == "True"
            else None), timeout=320)  # the retry backs off to at most 5 min
    except AssertionError:
        print(json.dumps(jobs.status("quota"), indent=1)[:3000])
        print(operator.log_file.read_bytes()[offset:].decode(errors="replace")[-4000:])
        raise
    assert {"quota-node-0", "quota-node-1"} <= {p["metadata"]["name"]
                                                for p in jobs.pods("cogwork.dev/job-name=quota")}
    assert condition(status, "Stalled")["status"] == "False"
    assert status.get("restarts", 0) == 0 and status["phase"] != "Failed"


@pytest.mark.parametrize("case", ["limit-range", "priority-class", "service-account"])
def test_admission_refusals_name_the_field(jobs: Jobs, operator: Operator, case: str) -> None:
    if case == "limit-range":
        # The store pod is sized to fit a tight LimitRange; the 1-CPU workers are not.
        jobs.apply(cpu_limit_range("200m"))
        jobs.apply(fixed_job(case))
        assert_refused(jobs, operator, case, "trainjob",
                       quoted="maximum cpu usage per Container is 200m", field="spec.resources")
        assert {p["metadata"]["name"] for p in jobs.pods(f"cogwork.dev/job-name={case}")} \
            == {f"{case}-rdzv"}
    elif case == "priority-class":
        jobs.apply(fixed_job(case, podTemplate={"priorityClassName": "no-such-class"}))
        assert_refused(jobs, operator, case, "trainjob", quoted="no-such-class",
                       field="spec.podTemplate.priorityClassName")
    else:
        jobs.apply(fixed_job(case, podTemplate={"serviceAccountName": "no-such-account"}))
        assert_refused(jobs, operator, case, "trainjob", quoted="no-such-account",
                       field="spec.podTemplate.serviceAccountName")


def test_a_tunejob_whose_trials_exceed_an_object_quota(jobs: Jobs, operator: Operator) -> None:
    jobs.apply(quota("trials", {"count/trainjobs.cogwork.dev": "1"}))
    template = fixed_job("unused")["spec"]
    jobs.apply({"apiVersion": API, "kind": "TuneJob", "metadata": {"name": "tq"},
                "spec": {"parameters": [{"name": "lr", "field": "task.learningRate",
                                         "logUniform": {"min": "0.001", "max": "0.1"}}],
                         "budget": {"maxTrials": 4, "parallelTrials": 2},
                         "trialTemplate": template}})
    assert_refused(jobs, operator, "tq", "tunejob", quoted="exceeded quota: trials",
                   field="spec.budget.parallelTrials")
    trials = jobs.cluster.kubectl_json("get", "trainjobs", "-n", jobs.namespace)["items"]
    assert len(trials) == 1  # the admitted trial runs on


def test_a_labeljob_pod_refused_by_a_limit_range(jobs: Jobs, operator: Operator) -> None:
    jobs.apply(cpu_limit_range("200m"))
    jobs.apply({"apiVersion": API, "kind": "LabelJob", "metadata": {"name": "lq"},
                "spec": {"model": {"path": "model.pt", "claimName": "models"},
                         "pool": {"dataset": "digits"},
                         "inference": {"replicas": 1, "cpu": "1", "memory": "1Gi"}}})
    assert_refused(jobs, operator, "lq", "labeljob",
                   quoted="maximum cpu usage per Container is 200m", field="spec.inference")


@pytest.mark.parametrize("case", ["memory", "gpu", "missing-claim"])
def test_unschedulable_pods_say_why_and_the_pre_running_deadline_ends_them(
        jobs: Jobs, case: str) -> None:
    spec: dict[str, Any] = {"preRunningDeadlineSeconds": 30}
    quoted = {"memory": "Insufficient memory", "gpu": "Insufficient nvidia.com/gpu",
              "missing-claim": 'persistentvolumeclaim "no-such-claim" not found'}[case]
    if case == "memory":
        spec["resources"] = {"cpu": "1", "memory": "4000Gi"}
    elif case == "gpu":
        spec["resources"] = {"cpu": "1", "memory": "1Gi", "gpu": 1}
    else:
        spec["data"] = {"path": "digits.npz", "claimName": "no-such-claim"}
    jobs.apply(fixed_job(case, **spec))
    # (While the checkpoint claim binds, the scheduler's first word is about that claim.)
    status = jobs.wait_for(f"{case} Scheduled=False quoting {quoted!r}", lambda: (
        s if quoted in condition(s := jobs.status(case), "Scheduled").get("message", "")
        else None), timeout=CONDITION_WITHIN_S)
    scheduled = condition(status, "Scheduled")
    print(f"{case}: {scheduled['message']}")
    assert scheduled["reason"] == "Unschedulable" and quoted in scheduled["message"], scheduled
    assert status["phase"] == "Pending"
    ended = jobs.wait_phase(case, "Failed", timeout=90)
    assert condition(ended, "Failed")["reason"] == "PreRunningDeadlineExceeded", ended
    assert quoted in condition(ended, "Scheduled")["message"]
    assert any(e["reason"] == "Unschedulable" for e in jobs.events(case))
