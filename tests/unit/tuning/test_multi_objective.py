"""Multi-objective TuneJobs: observation, the stateless engine, the planner's Pareto status and
the local run, on synthetic trials (no cluster, no torch)."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna
import pytest
from cogwork.api.tunejob import MAX_PARETO_TRIALS, TuneJob
from cogwork.local.console import PROGRESS_PREFIX
from cogwork.plan.tunejob_observe import (
    LABEL_TRIAL_INDEX,
    LABEL_TUNEJOB,
    TrialObservation,
    TrialState,
    observe_trial,
    with_objectives,
)
from cogwork.plan.tunejob_reconcile import EngineDecision, best_trial, pareto_front, reconcile
from cogwork.tuning.builtin import build_study, decide, suggest
from tuning_helpers import run_locally, trial, tunejob

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
ACC_LOSS = {"metric": "val_accuracy", "direction": "maximize",
            "additional": [{"metric": "loss", "direction": "minimize"}]}


def pareto_job(*parameters: dict[str, Any], **spec: Any) -> TuneJob:
    return tunejob(*parameters, objective=spec.pop("objective", ACC_LOSS), **spec)


def mo_trial(index: int, acc: float | None = None, loss: float | None = None,
             state: TrialState = "COMPLETE", **kwargs: Any) -> TrialObservation:
    observed = trial(index, state, acc, **kwargs)
    return replace(observed, metrics={} if loss is None else {"loss": loss})


def history() -> list[TrialObservation]:
    return [mo_trial(0, 0.90, 0.30, params={"lr": 0.02, "width": 64, "batch": "32"}),
            mo_trial(1, 0.80, 0.10, params={"lr": 0.2, "width": 16, "batch": "128"}),
            mo_trial(2, 0.85, 0.35, params={"lr": 0.01, "width": 32, "batch": "64"}),
            mo_trial(3, state="RUNNING", params={"lr": 0.05, "width": 48, "batch": "64"})]


# -- observation ---------------------------------------------------------------------------------

def body(index: int, latest: list[dict[str, str]], evaluation: dict[str, Any] | None = None
         ) -> dict[str, Any]:
    return {"metadata": {"name": f"search-t{index}",
                         "labels": {LABEL_TUNEJOB: "search", LABEL_TRIAL_INDEX: str(index)}},
            "spec": {},
            "status": {"conditions": [{"type": "Succeeded", "status": "True",
                                       "reason": "Completed"}],
                       "metrics": {"latest": latest}, "evaluation": evaluation or {}}}


def test_every_objective_is_read_like_the_primary() -> None:
    observed = observe_trial(
        body(0, [{"name": "val_accuracy", "value": "0.9"}, {"name": "loss", "value": "0.25"}],
             {"accuracy": 0.91, "macroF1": 0.88, "confusionMatrix": [[1]], "samples": 9}),
        "val_accuracy", "epoch")
    assert observed is not None and observed.state == "COMPLETE" and observed.value == 0.9
    # Scalar evaluation fields count too (macroF1 can be an objective); lists do not.
    assert observed.metrics == {"val_accuracy": 0.9, "loss": 0.25, "accuracy": 0.91,
                                "macroF1": 0.88, "samples": 9.0}
    job = pareto_job(objective={**ACC_LOSS, "additional": [
        {"metric": "loss", "direction": "minimize"}, {"metric": "macroF1",
                                                      "direction": "maximize"}]})
    assert with_objectives([observed], job.spec.objective.metrics) == [observed]


def test_a_completed_trial_missing_an_objective_fails_with_a_reason() -> None:
    observed = observe_trial(body(0, [{"name": "val_accuracy", "value": "0.9"}]),
                             "val_accuracy", "epoch")
    assert observed is not None and observed.state == "COMPLETE"
    failed, = with_objectives([observed], ["val_accuracy", "loss"])
    assert failed.state == "FAIL" and failed.value is None
    assert failed.reason == "MissingObjectiveMetric: loss not reported"
    # Single-objective searches are unaffected.
    assert with_objectives([observed], ["val_accuracy"]) == [observed]


def test_missing_objective_is_a_failed_trial_for_engine_and_planner() -> None:
    job = pareto_job(budget={"maxTrials": 8, "parallelTrials": 2, "maxFailedTrials": 0})
    trials = [mo_trial(0, 0.9, 0.2), mo_trial(1, 0.95, None)]
    study = build_study(job, trials, optuna.samplers.RandomSampler(seed=0),
                        optuna.pruners.NopPruner())
    assert [t.state.name for t in study.get_trials()] == ["COMPLETE", "FAIL"]
    assert study.get_trials()[0].values == [0.9, 0.2]
    actions = reconcile(job, trials, EngineDecision(), NOW)
    assert actions.status["trials"]["failed"] == 1
    assert actions.status["phase"] == "Failed"  # 1 failed > maxFailedTrials 0
    failed = next(c for c in actions.status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "TooManyFailedTrials"
    assert "search-t1 (MissingObjectiveMetric: loss not reported)" in failed["message"]
    assert actions.status["bestTrial"]["name"] == "search-t0"  # t1's 0.95 does not count


# -- engine ----------------------------------------------------------------------------------

def test_two_objective_study_has_both_directions_and_values() -> None:
    study = build_study(pareto_job(), history(), optuna.samplers.RandomSampler(seed=0),
                        optuna.pruners.NopPruner())
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert [t.values for t in study.get_trials()][:3] == [[0.9, 0.3], [0.8, 0.1], [0.85, 0.35]]
    assert study.get_trials()[3].state.name == "RUNNING"


@pytest.mark.parametrize("algorithm", ["tpe", "gp", "random", "qmc", "grid"])
def test_rebuilt_two_objective_study_gives_the_same_asks(algorithm: str) -> None:
    params = ([{"name": "width", "field": "task.hiddenSize",
                "int": {"min": 16, "max": 128, "step": 16}}]
              if algorithm == "grid" else [])
    job = pareto_job(*params, search={"algorithm": algorithm, "seed": 5, "startupTrials": 2})
    trials = history() if not params else [
        replace(t, params={"width": 16 * (t.index + 1)}) for t in history()]
    first = suggest(job, trials, 4)
    assert first is not None and first == suggest(job, trials, 4)
    # One pass proposes two trials; a restarted operator that created only the first proposes
    # the same second one.
    job = pareto_job(*params, search={"algorithm": algorithm, "seed": 5, "startupTrials": 2},
                     budget={"maxTrials": 8, "parallelTrials": 3})
    both = decide(job, trials)
    assert [p.index for p in both.proposals] == [4, 5] and both.error is None
    created = mo_trial(4, state="RUNNING", params=both.proposals[0].params)
    again = decide(job, [*trials, created])
    assert [p.params for p in again.proposals] == [both.proposals[1].params]


def test_engine_front_matches_optuna_best_trials() -> None:
    """The planner's own Pareto front equals Optuna's on the rebuilt study (random trials,
    ties included)."""
    rng = random.Random(3)
    job = pareto_job(objective={**ACC_LOSS, "additional": [
        {"metric": "loss", "direction": "minimize"},
        {"metric": "macroF1", "direction": "maximize"}]})
    trials = []
    for i in range(60):
        acc, loss, f1 = (round(rng.random(), 1) for _ in range(3))  # coarse: many ties
        trials.append(replace(trial(i, "COMPLETE", acc), metrics={"loss": loss, "macroF1": f1}))
    study = build_study(job, trials, optuna.samplers.RandomSampler(seed=0),
                        optuna.pruners.NopPruner())
    ours = {t.name for t in pareto_front(job, trials)}
    assert ours == {t.user_attrs["name"] for t in study.best_trials}
    assert 1 < len(ours) < len(trials)


# -- planner ---------------------------------------------------------------------------------

def test_pareto_front_by_hand_and_best_on_the_primary() -> None:
    job = pareto_job()
    trials = [mo_trial(0, 0.90, 0.30), mo_trial(1, 0.80, 0.10), mo_trial(2, 0.85, 0.35),
              mo_trial(3, 0.90, 0.20), mo_trial(4, 0.70, 0.10), mo_trial(5, 0.88, 0.15),
              mo_trial(6, state="FAIL")]
    # t0 is dominated by t3 (same accuracy, lower loss); t2 by t0; t4 by t1.
    assert [t.name for t in pareto_front(job, trials)] == ["search-t3", "search-t5",
                                                           "search-t1"]
    best = best_trial(job, trials)
    assert best is not None and best.name == "search-t3"


def test_status_lists_a_small_sorted_front_and_promotes_its_best() -> None:
    job = pareto_job(budget={"maxTrials": 14, "parallelTrials": 2}, promote={"enabled": True},
                     objective={**ACC_LOSS, "goal": "0.99"})
    # 14 trials on one trade-off curve: every one is Pareto-optimal.
    trials = [mo_trial(i, 0.5 + 0.03 * i, 0.1 + 0.05 * i,
                       params={"lr": 0.01 * (i + 1), "width": 32, "batch": "64"})
              for i in range(14)]
    actions = reconcile(job, trials, EngineDecision(), NOW)
    status = actions.status
    assert status["phase"] == "Succeeded" and status["paretoFrontSize"] == 14
    front = status["paretoFront"]
    assert len(front) == MAX_PARETO_TRIALS
    accuracies = [entry["values"]["val_accuracy"] for entry in front]
    assert accuracies == sorted(accuracies, reverse=True)
    assert front[0]["name"] == "search-t13" and set(front[0]["values"]) == {"val_accuracy",
                                                                            "loss"}
    assert status["bestTrial"]["name"] == "search-t13"
    assert status["bestTrial"]["values"] == front[0]["values"]
    assert status["bestTrial"]["value"] == pytest.approx(0.89)
    promoted, = actions.create
    assert promoted["spec"]["task"]["learningRate"] == "0.14"
    TuneJob.model_validate({**job.model_dump(by_alias=True), "status": status})


def test_goal_is_judged_on_the_primary_objective_only() -> None:
    job = pareto_job(objective={**ACC_LOSS, "goal": "0.9"},
                     budget={"maxTrials": 8, "parallelTrials": 1})
    reached = reconcile(job, [mo_trial(0, 0.95, 0.9)], EngineDecision(), NOW)
    assert reached.status["phase"] == "Succeeded"
    assert "GoalReached" in json.dumps(reached.status["conditions"])
    # A low loss does not reach a goal set for accuracy.
    running = reconcile(job, [mo_trial(0, 0.5, 0.0)], EngineDecision(), NOW)
    assert running.status["phase"] == "Running"


def test_single_objective_status_has_no_front() -> None:
    status = reconcile(tunejob(), [trial(0, "COMPLETE", 0.9)], EngineDecision(), NOW).status
    assert "paretoFront" not in status and "values" not in status["bestTrial"]


# -- local run -------------------------------------------------------------------------------

LOCAL_DOC = {
    "apiVersion": "cogwork.dev/v1alpha1", "kind": "TuneJob", "metadata": {"name": "local"},
    "spec": {
        "objective": ACC_LOSS,
        "parameters": [{"name": "lr", "field": "task.learningRate",
                        "logUniform": {"min": "0.001", "max": "1"}}],
        "search": {"algorithm": "random", "seed": 4},
        "budget": {"maxTrials": 5, "parallelTrials": 2},
        "trialTemplate": {"task": {"name": "image-classification", "epochs": 1},
                          "data": {"dataset": "digits"}},
    },
}


def trade_off_trial(manifest: dict[str, Any], trial_dir: Path) -> int:
    """A fake trainer whose accuracy and loss both grow with lr: every trial is on the front."""
    lr = float(manifest["spec"]["task"]["learningRate"])
    report = {"event": "progress", "step": 10, "totalSteps": 10, "epoch": 1,
              "metrics": [{"name": "val_accuracy", "value": f"{0.5 + lr / 4:.4f}"},
                          {"name": "loss", "value": f"{lr:.4f}"}]}
    log = trial_dir / "logs" / "app" / "worker" / "0" / "stdout.log"
    log.parent.mkdir(parents=True)
    log.write_text(PROGRESS_PREFIX + json.dumps(report) + "\n")
    return 0


def test_local_run_shows_every_objective_and_prints_the_front(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = run_locally(LOCAL_DOC, tmp_path, monkeypatch, trade_off_trial)
    header = next(line for line in text.splitlines() if line.startswith("TRIAL"))
    assert "val_accuracy" in header and "loss" in header
    front_text = text[text.index("Pareto front (5 trial(s)):"):text.index("{\n \"phase\"")]
    rows = [line.split() for line in front_text.splitlines()[2:] if line.strip()]
    assert len(rows) == 5
    accuracies = [float(row[1]) for row in rows]
    assert accuracies == sorted(accuracies, reverse=True)
    summary = json.loads(text[text.index("{\n \"phase\""):])
    assert summary["bestTrial"]["name"] == rows[0][0]
