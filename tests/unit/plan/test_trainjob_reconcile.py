"""The TrainJob state machine, pass by pass, with no cluster: observed pods in, actions out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cogwork.api.trainjob import TrainJob
from cogwork.plan.settings import RenderSettings
from cogwork.plan.trainjob_observe import PodObservation
from cogwork.plan.trainjob_reconcile import Actions, reconcile
from cogwork_sdk.contract import EXIT_NON_FINITE_LOSS

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
SETTINGS = RenderSettings(report_base_url="https://10.0.0.1:8443")


def job(status: dict[str, Any] | None = None, **spec: Any) -> TrainJob:
    body: dict[str, Any] = {
        "apiVersion": "cogwork.dev/v1alpha1", "kind": "TrainJob",
        "metadata": {"name": "digits", "namespace": "ml", "uid": "u-1", "generation": 1,
                     "creationTimestamp": "2026-11-23T11:59:00Z"},
        "spec": {"task": {"name": "image-classification"}, "data": {"dataset": "digits"},
                 "nodes": {"min": 1, "max": 3, "count": 2}, **spec},
        "status": status or {},
    }
    return TrainJob.model_validate(body)


def pod(role: str, index: int | None = None, phase: str = "Running", **kw: Any) -> PodObservation:
    name = "digits-rdzv" if role == "rdzv" else f"digits-node-{index}"
    return PodObservation(name=name, role=role, index=index, phase=phase,
                          created=kw.pop("created", "2026-11-23T11:59:10Z"), **kw)


def running_pods(n: int = 2) -> list[PodObservation]:
    return [pod("rdzv"), *[pod("worker", i) for i in range(n)]]


def step(j: TrainJob, pods: list[PodObservation], now: datetime = NOW) -> Actions:
    return reconcile(j, pods, now, SETTINGS)


def advance(j: TrainJob, actions: Actions) -> TrainJob:
    """The job as the next pass sees it: status patch applied."""
    body = j.model_dump(mode="json", by_alias=True, exclude_none=True)
    status = {**body.get("status", {}), **actions.status}
    body["status"] = {k: v for k, v in status.items() if v is not None}
    return TrainJob.model_validate(body)


def cond(actions: Actions, kind: str) -> dict[str, Any]:
    return next((c for c in actions.status["conditions"] if c["type"] == kind), {})


def names(objects: list[dict[str, Any]]) -> list[str]:
    return [f"{o['kind']}/{o['metadata']['name']}" for o in objects]


def test_new_job_creates_service_claim_store_and_workers() -> None:
    actions = step(job(), [])
    assert names(actions.create) == [
        "Service/digits", "PersistentVolumeClaim/digits-ckpt",
        "Pod/digits-rdzv", "Pod/digits-node-0", "Pod/digits-node-1"]
    assert cond(actions, "Created")["status"] == "True"
    assert actions.status["phase"] == "Pending"
    assert actions.status["activeNodes"] == [0, 1]
    assert actions.status["restarts"] == 0


def test_running_when_min_nodes_and_store_run() -> None:
    actions = step(job(), running_pods())
    assert actions.create == []
    assert cond(actions, "Running")["status"] == "True"
    assert actions.status["phase"] == "Running"
    assert actions.status["nodesText"] == "2/2"
    assert actions.status["selector"] == "cogwork.dev/job-name=digits,cogwork.dev/role=worker"


def test_signal_killed_worker_is_replaced_and_counted() -> None:
    j = job({"activeNodes": [0, 1]})
    pods = [pod("rdzv"), pod("worker", 0), pod("worker", 1, "Failed", exit_code=137,
                                                 reason="OOMKilled")]
    actions = step(j, pods)
    assert actions.delete_pods == ["digits-node-1"]
    assert actions.status["restarts"] == 1
    assert actions.status["lastFailure"]["exitCode"] == 137
    assert cond(actions, "Restarting")["status"] == "True"
    # Next pass: the pod is gone; it is recreated without counting the same failure twice.
    again = step(advance(j, actions), [pod("rdzv"), pod("worker", 0)])
    assert names(again.create)[-1] == "Pod/digits-node-1"
    assert again.status["restarts"] == 1


def test_failed_pod_still_terminating_is_not_counted_twice() -> None:
    j = job({"activeNodes": [0]}, nodes={"min": 1, "max": 1},
            failurePolicy={"backoffLimit": 1})
    failed = pod("worker", 0, "Failed", exit_code=137)
    first = step(j, [pod("rdzv"), failed])
    assert first.status["restarts"] == 1 and first.delete_pods == ["digits-node-0"]
    # The next pass still sees the failed pod while the kubelet finishes deleting it.
    terminating = pod("worker", 0, "Failed", exit_code=137, deleting=True)
    for seen in (j, advance(j, first)):  # a stale view of the job as well as a fresh one
        again = step(seen, [pod("rdzv"), terminating])
        assert again.status["phase"] != "Failed"
        assert again.status["restarts"] == (0 if seen is j else 1)


def test_pod_deleted_under_running_job_counts_one_restart() -> None:
    j = job({"activeNodes": [0, 1]})
    first = step(j, [pod("rdzv"), pod("worker", 0), pod("worker", 1, deleting=True)])
    assert first.status["restarts"] == 1
    second = step(advance(j, first), [pod("rdzv"), pod("worker", 0)])
    assert second.status["restarts"] == 1
    assert "Pod/digits-node-1" in names(second.create)


def test_vanished_worker_is_recreated_and_counted() -> None:
    actions = step(job({"activeNodes": [0, 1]}), [pod("rdzv"), pod("worker", 0)])
    assert "Pod/digits-node-1" in names(actions.create)
    assert actions.status["restarts"] == 1
    assert actions.status["lastFailure"]["reason"] == "PodLost"


def test_program_error_fails_job_and_stops_the_rest() -> None:
    pods = [pod("rdzv"), pod("worker", 0), pod("worker", 1, "Failed", exit_code=2,
                                                 reason="Error")]
    actions = step(job({"activeNodes": [0, 1]}), pods)
    failed = cond(actions, "Failed")
    assert failed["reason"] == "ExitCode2"
    assert "exited with code 2" in failed["message"]
    assert sorted(actions.delete_pods) == ["digits-node-0", "digits-rdzv"]
    assert actions.status["phase"] == "Failed"


def test_a_missing_command_fails_the_job_saying_which_and_keeps_the_pod_for_its_logs() -> None:
    pods = [pod("rdzv"), pod("worker", 0, "Failed", exit_code=127, reason="Error",
                            message="command not found: trian.sh (spec.script.command)")]
    actions = step(job({"activeNodes": [0]}), pods)
    failed = cond(actions, "Failed")
    assert failed["reason"] == "ExitCode127"
    assert "exited with code 127 (Error): command not found: trian.sh" in failed["message"]
    assert "kubectl logs digits-node-0" in failed["message"]
    assert actions.delete_pods == ["digits-rdzv"]  # the failed worker stays: its logs
    assert actions.create == []
    # Finished: later passes keep it too and create nothing, until the TTL.
    done = advance(job({"activeNodes": [0]}), actions)
    later = step(done, [pods[1]], NOW + timedelta(minutes=5))
    assert later.delete_pods == [] and later.create == []


def test_diverged_worker_fails_the_job_with_its_own_reason_and_nothing_is_replaced() -> None:
    message = "non-finite loss nan at step 3 (epoch 0)"
    pods = [pod("rdzv"), pod("worker", 0, "Failed", exit_code=EXIT_NON_FINITE_LOSS,
                             reason="Error", message=message), pod("worker", 1)]
    # Restarts left and a generous backoffLimit: a diverged run is still not retried.
    actions = step(job({"activeNodes": [0, 1]}, failurePolicy={"backoffLimit": 10}), pods)
    failed = cond(actions, "Failed")
    assert (failed["status"], failed["reason"]) == ("True", "NonFiniteLoss")
    assert "digits-node-0" in failed["message"] and message in failed["message"]
    assert actions.status["phase"] == "Failed"
    assert actions.create == []  # no replacement pod
    assert sorted(actions.delete_pods) == ["digits-node-1", "digits-rdzv"]
    assert actions.status["restarts"] == 0
    assert actions.status["lastFailure"]["reason"] == "NonFiniteLoss"
    assert actions.status["lastFailure"]["exitCode"] == EXIT_NON_FINITE_LOSS
    # The next pass sees a finished job: it stays Failed and creates nothing.
    later = step(advance(job({"activeNodes": [0, 1]}), actions), pods[:2])
    assert later.create == [] and later.delete_pods == ["digits-rdzv"]


def test_a_rule_for_the_divergence_code_still_decides() -> None:
    retry = {"rules": [{"action": "RestartJob", "onExitCodes": {
        "operator": "In", "values": [EXIT_NON_FINITE_LOSS]}}]}
    pods = [pod("rdzv"), pod("worker", 0, "Failed", exit_code=EXIT_NON_FINITE_LOSS),
            pod("worker", 1)]
    actions = step(job({"activeNodes": [0, 1]}, failurePolicy=retry), pods)
    assert actions.status["phase"] != "Failed" and actions.status["restarts"] == 1


def test_backoff_limit_exhausted() -> None:
    j = job({"activeNodes": [0, 1], "restarts": 3}, failurePolicy={"backoffLimit": 3})
    pods = [pod("rdzv"), pod("worker", 0), pod("worker", 1, "Failed", exit_code=137)]
    actions = step(j, pods)
    assert cond(actions, "Failed")["reason"] == "BackoffLimitExceeded"


def test_success_is_sticky() -> None:
    done = step(job({"activeNodes": [0, 1]}),
                [pod("rdzv"), pod("worker", 0, "Succeeded"), pod("worker", 1, "Succeeded")])
    assert cond(done, "Succeeded")["status"] == "True"
    assert done.delete_pods == ["digits-rdzv"]
    later = step(advance(job({"activeNodes": [0, 1]}), done), [])
    assert later.create == []
    assert later.status["phase"] == "Succeeded"


def test_ttl_after_finished_deletes_the_job() -> None:
    j = job({"conditions": [{"type": "Succeeded", "status": "True", "reason": "Completed"}],
             "completionTime": "2026-11-23T11:00:00Z"}, ttlSecondsAfterFinished=600)
    assert step(j, []).delete_job
    assert not step(j, [], now=datetime(2026, 11, 23, 11, 5, tzinfo=UTC)).delete_job


def test_suspend_deletes_pods_and_resume_recreates() -> None:
    actions = step(job(suspend=True), running_pods())
    assert sorted(actions.delete_pods) == ["digits-node-0", "digits-node-1", "digits-rdzv"]
    assert actions.status["phase"] == "Suspended"
    resumed = step(advance(job(suspend=True), actions).model_copy(
        update={"spec": job().spec}), [])
    assert "Pod/digits-node-0" in names(resumed.create)
    assert cond(resumed, "Suspended")["status"] == "False"


def test_scale_down_asks_for_a_checkpoint_first() -> None:
    j = job({"activeNodes": [0, 1]}, nodes={"min": 1, "max": 3, "count": 1})
    ask = step(j, running_pods())
    assert ask.delete_pods == []
    token = ask.status["checkpointRequest"]["token"]
    # Status first: the ranks' acknowledgement is matched against it, so no pod is asked
    # before the request is recorded.
    assert ask.patches("Pod") == {}
    waiting = step(advance(j, ask), running_pods())
    assert waiting.delete_pods == []
    assert waiting.patches("Pod") == {
        "digits-node-0": {"metadata": {"annotations": {"cogwork.dev/checkpoint-request": token}}},
        "digits-node-1": {"metadata": {"annotations": {"cogwork.dev/checkpoint-request": token}}}}
    annotated = [pod("worker", i, annotations={"cogwork.dev/checkpoint-request": token})
                 for i in (0, 1)] + [pod("rdzv")]
    assert step(advance(j, ask), annotated).patches("Pod") == {}  # asked once
    acked = advance(j, ask)
    acked.status.checkpoint_request.acknowledged = True  # type: ignore[union-attr]
    remove = step(acked, running_pods())
    assert remove.delete_pods == ["digits-node-1"]
    # Not acknowledged within the timeout: scale down anyway rather than hang.
    late = step(advance(j, ask), running_pods(), now=NOW + timedelta(minutes=5))
    assert late.delete_pods == ["digits-node-1"]


def test_lost_rendezvous_store_restarts_the_group_once() -> None:
    j = job({"activeNodes": [0, 1]})
    first = step(j, [pod("rdzv", deleting=True), pod("worker", 0), pod("worker", 1)])
    assert sorted(first.delete_pods) == ["digits-node-0", "digits-node-1"]
    assert first.status["restarts"] == 1
    second = step(advance(j, first), [])
    assert "Pod/digits-rdzv" in names(second.create)
    assert second.status["restarts"] == 1


def test_workers_failing_after_store_replacement_are_not_blamed() -> None:
    j = job({"activeNodes": [0, 1], "restarts": 1})
    pods = [pod("rdzv", created="2026-11-23T11:59:30Z"),
            pod("worker", 0, "Failed", exit_code=1, created="2026-11-23T11:59:10Z")]
    actions = step(j, pods)
    assert "Failed" not in {c["type"] for c in actions.status["conditions"]
                            if c["status"] == "True"}
    assert actions.delete_pods == ["digits-node-0"]


def test_active_deadline() -> None:
    j = job({"startTime": "2026-11-23T11:00:00Z"}, activeDeadlineSeconds=60)
    actions = step(j, running_pods())
    assert cond(actions, "Failed")["reason"] == "DeadlineExceeded"


def test_stop_is_forwarded_to_pods() -> None:
    actions = step(job(stop=True), running_pods())
    assert actions.patches("Pod")["digits-node-0"] == {
        "metadata": {"annotations": {"cogwork.dev/stop": "true"}}}
