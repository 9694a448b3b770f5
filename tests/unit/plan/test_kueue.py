"""plan/kueue.py and plan/trainjob_queue.py: a TrainJob's Workload, and the job as Kueue's
admission, waiting and eviction make it run (no cluster; the e2e suite runs a real Kueue)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cogwork.api.labeljob import LabelJob
from cogwork.api.trainjob import TrainJob
from cogwork.plan import kueue, labeljob_queue, labeljob_reconcile, trainjob_queue
from cogwork.plan.labeljob_refs import ModelResolution
from cogwork.plan.labeljob_steps import ModelRef
from cogwork.plan.settings import RenderSettings
from cogwork.plan.trainjob_observe import PodObservation
from cogwork.plan.trainjob_reconcile import reconcile

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
SETTINGS = RenderSettings()


def job(nodes: dict[str, int] | None = None, status: dict[str, Any] | None = None) -> TrainJob:
    return TrainJob.model_validate({
        "apiVersion": "cogwork.dev/v1alpha1", "kind": "TrainJob",
        "metadata": {"name": "tj", "namespace": "ns", "uid": "u-1", "generation": 1,
                     "labels": {kueue.QUEUE_LABEL: "team"}},
        "spec": {"task": {"name": "image-classification"}, "data": {"dataset": "digits"},
                 "nodes": nodes or {"min": 1, "max": 3},
                 "resources": {"cpu": "2", "memory": "4Gi", "gpu": 1}},
        "status": status or {}})


def admitted(workers: int = 3, **conditions: str) -> dict[str, Any]:
    conds = {"QuotaReserved": "True", "Admitted": "True", **conditions}
    return {"metadata": {"name": "trainjob-tj", "generation": 1, "resourceVersion": "7"},
            "spec": {"active": True},
            "status": {"conditions": [{"type": t, "status": s, "reason": t,
                                       "message": f"{t} message",
                                       "lastTransitionTime": "2026-12-03T11:00:00Z"}
                                      for t, s in conds.items()],
                       "admission": {"clusterQueue": "cq", "podSetAssignments": [
                           {"name": "rendezvous", "count": 1, "flavors": {"cpu": "cpu-only"}},
                           {"name": "workers", "count": workers,
                            "flavors": {"cpu": "gpu-a", "nvidia.com/gpu": "gpu-a"}}]}}}


def test_the_workload_is_the_whole_gang_with_partial_admission_for_an_elastic_job() -> None:
    body = kueue.workload("TrainJob", "tj", "u-1", "team",
                          trainjob_queue.pod_sets(job(), SETTINGS), "high", 1000)
    assert body["metadata"]["name"] == "trainjob-tj"
    assert body["metadata"]["labels"][kueue.JOB_UID_LABEL] == "u-1"
    spec = body["spec"]
    assert (spec["queueName"], spec["active"], spec["priority"]) == ("team", True, 1000)
    assert spec["priorityClassRef"] == {"group": "kueue.x-k8s.io",
                                        "kind": "WorkloadPriorityClass", "name": "high"}
    rdzv, workers = spec["podSets"]
    assert (rdzv["name"], rdzv["count"], "minCount" in rdzv) == ("rendezvous", 1, False)
    assert (workers["name"], workers["count"], workers["minCount"]) == ("workers", 3, 1)
    limits = workers["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"  # Kueue counts what the pods really request
    fixed = kueue.workload("TrainJob", "tj", "u-1", "team",
                           trainjob_queue.pod_sets(job({"min": 2, "max": 2}), SETTINGS))
    assert "minCount" not in fixed["spec"]["podSets"][1]  # all or nothing
    assert "priorityClassRef" not in fixed["spec"]


def test_waiting_holds_the_job_suspended_and_creates_no_pod() -> None:
    pending = {"status": {"conditions": [
        {"type": "QuotaReserved", "status": "False", "reason": "Pending",
         "message": "couldn't assign flavors to pod set workers: insufficient quota"}]}}
    for workload in (None, pending):
        admission = kueue.read_admission("team", workload)
        assert not admission.admitted and admission.waiting is not None
        assert admission.waiting.startswith("queued in LocalQueue team")
        hold = kueue.hold(admission)
        assert hold is not None
        actions = reconcile(job(), [], NOW, SETTINGS, hold=hold)
        assert actions.create == []
        suspended = next(c for c in actions.status["conditions"] if c["type"] == "Suspended")
        assert (suspended["status"], suspended["reason"]) == ("True", "Queued")
        assert suspended["message"] == admission.waiting
    assert "insufficient quota" in (kueue.read_admission("team", pending).waiting or "")


def test_admitted_runs_with_the_admitted_count_on_the_flavors_nodes() -> None:
    admission = kueue.read_admission("team", admitted(workers=2))
    assert admission.admitted and kueue.hold(admission) is None
    assert admission.counts == {"rendezvous": 1, "workers": 2}
    assert admission.flavors["workers"] == ["gpu-a"]
    selector, tolerations = kueue.flavor_placement([{"spec": {
        "nodeLabels": {"pool": "a100"},
        "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]}}])
    running = trainjob_queue.admitted_job(job(), admission, selector, tolerations)
    assert (running.spec.nodes.min, running.spec.nodes.max) == (1, 2)
    actions = reconcile(running, [], NOW, SETTINGS)
    workers = [o for o in actions.create if o["kind"] == "Pod"
               and o["metadata"]["name"].startswith("tj-node-")]
    assert [w["metadata"]["name"] for w in workers] == ["tj-node-0", "tj-node-1"]
    assert workers[0]["spec"]["nodeSelector"] == {"pool": "a100"}
    assert {"key": "gpu", "operator": "Exists", "effect": "NoSchedule"} in \
        workers[0]["spec"]["tolerations"]
    assert job().spec.nodes.max == 3  # the stored spec is the user's


def test_eviction_stops_the_pods_then_hands_the_quota_back() -> None:
    workload = admitted(Evicted="True")
    workload["status"]["conditions"][-1].update(
        reason="Preempted", message="Preempted to accommodate a workload (UID: x)")
    admission = kueue.read_admission("team", workload)
    assert admission.evicted is not None and "Preempted to accommodate" in admission.evicted
    hold = kueue.hold(admission)
    assert hold is not None and hold.evicted
    pods = [PodObservation(name="tj-rdzv", role="rdzv", phase="Running",
                           created="2026-12-03T11:00:00Z"),
            PodObservation(name="tj-node-0", role="worker", index=0, phase="Running",
                           created="2026-12-03T11:00:00Z")]
    actions = reconcile(job(status={"activeNodes": [0]}), pods, NOW, SETTINGS, hold=hold)
    assert sorted(actions.delete_pods) == ["tj-node-0", "tj-rdzv"]
    evicted = next(c for c in actions.status["conditions"] if c["type"] == "Evicted")
    assert evicted["status"] == "True" and "Preempted" in evicted["message"]
    assert any(e.reason == "Evicted" and e.type == "Warning" for e in actions.events)
    assert kueue.requeue_status(workload, pods_gone=False, now=NOW) is None
    patch = kueue.requeue_status(workload, pods_gone=True, now=NOW)
    assert patch is not None and patch["status"]["admission"] is None
    assert patch["metadata"]["resourceVersion"] == "7"  # never over a newer Kueue write
    conds = {c["type"]: c for c in patch["status"]["conditions"]}
    assert (conds["QuotaReserved"]["status"], conds["Requeued"]["status"],
            conds["Requeued"]["reason"]) == ("False", "True", "Preempted")
    assert conds["Evicted"]["status"] == "True"  # Kueue's own, kept


def test_readmitted_says_what_evicted_it_and_finished_frees_the_quota() -> None:
    evicted = job(status={"conditions": [
        {"type": "Evicted", "status": "True", "reason": "Evicted", "message": "Preempted x",
         "lastTransitionTime": "2026-12-03T11:00:00Z"},
        {"type": "Suspended", "status": "True", "reason": "Evicted", "message": "Preempted x",
         "lastTransitionTime": "2026-12-03T11:00:00Z"}]})
    actions = reconcile(evicted, [], NOW, SETTINGS)
    again = next(c for c in actions.status["conditions"] if c["type"] == "Evicted")
    assert again["status"] == "False" and again["message"] == "running again after: Preempted x"
    done = kueue.finished_status(admitted(), True, "trained", NOW)
    assert done is not None
    finished = next(c for c in done["status"]["conditions"] if c["type"] == "Finished")
    assert (finished["status"], finished["reason"]) == ("True", "Succeeded")
    assert kueue.finished_status(admitted(Finished="True"), True, "trained", NOW) is None
    assert kueue.active_differs(admitted(), suspended=True)
    assert not kueue.active_differs(admitted(), suspended=False)


def test_trials_queue_where_their_search_does() -> None:
    labels = {kueue.QUEUE_LABEL: "team", kueue.PRIORITY_LABEL: "low", "app": "x"}
    assert kueue.inherited_labels(labels) == {kueue.QUEUE_LABEL: "team",
                                              kueue.PRIORITY_LABEL: "low"}
    assert kueue.queue_name({"app": "x"}) is None


def test_a_labeljob_queues_its_score_shards_and_runs_nothing_until_admitted() -> None:
    job = LabelJob.model_validate({
        "apiVersion": "cogwork.dev/v1alpha1", "kind": "LabelJob",
        "metadata": {"name": "lj", "namespace": "ns", "uid": "u-2", "generation": 1,
                     "labels": {kueue.QUEUE_LABEL: "team"}},
        "spec": {"model": {"path": "m.pt", "claimName": "models"}, "pool": {"dataset": "digits"},
                 "seed": {"count": 300}, "inference": {"replicas": 3, "cpu": "2"},
                 "autoAccept": {"targetPrecision": "0.95",
                                "validation": {"humanBudget": 400}}}})
    model = ModelRef("/cogwork/model/m.pt", "m", "models")
    (steps,) = labeljob_queue.pod_sets(job, model, SETTINGS)
    assert (steps.name, steps.count) == ("steps", 3)
    assert steps.template["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "2"
    hold = kueue.hold(kueue.read_admission("team", None))
    actions = labeljob_reconcile.reconcile(job, [], ModelResolution(model), NOW, SETTINGS,
                                           hold=hold)
    assert actions.create == [] and actions.status["phase"] == "Suspended"
    running = labeljob_reconcile.reconcile(job, [], ModelResolution(model), NOW, SETTINGS)
    assert [o["metadata"]["name"] for o in running.create if o["kind"] == "Pod"] == \
        ["lj-score-0", "lj-score-1", "lj-score-2"]
