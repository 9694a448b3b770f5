"""The lifecycle every kind shares, one table over TrainJob, TuneJob and LabelJob: suspend and
resume, activeDeadlineSeconds, ttlSecondsAfterFinished, sticky terminal states, and a status
patch that the kind's typed status model reads back. Pure: planners in, actions out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cogwork.api.common import rfc3339
from cogwork.api.labeljob import LabelJob, LabelJobStatus
from cogwork.api.trainjob import TrainJob
from cogwork.api.trainjob_status import TrainJobStatus
from cogwork.api.tunejob import TuneJob, TuneJobStatus
from cogwork.plan import labeljob_reconcile as labeljob
from cogwork.plan import trainjob_reconcile
from cogwork.plan import tunejob_reconcile as tunejob
from cogwork.plan.labeljob_observe import LabelPod
from cogwork.plan.labeljob_refs import ModelResolution
from cogwork.plan.labeljob_steps import ModelRef
from cogwork.plan.lifecycle import Actions
from cogwork.plan.settings import RenderSettings
from cogwork.plan.trainjob_observe import PodObservation
from cogwork.plan.tunejob_observe import TrialObservation
from pydantic import BaseModel

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
SETTINGS = RenderSettings(report_base_url="https://10.0.0.1:8443")
META = {"namespace": "ml", "uid": "u-1", "generation": 1,
        "creationTimestamp": "2026-12-02T11:00:00Z"}


@dataclass(frozen=True)
class Kind:
    """How to build a job of one kind and run one pass on it with a running child."""

    name: str
    build: Callable[[dict[str, Any], dict[str, Any]], Any]  # (spec overrides, status) -> job
    one_pass: Callable[[Any, bool], Actions]  # (job, with a running child) -> actions
    status_model: type[BaseModel]
    # Whether the actions stop (finish, deadline) or suspend the running child.
    stopped: Callable[[Actions], bool]
    suspended: Callable[[Actions], bool]


def _trainjob(spec: dict[str, Any], status: dict[str, Any]) -> TrainJob:
    return TrainJob.model_validate({
        "metadata": {"name": "digits", **META},
        "spec": {"task": {"name": "image-classification"}, "data": {"dataset": "digits"},
                 "nodes": {"min": 1, "max": 2, "count": 1}, **spec},
        "status": status})


def _trainjob_pass(job: TrainJob, running: bool) -> Actions:
    pods = [PodObservation("digits-rdzv", role="rdzv", phase="Running"),
            PodObservation("digits-node-0", role="worker", index=0, phase="Running")]
    return trainjob_reconcile.reconcile(job, pods if running else [], NOW, SETTINGS)


def _tunejob(spec: dict[str, Any], status: dict[str, Any]) -> TuneJob:
    return TuneJob.model_validate({
        "metadata": {"name": "search", **META},
        "spec": {"parameters": [{"name": "lr", "field": "task.learningRate",
                                 "logUniform": {"min": "1e-3", "max": "0.5"}}],
                 "budget": {"maxTrials": 4, "parallelTrials": 1},
                 "trialTemplate": {"task": {"name": "image-classification"},
                                   "data": {"dataset": "digits"}}, **spec},
        "status": status})


def _tunejob_pass(job: TuneJob, running: bool) -> Actions:
    trials = [TrialObservation(name="search-t0", index=0, state="RUNNING",
                               params={"lr": 0.01})] if running else []
    return tunejob.reconcile(job, trials, tunejob.EngineDecision(), NOW)


def _labeljob(spec: dict[str, Any], status: dict[str, Any]) -> LabelJob:
    return LabelJob.model_validate({
        "metadata": {"name": "lj", **META},
        "spec": {"model": {"fromTrainJob": "digits"}, "pool": {"dataset": "digits"},
                 "inference": {"replicas": 1}, **spec},
        "status": status})


def _labeljob_pass(job: LabelJob, running: bool) -> Actions:
    model = ModelResolution(ModelRef("/cogwork/model/model.pt", "digits-g1", "digits-ckpt"))
    pods = [LabelPod("lj-score-0", "Running")] if running else []
    return labeljob.reconcile(job, pods, model, NOW, SETTINGS)


def _trial_patch(actions: Actions, field: str) -> bool:
    return actions.patches("TrainJob").get("search-t0", {}).get("spec", {}).get(field) is True


KINDS = [
    Kind("TrainJob", _trainjob, _trainjob_pass, TrainJobStatus,
         stopped=lambda a: set(a.delete_pods) == {"digits-rdzv", "digits-node-0"},
         suspended=lambda a: set(a.delete_pods) == {"digits-rdzv", "digits-node-0"}),
    Kind("TuneJob", _tunejob, _tunejob_pass, TuneJobStatus,
         stopped=lambda a: _trial_patch(a, "stop"),
         suspended=lambda a: _trial_patch(a, "suspend")),
    Kind("LabelJob", _labeljob, _labeljob_pass, LabelJobStatus,
         stopped=lambda a: a.delete_pods == ["lj-score-0"],
         suspended=lambda a: a.delete_pods == ["lj-score-0"]),
]
each_kind = pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])


def condition(actions: Actions, kind: str) -> dict[str, Any]:
    return next((c for c in actions.status["conditions"] if c["type"] == kind), {})


def true(kind: str, reason: str = "Set") -> dict[str, Any]:
    return {"type": kind, "status": "True", "reason": reason, "lastTransitionTime": rfc3339(NOW)}


def ago(seconds: int) -> str:
    return rfc3339(NOW - timedelta(seconds=seconds))


def events(actions: Actions) -> list[str]:
    return [e.reason for e in actions.events]


def read_back(kind: Kind, job: Any, actions: Actions) -> Any:
    """The job as the next pass reads it: the status patch merged in, through the typed model."""
    status = {**job.status.model_dump(mode="json", by_alias=True, exclude_none=True),
              **actions.status.wire()}
    return kind.build({**job.spec.model_dump(mode="json", by_alias=True, exclude_none=True)},
                      {k: v for k, v in status.items() if v is not None})


@each_kind
def test_suspend_stops_children_resets_start_time_and_says_so_once(kind: Kind) -> None:
    job = kind.build({"suspend": True}, {"startTime": ago(60), "conditions": [true("Running")]})
    actions = kind.one_pass(job, True)
    assert kind.suspended(actions)
    assert actions.status["phase"] == "Suspended"
    assert condition(actions, "Suspended")["status"] == "True"
    assert condition(actions, "Running")["status"] == "False"
    assert actions.status["startTime"] is None  # the deadline counts from the (re)start
    assert actions.create == []
    assert events(actions) == ["Suspended"]
    again = kind.one_pass(read_back(kind, job, actions), False)
    assert "Suspended" not in events(again)


@each_kind
def test_resume_sets_start_time_and_says_so(kind: Kind) -> None:
    job = kind.build({}, {"conditions": [true("Suspended", "Suspended")]})
    actions = kind.one_pass(job, False)
    assert condition(actions, "Suspended") | {"lastTransitionTime": None} == {
        "type": "Suspended", "status": "False", "reason": "Resumed", "message": "",
        "lastTransitionTime": None, "observedGeneration": 1}
    assert actions.status["startTime"] == rfc3339(NOW)
    assert "Resumed" in events(actions)
    assert actions.status["phase"] != "Suspended"


@each_kind
def test_active_deadline_fails_the_job_and_stops_its_children(kind: Kind) -> None:
    job = kind.build({"activeDeadlineSeconds": 60},
                     {"startTime": ago(61), "conditions": [true("Running")]})
    actions = kind.one_pass(job, True)
    assert condition(actions, "Failed")["reason"] == "DeadlineExceeded"
    assert "spec.activeDeadlineSeconds (60s)" in condition(actions, "Failed")["message"]
    assert actions.status["phase"] == "Failed"
    assert condition(actions, "Stalled")["status"] == "True"
    assert condition(actions, "Running")["status"] == "False"
    assert actions.status["completionTime"] == rfc3339(NOW)
    assert kind.stopped(actions) and actions.create == []
    assert "DeadlineExceeded" in events(actions)


@each_kind
def test_active_deadline_not_reached_keeps_the_job_going(kind: Kind) -> None:
    job = kind.build({"activeDeadlineSeconds": 60},
                     {"startTime": ago(30), "conditions": [true("Running")]})
    actions = kind.one_pass(job, True)
    assert condition(actions, "Failed") == {}
    assert actions.status["phase"] not in ("Failed", "Succeeded")


@each_kind
@pytest.mark.parametrize("ttl, deleted", [(60, True), (600, False)])
def test_ttl_deletes_the_finished_job_once_it_passed(kind: Kind, ttl: int,
                                                     deleted: bool) -> None:
    job = kind.build({"ttlSecondsAfterFinished": ttl},
                     {"completionTime": ago(120), "conditions": [true("Succeeded")]})
    actions = kind.one_pass(job, False)
    assert actions.delete_job is deleted
    assert actions.status["phase"] == "Succeeded"
    if not deleted:  # looked at again by the time it expires, never much later
        assert actions.requeue_after <= 60.0


@each_kind
@pytest.mark.parametrize("terminal", ["Succeeded", "Failed"])
def test_finished_is_sticky_over_suspend_and_missing_children(kind: Kind, terminal: str) -> None:
    for spec in ({}, {"suspend": True}):
        job = kind.build(spec, {"completionTime": ago(10), "conditions": [true(terminal)]})
        actions = kind.one_pass(job, False)
        assert actions.create == [], spec
        assert actions.status["phase"] == terminal
        assert condition(actions, "Suspended") == {}
        assert condition(actions, "Reconciling")["status"] == "False"
        assert actions.delete_job is False and actions.requeue_after == 300.0


@each_kind
def test_a_finished_job_stops_what_still_runs(kind: Kind) -> None:
    job = kind.build({}, {"completionTime": ago(10), "conditions": [true("Failed")]})
    assert kind.stopped(kind.one_pass(job, True))


@each_kind
def test_every_status_patch_reads_back_through_the_typed_model(kind: Kind) -> None:
    cases = [({}, {}), ({"suspend": True}, {}),
             ({"activeDeadlineSeconds": 1}, {"startTime": ago(5)}),
             ({}, {"completionTime": ago(10), "conditions": [true("Succeeded")]})]
    for spec, status in cases:
        job = kind.build(spec, status)
        actions = kind.one_pass(job, True)
        wire = {k: v for k, v in actions.status.wire().items() if v is not None}
        assert kind.status_model.model_validate(wire).model_dump(
            mode="json", by_alias=True, exclude_none=True).keys() >= wire.keys()
        assert actions.status["observedGeneration"] == 1
