"""The TuneJob state machine: TuneJob + observed trials + engine decisions -> actions. Pure.

The search engine (cogwork.tuning, a layer above) proposes parameters for the indices
`next_indices` returns and says which running trials to prune; this module turns that into
TrainJobs to create, patches for running trials and the status. Everything is recomputed from
the TuneJob and its child TrainJobs on each pass: trial names are deterministic, so a pass that
repeats a create after an operator restart gets 409 and changes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cogwork.api.common import is_condition_true
from cogwork.api.tunejob import (
    MAX_PARETO_TRIALS,
    BestTrial,
    ParetoTrial,
    TrialCounts,
    TuneJob,
    TuneJobStatus,
)
from cogwork.plan.lifecycle import Actions, Lifecycle, is_finished
from cogwork.plan.tunejob_observe import (
    ANNOTATION_PRUNED_AT,
    ANNOTATION_RUNGS,
    MISSING_OBJECTIVE_METRIC,
    ParamValue,
    TrialObservation,
    objective_values,
    params_text,
    with_objectives,
)
from cogwork.plan.tunejob_render import promoted_manifest, promoted_name, trial_manifest


@dataclass
class Proposal:
    index: int
    params: dict[str, ParamValue]


@dataclass
class Prune:
    resource: int  # where the curve was when the pruner decided
    rungs: list[float]  # the pruner's rung records, persisted on the trial


@dataclass
class EngineDecision:
    """What the search engine decided this pass (cogwork.tuning.builtin.decide)."""

    proposals: list[Proposal] = field(default_factory=list)
    prune: dict[str, Prune] = field(default_factory=dict)
    rungs: dict[str, list[float]] = field(default_factory=dict)  # promotions to persist
    exhausted: bool = False  # the sampler has nothing left to propose (grid)
    error: str | None = None  # the engine could not run; the TuneJob fails with this message


def is_terminal(job: TuneJob) -> bool:
    return is_finished(job.status.conditions)


def is_multi_objective(job: TuneJob) -> bool:
    return bool(job.spec.objective.additional)


def _losses(job: TuneJob, trial: TrialObservation) -> tuple[float, ...] | None:
    """The trial's objective values turned so that lower is better on every objective."""
    values = objective_values(trial, job.spec.objective.metrics)
    if trial.state != "COMPLETE" or values is None:
        return None
    return tuple(-v if d == "maximize" else v
                 for v, d in zip(values, job.spec.objective.directions, strict=True))


def pareto_front(job: TuneJob, trials: list[TrialObservation]) -> list[TrialObservation]:
    """COMPLETE trials no other one dominates, best primary value first (then the next
    objectives, then the lower index). Equal value vectors dominate neither way: both stay."""
    scored = [(losses, t) for t in trials if (losses := _losses(job, t)) is not None]
    scored.sort(key=lambda item: (item[0], item[1].index))
    front: list[tuple[tuple[float, ...], TrialObservation]] = []
    # In this order a trial can only be dominated by an earlier one, and if it is dominated at
    # all, then by a trial already on the front (dominance is transitive).
    for losses, trial in scored:
        if not any(all(f <= c for f, c in zip(kept, losses, strict=True)) and kept != losses
                   for kept, _ in front):
            front.append((losses, trial))
    return [trial for _, trial in front]


def best_trial(job: TuneJob, trials: list[TrialObservation]) -> TrialObservation | None:
    """Best COMPLETE trial on the primary objective; ties go to the lower index (deterministic).
    With additional objectives: the Pareto trial best on the primary (what gets promoted)."""
    if is_multi_objective(job):
        front = pareto_front(job, trials)
        return front[0] if front else None
    done = [t for t in trials if t.state == "COMPLETE" and t.value is not None]
    if not done:
        return None
    sign = -1.0 if job.spec.objective.direction == "maximize" else 1.0
    return min(done, key=lambda t: (sign * (t.value or 0.0), t.index))


def goal_reached(job: TuneJob, best: TrialObservation | None) -> bool:
    goal = job.spec.objective.goal
    if goal is None or best is None or best.value is None:
        return False
    if job.spec.objective.direction == "maximize":
        return best.value >= float(goal)
    return best.value <= float(goal)


def too_many_failures(job: TuneJob, trials: list[TrialObservation]) -> bool:
    return sum(t.state == "FAIL" for t in trials) > job.spec.budget.max_failed_trials


def next_indices(job: TuneJob, trials: list[TrialObservation]) -> list[int]:
    """Indices of the trials to start now: within budget and parallelism, none while stopping."""
    if is_terminal(job) or job.spec.suspend or too_many_failures(job, trials):
        return []
    if goal_reached(job, best_trial(job, trials)):
        return []
    budget = job.spec.budget
    active = sum(not t.finished for t in trials)
    slots = min(budget.parallel_trials - active, budget.max_trials - len(trials))
    start = max((t.index for t in trials), default=-1) + 1
    return list(range(start, start + max(0, slots)))


