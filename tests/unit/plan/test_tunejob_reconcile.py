"""The TuneJob planner and trial observation: pure, from TrainJob dicts to actions."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from cogwork.api.trainjob import TrainJob
from cogwork.plan.progress import ProgressReport, status_patch
from cogwork.plan.tunejob_observe import (
    ANNOTATION_PARAMS,
    ANNOTATION_PRUNED_AT,
    ANNOTATION_RUNGS,
    LABEL_TRIAL_INDEX,
    LABEL_TUNEJOB,
    apply_params,
    learning_curve,
    observe_trial,
)
from cogwork.plan.tunejob_reconcile import EngineDecision, Proposal, Prune, next_indices, reconcile
from tuning_helpers import LR, trial, tunejob

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
PARAMS = {"lr": 0.0123456789, "width": 48, "batch": "128"}


def trainjob_body(index: int, conditions: list[dict[str, Any]] | None = None,
                  annotations: dict[str, str] | None = None, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": f"search-t{index}",
                     "labels": {LABEL_TUNEJOB: "search", LABEL_TRIAL_INDEX: str(index)},
                     "annotations": {ANNOTATION_PARAMS: json.dumps(PARAMS),
                                     **(annotations or {})}},
        "spec": {"task": {"name": "image-classification", "epochs": 4}},
        "status": {"conditions": conditions or [], **status},
    }


SUCCEEDED = [{"type": "Succeeded", "status": "True", "reason": "Completed"}]
STOPPED = [{"type": "Succeeded", "status": "True", "reason": "Stopped"}]
FAILED = [{"type": "Failed", "status": "True", "reason": "ExitCode1"}]
# 4 epochs of 10 steps; history thinned by the operator, val_accuracy after completed epochs.
METRICS = {"latest": [{"name": "loss", "value": "0.2"}, {"name": "val_accuracy", "value": "0.93"}],
           "history": [{"step": 10, "values": {"val_accuracy": "0.5"}},
                       {"step": 15, "values": {"val_accuracy": "0.5"}},
                       {"step": 30, "values": {"val_accuracy": "0.9"}}]}
PROGRESS = {"step": 40, "totalSteps": 40, "epoch": 4}


def test_observe_completed_trial_reads_params_value_and_epoch_curve() -> None:
    seen = observe_trial(trainjob_body(3, SUCCEEDED, metrics=METRICS, progress=PROGRESS),
                         "val_accuracy", "epoch")
    assert seen is not None
    assert (seen.name, seen.index, seen.state, seen.finished) == ("search-t3", 3, "COMPLETE",
                                                                  True)
    assert seen.params == PARAMS and seen.value == 0.93
    assert seen.curve == {1: 0.5, 3: 0.9, 4: 0.93}


def test_observe_states() -> None:
    def state(conditions: Any, annotations: Any = None, **status: Any) -> str | None:
        seen = observe_trial(trainjob_body(0, conditions, annotations, **status),
                             "val_accuracy", "epoch")
        return seen.state if seen else None

    assert state([], metrics=METRICS) == "RUNNING"
    assert state([], {ANNOTATION_PRUNED_AT: "1"}) == "PRUNED"  # stopping after the decision
    assert state(STOPPED, {ANNOTATION_PRUNED_AT: "1"}, metrics=METRICS) == "PRUNED"
    assert state(FAILED) == "FAIL"
    assert state(SUCCEEDED) == "FAIL"  # completed without reporting the objective
    assert observe_trial({"metadata": {"name": "x"}}, "val_accuracy", "epoch") is None


def test_step_curve_and_evaluation_fallback() -> None:
    status = {"metrics": METRICS, "progress": PROGRESS}
    assert learning_curve({}, status, "val_accuracy", "step") == {10: 0.5, 15: 0.5, 30: 0.9,
                                                                   40: 0.93}
    body = trainjob_body(0, SUCCEEDED, evaluation={"accuracy": 0.91})
    seen = observe_trial(body, "accuracy", "epoch")
    assert seen is not None and seen.value == 0.91


def test_epoch_curve_of_a_script_that_reports_epochs_without_steps() -> None:
    """Stdout metrics `epoch=N val_accuracy=...`: every report lands in history at its epoch
    (step 0 throughout), so the pruner sees the whole curve, not only the latest point."""
    status: dict[str, Any] = {}
    for epoch, value in ((1, "0.5"), (2, "0.7"), (3, "0.8")):
        report = ProgressReport.model_validate(
            {"epoch": epoch, "metrics": [{"name": "val_accuracy", "value": value}]})
        patch = status_patch(status, report, "2026-12-02T00:00:00Z")
        status = {**status, **patch}
    assert [p.get("epoch") for p in status["metrics"]["history"]] == [1, 2, 3]
    assert learning_curve({}, status, "val_accuracy", "epoch") == {1: 0.5, 2: 0.7, 3: 0.8}


def test_params_reach_typed_fields_and_env() -> None:
    job = tunejob({"name": "lr", "field": "task.learningRate",
                   "logUniform": {"min": "1e-4", "max": "1"}},
                  {"name": "width", "field": "task.hiddenSize", "int": {"min": 8, "max": 64}},
                  {"name": "opt", "field": "task.optimizer",
                   "categorical": {"values": ["sgd", "adam"]}},
                  {"name": "batch", "field": "task.batchSize",
                   "categorical": {"values": ["32", "64"]}},
                  {"name": "drop", "env": "DROPOUT", "uniform": {"min": "0", "max": "0.5"}})
    template = job.spec.trial_template.model_dump(mode="json", by_alias=True, exclude_none=True)
    spec = apply_params(template, job.spec.parameters, {
        "lr": 0.0123456789012, "width": 40, "opt": "adam", "batch": "64", "drop": 0.25})
    assert spec["task"]["learningRate"] == "0.0123456789"
    assert (spec["task"]["hiddenSize"], spec["task"]["optimizer"]) == (40, "adam")
    assert spec["task"]["batchSize"] == 64
    assert spec["env"] == [{"name": "DROPOUT", "value": "0.25"}]
    TrainJob.model_validate({"metadata": {"name": "search-t0"}, "spec": spec})  # still valid


def test_pod_fields_of_the_template_reach_every_trial() -> None:
    pod_template = {
        "volumes": [{"name": "creds", "secret": {"secretName": "s3"}}],
        "volumeMounts": [{"name": "creds", "mountPath": "/creds", "readOnly": True}],
        "imagePullSecrets": [{"name": "registry"}], "schedulerName": "volcano",
        "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}},
        "securityContext": {"runAsUser": 1000}, "shmSize": "1Gi",
        "readOnlyRootFilesystem": True}
    env = [{"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
           {"name": "DROPOUT", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "d"}}}]
    job = tunejob(LR, {"name": "drop", "env": "DROPOUT", "uniform": {"min": "0", "max": "0.5"}},
                  trialTemplate={"task": {"name": "image-classification"},
                                 "data": {"dataset": "digits"}, "env": env,
                                 "envFrom": [{"secretRef": {"name": "s3"}}],
                                 "podTemplate": pod_template})
    actions = reconcile(job, [], EngineDecision(proposals=[Proposal(0, {"lr": 0.1,
                                                                        "drop": 0.2})]), NOW)
    spec = actions.create[0]["spec"]
    assert spec["podTemplate"] == pod_template
    assert spec["envFrom"] == [{"secretRef": {"name": "s3"}}]
    # A parameter's env replaces the template's entry of that name, valueFrom included.
    assert spec["env"] == [{"name": "KEY", "value": "",
                            "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                           {"name": "DROPOUT", "value": "0.2"}]
    TrainJob.model_validate({"metadata": {"name": "search-t0"}, "spec": spec})  # still valid


def test_the_template_refuses_what_a_trainjob_refuses() -> None:
    with pytest.raises(ValueError, match=r"trialTemplate\.podTemplate\.hostNetwork"):
        tunejob(trialTemplate={"task": {"name": "image-classification"},
                               "data": {"dataset": "digits"},
                               "podTemplate": {"hostNetwork": True}})


def test_first_pass_creates_parallel_trials_with_labels_and_params() -> None:
    job = tunejob()
    assert next_indices(job, []) == [0, 1]
    decision = EngineDecision(proposals=[Proposal(0, PARAMS), Proposal(1, PARAMS)])
    actions = reconcile(job, [], decision, NOW)
    names = [c["metadata"]["name"] for c in actions.create]
    assert names == ["search-t0", "search-t1"]
    meta = actions.create[1]["metadata"]
    assert meta["labels"] == {LABEL_TUNEJOB: "search", LABEL_TRIAL_INDEX: "1"}
    assert json.loads(meta["annotations"][ANNOTATION_PARAMS]) == PARAMS
    assert actions.create[0]["spec"]["task"]["hiddenSize"] == 48
    assert actions.status["phase"] == "Running"
    assert actions.status["trialsText"] == "0/8"


def test_budget_and_parallelism_limit_new_trials() -> None:
    job = tunejob()
    running = [trial(0, "RUNNING"), trial(1, "COMPLETE", 0.5)]
    assert next_indices(job, running) == [2]
    full = [trial(i, "COMPLETE", 0.5) for i in range(7)] + [trial(7, "RUNNING")]
    assert next_indices(job, full) == []
    # A proposal outside the allowed indices (stale engine view) is ignored.
    actions = reconcile(job, running, EngineDecision(proposals=[Proposal(5, PARAMS)]), NOW)
    assert actions.create == []


def test_pruned_trials_are_stopped_with_their_records() -> None:
    job = tunejob()
    trials = [trial(0, "RUNNING", curve={1: 0.2}), trial(1, "RUNNING", curve={1: 0.8})]
    decision = EngineDecision(prune={"search-t0": Prune(1, [0.2])},
                              rungs={"search-t1": [0.8]})
    actions = reconcile(job, trials, decision, NOW)
    assert actions.patches("TrainJob")["search-t0"] == {
        "spec": {"stop": True},
        "metadata": {"annotations": {ANNOTATION_PRUNED_AT: "1", ANNOTATION_RUNGS: "[0.2]"}}}
    assert actions.patches("TrainJob")["search-t1"] == {
        "metadata": {"annotations": {ANNOTATION_RUNGS: "[0.8]"}}}
    assert actions.status["trials"]["pruned"] == 1


def test_all_trials_done_succeeds_with_best_and_promotes_once() -> None:
    job = tunejob(promote={"enabled": True})
    trials = [trial(i, "COMPLETE", v) for i, v in enumerate([0.8, 0.95, 0.7, 0.95])]
    trials += [trial(4, "PRUNED"), trial(5, "PRUNED"), trial(6, "FAIL"), trial(7, "COMPLETE", 0.6)]
    actions = reconcile(job, trials, EngineDecision(), NOW)
    status = actions.status
    assert status["phase"] == "Succeeded"
    assert status["bestTrial"]["name"] == "search-t1"  # ties go to the lower index
    assert status["bestTrial"]["value"] == 0.95
    assert status["trials"] == {"created": 8, "running": 0, "completed": 5, "pruned": 2,
                                "failed": 1}
    assert [c["metadata"]["name"] for c in actions.create] == ["search-best"]
    promoted = actions.create[0]
    assert promoted["spec"]["task"]["learningRate"] == "0.02"
    assert LABEL_TRIAL_INDEX not in promoted["metadata"]["labels"]
    # Next pass: terminal and promoted -> nothing more, even if the user deleted the job.
    done = tunejob(promote={"enabled": True}, status=status)
    again = reconcile(done, trials, EngineDecision(proposals=[Proposal(8, PARAMS)]), NOW)
    assert again.create == [] and again.status["phase"] == "Succeeded"


def test_too_many_failures_fail_the_search_and_stop_running_trials() -> None:
    job = tunejob(budget={"maxTrials": 8, "parallelTrials": 2, "maxFailedTrials": 1})
    trials = [trial(0, "FAIL"), trial(1, "FAIL"), trial(2, "RUNNING")]
    actions = reconcile(job, trials, EngineDecision(), NOW)
    assert actions.status["phase"] == "Failed"
    assert actions.patches("TrainJob") == {"search-t2": {"spec": {"stop": True}}}
    assert next_indices(job, trials) == []


def test_goal_stops_new_trials_and_engine_errors_fail() -> None:
    job = tunejob(objective={"metric": "val_accuracy", "goal": "0.9"})
    trials = [trial(0, "COMPLETE", 0.92), trial(1, "RUNNING")]
    assert next_indices(job, trials) == []
    finished = [trial(0, "COMPLETE", 0.92), trial(1, "COMPLETE", 0.5)]
    actions = reconcile(job, finished, EngineDecision(), NOW)
    assert actions.status["phase"] == "Succeeded"
    assert any(c["reason"] == "GoalReached" for c in actions.status["conditions"])
    broken = reconcile(tunejob(), [], EngineDecision(error="no such sampler"), NOW)
    assert broken.status["phase"] == "Failed"


def test_suspend_and_resume_running_trials() -> None:
    running = [trial(0, "RUNNING")]
    actions = reconcile(tunejob(suspend=True), running, EngineDecision(), NOW)
    assert actions.patches("TrainJob") == {"search-t0": {"spec": {"suspend": True}}}
    assert actions.status["phase"] == "Suspended"
    suspended = [trial(0, "RUNNING")]
    suspended[0].suspended = True
    resumed = reconcile(tunejob(status=actions.status), suspended, EngineDecision(), NOW)
    assert resumed.patches("TrainJob") == {"search-t0": {"spec": {"suspend": False}}}
    assert resumed.status["phase"] == "Running"
