"""TrainJobs and TuneJob trials under a real Kueue (harness/kueue.py, built from its module):
the operator creates each job's Workload, runs the job only once Kueue admits it, with the count
Kueue admitted, and stops it, then hands the quota back, when Kueue evicts it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
from harness.jobs import Jobs, digits_job
from harness.kueue import QUEUE_LABEL, Kueue

pytestmark = pytest.mark.cluster

TASK = {"name": "image-classification", "epochs": 2, "batchSize": 64, "learningRate": "0.05"}
ONE_NODE = {"min": 1, "max": 1}
# What each job asks for: a worker of 1 CPU / 1Gi and the store's 100m / 512Mi (the chart's
# trainer.rendezvous). A ClusterQueue of 2.2 CPU and 3.2Gi holds two one-node jobs.
WORKER = {"cpu": "1", "memory": "1Gi"}


def queued_job(name: str, queue: str, **spec: Any) -> dict[str, Any]:
    job = digits_job(name, task=spec.pop("task", TASK), nodes=spec.pop("nodes", ONE_NODE),
                     resources=WORKER, **spec)
    job["metadata"]["labels"] = {QUEUE_LABEL: queue}
    return job


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), {})


def stamp(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture
def make_queue(kueue: Kueue, jobs: Jobs) -> Iterator[Callable[..., str]]:
    made: list[tuple[str, str]] = []

    def make(name: str = "lq", **quota: Any) -> str:
        cq = kueue.queue(jobs.namespace, name, **quota)
        made.append((name, cq))
        return name

    yield make
    for name, cq in made:
        kueue.delete_queue(jobs.namespace, name, cq)


def workload(jobs: Jobs, job: str) -> dict[str, Any]:
    found = jobs.cluster.kubectl("get", "workloads.v1beta2.kueue.x-k8s.io", f"trainjob-{job}",
                                 "-n", jobs.namespace, "-o", "json", check=False)
    return json.loads(found.stdout) if found.returncode == 0 else {}


def admitted_at(jobs: Jobs, job: str) -> datetime | None:
    cond = condition(workload(jobs, job).get("status") or {}, "Admitted")
    return stamp(cond["lastTransitionTime"]) if cond.get("status") == "True" else None


def test_a_queue_for_two_runs_four_jobs_two_at_a_time(jobs: Jobs, make_queue: Callable[..., str]
                                                     ) -> None:
    queue = make_queue(cpu="2.2", memory="3.2Gi")
    names = [f"q{i}" for i in range(4)]
    for name in names:
        jobs.apply(queued_job(name, queue))
    wide = jobs.cluster.kubectl("get", "trainjobs", "-n", jobs.namespace, "-o", "wide").stdout
    assert wide.splitlines()[0].split()[-1] == "QUEUE" and f" {queue}\n" in wide, wide
    most_running, seen_waiting = 0, False
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        statuses = {n: jobs.status(n) for n in names}
        admitted = [n for n in names if admitted_at(jobs, n) is not None
                    and statuses[n].get("phase") not in ("Succeeded", "Failed")]
        most_running = max(most_running, len(admitted))
        for name, status in statuses.items():
            suspended = condition(status, "Suspended")
            if suspended.get("status") == "True" and suspended.get("reason") == "Queued":
                seen_waiting = True
                assert f"queued in LocalQueue {queue}" in suspended["message"]
            # No pod before admission (the status may trail the pods by a write, Kueue never).
            for pod in jobs.pods(f"cogwork.dev/job-name={name}"):
                since = admitted_at(jobs, name)
                assert since is not None and \
                    stamp(pod["metadata"]["creationTimestamp"]) >= since, (name, since)
        if all(s.get("phase") == "Succeeded" for s in statuses.values()):
            break
        time.sleep(1)
    assert all(jobs.status(n).get("phase") == "Succeeded" for n in names), \
        {n: jobs.status(n).get("conditions") for n in names}
    assert seen_waiting and most_running == 2, (seen_waiting, most_running)
    for name in names:  # each job's quota was handed back when it finished
        finished = condition(workload(jobs, name).get("status") or {}, "Finished")
        assert finished.get("status") == "True" and finished["reason"] == "Succeeded"


def test_a_gang_that_does_not_fit_gets_no_pods_and_an_elastic_one_runs_with_what_fits(
        jobs: Jobs, make_queue: Callable[..., str]) -> None:
    queue = make_queue(cpu="1.2", memory="2Gi")  # the store and one worker
    jobs.apply(queued_job("pair", queue, nodes={"min": 2, "max": 2}))
    waiting = jobs.wait_for("the pair queued with Kueue's reason", lambda: (
        c if "insufficient" in (c := condition(jobs.status("pair"), "Suspended")).get(
            "message", "") else None), timeout=60)
    assert waiting["reason"] == "Queued"
    time.sleep(5)
    assert not jobs.pods("cogwork.dev/job-name=pair")  # no stuck half of a gang

    jobs.cluster.kubectl("delete", "trainjob", "pair", "-n", jobs.namespace)
    jobs.apply(queued_job("elastic", queue, nodes={"min": 1, "max": 3}))
    done = jobs.wait_phase("elastic", "Succeeded", "Failed", timeout=300)
    assert done["phase"] == "Succeeded", done.get("conditions")
    assignment = workload(jobs, "elastic")["status"]["admission"]["podSetAssignments"]
    assert {a["name"]: a["count"] for a in assignment} == {"rendezvous": 1, "workers": 1}
    assert done["nodesText"].endswith("/1"), done["nodesText"]  # 1 node wanted, not nodes.max 3
    logs = jobs.cluster.pod_log(jobs.namespace, "elastic-node-1", "trainer")
    assert logs == "", "a second worker ran beyond what Kueue admitted"


def test_a_higher_priority_job_preempts_and_the_evicted_one_resumes(
        jobs: Jobs, kueue: Kueue, make_queue: Callable[..., str]) -> None:
    for name, value in (("low", 100), ("high", 1000)):
        jobs.cluster.kubectl("apply", "-f", "-", input=(
            '{"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "WorkloadPriorityClass", '
            f'"metadata": {{"name": "cogwork-{name}"}}, "value": {value}}}'))
    queue = make_queue(cpu="1.2", memory="2Gi",
                       preemption={"withinClusterQueue": "LowerPriority"})
    low = queued_job("low", queue, task={**TASK, "epochs": 30})
    low["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] = "cogwork-low"
    jobs.apply(low)
    saved = jobs.wait_for("a checkpoint", lambda: jobs.status("low").get("lastCheckpointStep"),
                          timeout=300)
    high = queued_job("high", queue)
    high["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] = "cogwork-high"
    jobs.apply(high)
    evicted = jobs.wait_for("low evicted", lambda: (
        c if (c := condition(jobs.status("low"), "Evicted")).get("status") == "True" else None),
        timeout=120)
    assert "Preempted" in evicted["message"], evicted
    checkpointed = int(jobs.status("low").get("lastCheckpointStep") or saved)
    assert workload(jobs, "high")["spec"]["priority"] == 1000
    done = jobs.wait_phase("high", "Succeeded", "Failed", timeout=300)
    assert done["phase"] == "Succeeded"
    resumed = jobs.wait_for("low resumed", lambda: (
        jobs.status("low").get("progress") or {}).get("resumedFromStep"), timeout=300)
    assert int(resumed) >= checkpointed
    final = jobs.wait_phase("low", "Succeeded", "Failed", timeout=600)
    assert final["phase"] == "Succeeded", final.get("conditions")
    readmitted = condition(final, "Evicted")
    assert readmitted["status"] == "False" and "Preempted" in readmitted["message"]


def test_a_search_in_a_queue_for_two_runs_two_trials_at_a_time(
        jobs: Jobs, make_queue: Callable[..., str]) -> None:
    queue = make_queue(cpu="2.2", memory="3.2Gi")
    template = {"task": TASK, "data": {"dataset": "digits"}, "nodes": ONE_NODE,
                "resources": WORKER}
    jobs.apply({"apiVersion": "cogwork.dev/v1alpha1", "kind": "TuneJob",
                "metadata": {"name": "search", "labels": {QUEUE_LABEL: queue}},
                "spec": {"parameters": [{"name": "lr", "field": "task.learningRate",
                                         "logUniform": {"min": "0.01", "max": "0.1"}}],
                         "search": {"algorithm": "random", "seed": 5},
                         "budget": {"maxTrials": 4, "parallelTrials": 4},
                         "trialTemplate": template}})
    most = 0
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        status = jobs.get("search", "tunejob").get("status") or {}
        trials = jobs.cluster.kubectl_json("get", "trainjobs", "-n", jobs.namespace, "-l",
                                           "cogwork.dev/tunejob=search")["items"]
        for trial in trials:
            assert trial["metadata"]["labels"][QUEUE_LABEL] == queue
        running = {p["metadata"]["labels"]["cogwork.dev/job-name"]
                   for p in jobs.pods("cogwork.dev/role=worker")
                   if p["status"].get("phase") in ("Pending", "Running")
                   and not p["metadata"].get("deletionTimestamp")}
        most = max(most, len(running))
        if status.get("phase") in ("Succeeded", "Failed"):
            break
        time.sleep(1)
    assert status.get("phase") == "Succeeded", status
    counts = status["trials"]
    assert counts["created"] == 4 and counts["failed"] == 0, counts
    assert counts["completed"] + counts["pruned"] == 4, counts
    assert 1 <= most <= 2, most


def test_a_labeljob_and_the_trainjob_it_labels_with_run_through_the_queue(
        jobs: Jobs, make_queue: Callable[..., str]) -> None:
    queue = make_queue(cpu="2.2", memory="3.2Gi")
    jobs.apply(queued_job("seed", queue))
    jobs.apply({"apiVersion": "cogwork.dev/v1alpha1", "kind": "LabelJob",
                "metadata": {"name": "labels", "labels": {QUEUE_LABEL: queue}},
                "spec": {"model": {"fromTrainJob": "seed"}, "pool": {"dataset": "digits"},
                         "seed": {"count": 300},
                         "inference": {"replicas": 2, "cpu": "1", "memory": "1Gi"},
                         "autoAccept": {"targetPrecision": "0.95",
                                        "validation": {"humanBudget": 400}}}})
    done = jobs.wait_for("the LabelJob to finish", lambda: (
        s if (s := jobs.get("labels", "labeljob").get("status") or {}).get("phase")
        in ("Succeeded", "Failed") else None), timeout=600)
    assert done["phase"] == "Succeeded", done.get("conditions")
    found = json.loads(jobs.cluster.kubectl(
        "get", "workloads.v1beta2.kueue.x-k8s.io", "labeljob-labels", "-n", jobs.namespace,
        "-o", "json").stdout)
    assert [(p["name"], p["count"]) for p in found["spec"]["podSets"]] == [("steps", 2)]
    assert condition(found["status"], "Finished")["status"] == "True"
    admitted = stamp(condition(found["status"], "Admitted")["lastTransitionTime"])
    pods = jobs.pods("cogwork.dev/job-name=labels")
    assert pods and all(stamp(p["metadata"]["creationTimestamp"]) >= admitted for p in pods)