class _Pass(Lifecycle[TuneJob]):
    """One pass of a builtin-engine TuneJob: the shared lifecycle plus trials and promotion."""

    SUSPEND_MESSAGE = "no new trials; running trials suspended"

    def __init__(self, job: TuneJob, trials: list[TrialObservation], decision: EngineDecision,
                 now: datetime) -> None:
        super().__init__(job, now, TuneJobStatus)
        self.trials, self.decision = trials, decision
        self.best = best_trial(job, trials)
        self.out.requeue_after = 10.0

    def patch(self, trial: str, spec: dict[str, Any] | None = None,
              annotations: dict[str, str] | None = None) -> None:
        patch: dict[str, Any] = {}
        if spec:
            patch["spec"] = spec
        if annotations:
            patch["metadata"] = {"annotations": annotations}
        self.patch_child("TrainJob", trial, patch)

    # -- lifecycle hooks ----------------------------------------------------------------
    def stop_children(self) -> None:
        for trial in self.trials:
            if not trial.finished and not trial.stop_requested:
                self.patch(trial.name, spec={"stop": True})

    def suspend_children(self) -> None:
        for trial in self.trials:
            if not trial.finished and not trial.suspended:
                self.patch(trial.name, spec={"suspend": True})

    def resume_children(self) -> None:
        for trial in self.trials:
            if not trial.finished and trial.suspended:
                self.patch(trial.name, spec={"suspend": False})

    def fails_now(self) -> bool:
        if self.decision.error:
            self.finish("Failed", "EngineError", self.decision.error)
            return True
        if too_many_failures(self.job, self.trials):
            failed = sum(t.state == "FAIL" for t in self.trials)
            self.finish("Failed", "TooManyFailedTrials",
                        f"{failed} trials failed; spec.budget.maxFailedTrials is "
                        f"{self.job.spec.budget.max_failed_trials}{self.missing_metrics()}")
            return True
        return False

    def on_finished(self) -> None:
        """Sticky: never start trials again; only make sure the promoted job exists."""
        self.promote()

    # -- the kind's own work --------------------------------------------------------------
    def active(self) -> None:
        known = {t.name for t in self.trials}
        for name, prune in self.decision.prune.items():
            if name in known:
                self.patch(name, spec={"stop": True},
                           annotations={ANNOTATION_PRUNED_AT: str(prune.resource),
                                        ANNOTATION_RUNGS: json.dumps(prune.rungs)})
                self.event("TrialPruned", f"{name} pruned at {self.job.spec.pruner.resource} "
                                          f"{prune.resource}")
        for name, rungs in self.decision.rungs.items():
            if name in known and name not in self.decision.prune:
                self.patch(name, annotations={ANNOTATION_RUNGS: json.dumps(rungs)})
        allowed = set(next_indices(self.job, self.trials))
        for proposal in self.decision.proposals:
            if proposal.index in allowed:
                self.out.create.append(trial_manifest(self.job, proposal.index, proposal.params))
        unfinished = [t for t in self.trials if not t.finished]
        budget_used = len(self.trials) >= self.job.spec.budget.max_trials
        stop_starting = (budget_used or self.decision.exhausted
                         or goal_reached(self.job, self.best))
        if unfinished or self.out.create or not stop_starting:
            self.cond("Running", "True", "TrialsRunning",
                      f"{len(unfinished) + len(self.out.create)} trial(s) running")
            self.out.requeue_after = 5.0 if unfinished else 10.0
            return
        if self.best is None:
            metrics = " and ".join(self.job.spec.objective.metrics)
            self.finish("Failed", "NoCompletedTrials", "no trial completed with a value of "
                                                       f"{metrics}{self.missing_metrics()}")
            return
        reason = "GoalReached" if goal_reached(self.job, self.best) else "Completed"
        self.finish("Succeeded", reason, f"best trial {self.best.name}: "
                                         f"{self.job.spec.objective.metric} {self.best.value}")
        self.promote()

    def missing_metrics(self) -> str:
        """Why succeeded trials counted as failed, for the terminal message (said once)."""
        missing = [f"{t.name} ({t.reason})" for t in self.trials
                   if t.reason.startswith(MISSING_OBJECTIVE_METRIC)]
        return f"; succeeded without every objective: {', '.join(missing)}" if missing else ""

    def promote(self) -> None:
        if (not self.job.spec.promote.enabled or self.best is None
                or not is_condition_true(self.conditions, "Succeeded")):
            return
        if self.job.status.promoted_train_job or "promotedTrainJob" in self.out.status:
            return  # created once; a user may delete it without the operator recreating it
        self.out.create.append(promoted_manifest(self.job, self.best))
        self.out.status.set(promoted_train_job=promoted_name(self.job))
        self.event("Promoted", f"created TrainJob {promoted_name(self.job)} with the best "
                               "parameters")

    def own_status(self) -> None:
        trials = self.trials
        self.out.status.set(
            trials=TrialCounts(
                created=len(trials),
                running=sum(not t.finished for t in trials),
                completed=sum(t.state == "COMPLETE" for t in trials),
                pruned=sum(t.state == "PRUNED" or t.name in self.decision.prune for t in trials),
                failed=sum(t.state == "FAIL" for t in trials)),
            trials_text=f"{sum(t.finished for t in trials)}/{self.job.spec.budget.max_trials}")
        best = None
        if self.best is not None and self.best.value is not None:
            best = BestTrial(name=self.best.name, index=self.best.index, value=self.best.value,
                             params=params_text(self.best.params))
        if is_multi_objective(self.job):
            metrics = self.job.spec.objective.metrics
            front = pareto_front(self.job, self.trials)
            entries = [ParetoTrial(name=t.name, index=t.index,
                                   values=dict(zip(metrics, objective_values(t, metrics) or [],
                                                   strict=True)))
                       for t in front[:MAX_PARETO_TRIALS]]
            self.out.status.set(pareto_front=entries, pareto_front_size=len(front))
            if entries and best is not None:
                best.values = entries[0].values
        if best is not None:
            self.out.status.set(best_trial=best)


def reconcile(job: TuneJob, trials: list[TrialObservation], decision: EngineDecision,
              now: datetime) -> Actions:
    """Decide everything one pass does for `job` given its trials and the engine's decision."""
    observed = with_objectives(trials, job.spec.objective.metrics)
    return _Pass(job, sorted(observed, key=lambda t: t.index), decision, now).run()
