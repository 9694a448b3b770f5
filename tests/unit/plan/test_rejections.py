"""A child the apiserver refused: the Created condition, kstatus Stalled, the spec field named,
and a retry that backs off with the time it has been refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cogwork.api.common import Condition, rfc3339
from cogwork.api.trainjob import TrainJob
from cogwork.plan import rejections
from cogwork.plan.lifecycle import with_kstatus
from cogwork.plan.rejections import Rejection
from cogwork.plan.settings import RenderSettings
from cogwork.plan.trainjob_observe import PodObservation
from cogwork.plan.trainjob_reconcile import reconcile

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
QUOTA = Rejection("Pod", "tj-node-1", 403,
                  'pods "tj-node-1" is forbidden: exceeded quota: compute, requested: '
                  "limits.cpu=1, used: limits.cpu=1, limited: limits.cpu=1")
LABEL = Rejection("Pod", "tj-node-0", 422,
                  'Pod "tj-node-0" is invalid: metadata.labels: Invalid value: "a b"',
                  ("metadata.labels",))


def running_status() -> dict[str, Any]:
    conditions = [Condition(type="Running", status="True", reason="Running",
                            last_transition_time=rfc3339(NOW))]
    return {"phase": "Running",
            "conditions": [c.model_dump(by_alias=True, exclude_none=True)
                           for c in with_kstatus(conditions, "Running", 1, NOW)]}


def by_type(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def as_conditions(status: dict[str, Any]) -> list[Condition]:
    return [Condition.model_validate(c) for c in status["conditions"]]


def test_a_refusal_names_the_child_quotes_the_apiserver_and_names_the_spec_field() -> None:
    message = rejections.describe("TrainJob", QUOTA)
    assert message.startswith("Pod tj-node-1 refused by the apiserver (403): ")
    assert "exceeded quota: compute" in message
    assert message.endswith("(check spec.resources)")
    assert rejections.describe("TrainJob", LABEL).endswith("(check spec.podTemplate.labels)")


def test_spec_fields_per_kind_and_admission_plugin() -> None:
    def field(job_kind: str, kind: str, message: str, *fields: str) -> str | None:
        return rejections.spec_field(job_kind, Rejection(kind, "x", 403, message, fields))

    assert field("TrainJob", "Pod", 'no PriorityClass with name "gold" was found') \
        == "spec.podTemplate.priorityClassName"
    assert field("TrainJob", "Pod", 'error looking up service account ns/sa: serviceaccount '
                 '"sa" not found') == "spec.podTemplate.serviceAccountName"
    assert field("TrainJob", "Pod", "maximum cpu usage per Container is 200m, but limit is 1") \
        == "spec.resources"
    assert field("TrainJob", "Pod", "invalid", "spec.tolerations[0].operator") \
        == "spec.podTemplate.tolerations"
    assert field("TrainJob", "PersistentVolumeClaim", "exceeded quota: storage") \
        == "spec.checkpoint.size"
    assert field("LabelJob", "Pod", "exceeded quota: compute") == "spec.inference"
    assert field("TuneJob", "TrainJob", "invalid", "spec.task.learningRate") \
        == "spec.trialTemplate.task.learningRate"
    assert field("TrainJob", "Service", "something else") is None


def test_a_refused_create_sets_created_false_and_stalls_the_job() -> None:
    status = running_status()
    out = rejections.created_status(status, as_conditions(status), QUOTA, "TrainJob", 1, NOW)
    conditions = by_type(out)
    assert conditions["Created"]["status"] == "False"
    assert conditions["Created"]["reason"] == "ChildRejected"
    assert "exceeded quota" in conditions["Created"]["message"]
    # kstatus: Stalled (Argo CD Degraded, `kubectl wait` stops), not Reconciling.
    assert conditions["Stalled"]["status"] == "True"
    assert conditions["Stalled"]["reason"] == "ChildRejected"
    assert conditions["Reconciling"]["status"] == "False"
    assert conditions["Ready"]["status"] == "False"
    assert out["phase"] == "Running"  # what runs keeps running


def test_the_same_refusal_again_changes_nothing_and_acceptance_clears_it() -> None:
    status = running_status()
    first = rejections.created_status(status, as_conditions(status), QUOTA, "TrainJob", 1, NOW)
    later = NOW + timedelta(seconds=40)
    again = rejections.created_status(first, as_conditions(first), QUOTA, "TrainJob", 1, later)
    assert again == first  # no status write, transition times kept
    assert not rejections.is_new(as_conditions(first), QUOTA, "TrainJob")
    assert rejections.is_new(as_conditions(first), LABEL, "TrainJob")
    accepted = rejections.created_status(first, as_conditions(first), None, "TrainJob", 1, later)
    conditions = by_type(accepted)
    assert conditions["Created"]["status"] == "True"
    assert conditions["Stalled"]["status"] == "False"
    assert conditions["Reconciling"]["status"] == "True"


def test_a_job_that_never_had_a_refusal_carries_no_created_condition() -> None:
    status = running_status()
    assert rejections.created_status(status, as_conditions(status), None, "TrainJob", 1,
                                     NOW) is status


def test_a_kinds_own_waiting_is_neither_cleared_nor_stalled() -> None:
    waiting = [Condition(type="Created", status="False", reason="WaitingForModel",
                         message="spec.model.fromTrainJob=digits", last_transition_time="x")]
    status = {"conditions": [c.model_dump(by_alias=True) for c in waiting]}
    assert rejections.created_status(status, waiting, None, "LabelJob", 1, NOW) is status
    kstatus = {c.type: c for c in with_kstatus(waiting, "Pending", 1, NOW)}
    assert kstatus["Stalled"].status == "False" and kstatus["Reconciling"].status == "True"


def test_a_pass_that_needs_to_make_nothing_clears_a_refusal_but_a_finished_job_keeps_it(
        ) -> None:
    """The pass that made the refused child may have lost its status write: the next one,
    with nothing left to create, must still say the refusal is over."""
    status = running_status()
    refused = rejections.created_status(status, as_conditions(status), QUOTA, "TrainJob", 1, NOW)
    later = rejections.created_status(refused, as_conditions(refused), None, "TrainJob", 1, NOW)
    assert by_type(later)["Created"]["status"] == "True"
    ended = {**refused, "phase": "Failed"}
    assert rejections.created_status(ended, as_conditions(ended), None, "TrainJob", 1,
                                     NOW) is ended


def test_a_finished_job_is_not_stalled_by_an_old_refusal() -> None:
    conditions = [Condition(type="Succeeded", status="True", reason="Done",
                            last_transition_time=rfc3339(NOW)),
                  Condition(type="Created", status="False", reason="ChildRejected",
                            message="old", last_transition_time=rfc3339(NOW))]
    kstatus = {c.type: c for c in with_kstatus(conditions, "Succeeded", 1, NOW)}
    assert kstatus["Ready"].status == "True" and kstatus["Stalled"].status == "False"


def test_retries_back_off_with_the_time_refused_and_are_capped() -> None:
    status = running_status()
    refused = as_conditions(
        rejections.created_status(status, as_conditions(status), QUOTA, "TrainJob", 1, NOW))
    delays = [rejections.retry_after(refused, NOW + timedelta(seconds=s))
              for s in (0, 10, 20, 40, 3600)]
    assert delays == [5.0, 10.0, 20.0, 40.0, 300.0]
    # Attempts in the first hour: a handful, not one every few seconds.
    attempts, t = 0, 0.0
    while t < 3600:
        t += rejections.retry_after(refused, NOW + timedelta(seconds=t))
        attempts += 1
    assert attempts <= 20


def test_a_refused_worker_is_not_counted_active_so_retrying_it_is_no_restart() -> None:
    """Counted active, a worker the apiserver refused would read as lost on the next pass and
    spend the job's backoffLimit on a quota (seen on the real apiserver)."""
    settings = RenderSettings(report_base_url="https://10.0.0.1:8443")
    body: dict[str, Any] = {
        "metadata": {"name": "quota", "namespace": "ml", "uid": "u", "generation": 1},
        "spec": {"task": {"name": "image-classification"}, "data": {"dataset": "digits"},
                 "nodes": {"min": 2, "max": 2}}}
    first = reconcile(TrainJob.model_validate(body), [], NOW, settings)
    assert "activeNodes" in first.unconfirmed
    refused = Rejection("Pod", "quota-node-1", 403, "exceeded quota: compute")
    written = rejections.created_status(first.status.wire(), [], refused, "TrainJob", 1, NOW,
                                        first.unconfirmed)
    assert "activeNodes" not in written and by_type(written)["Created"]["status"] == "False"
    pods = [PodObservation("quota-rdzv", "rdzv", phase="Running"),
            PodObservation("quota-node-0", "worker", 0, phase="Running")]
    for attempt in range(6):  # retry after retry: never a restart
        job = TrainJob.model_validate({**body, "status": written})
        again = reconcile(job, pods, NOW + timedelta(seconds=10 * (attempt + 1)), settings)
        assert [c["metadata"]["name"] for c in again.create if c["kind"] == "Pod"] \
            == ["quota-node-1"]
        assert again.status["restarts"] == 0
        written = rejections.created_status(again.status.wire(), as_conditions(written),
                                            refused, "TrainJob", 1, NOW, again.unconfirmed)
    assert written["phase"] != "Failed"
