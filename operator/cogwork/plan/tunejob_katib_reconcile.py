"""One pass of a Katib-engine TuneJob: TuneJob + observed Experiment -> actions. Pure, no I/O.

Katib runs the search; the operator only creates the Experiment (tunejob_katib_render.py)
and mirrors what Katib reports into the TuneJob's usual, small status: conditions, trial counts,
`bestTrial` from the Experiment's `currentOptimalTrial`, and the promoted TrainJob. Everything is
recomputed from the two objects on each pass, like the builtin engine.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Literal

from kubeflow_katib_api.models import V1beta1OptimalTrial
from pydantic import ValidationError

from cogwork.api.common import is_condition_true
from cogwork.api.tunejob import BestTrial, TrialCounts, TuneJob, TuneJobStatus
from cogwork.plan.lifecycle import FINISHED_RECHECK_S, Actions, Lifecycle
from cogwork.plan.tunejob_katib_names import (
    EXPERIMENT_KIND,
    EXPERIMENT_PLURAL,
    KATIB_API_VERSION,
    experiment_name,
)
from cogwork.plan.tunejob_katib_render import KatibUnsupported, budget_patch, build
from cogwork.plan.tunejob_observe import TrialObservation
from cogwork.plan.tunejob_render import promoted_manifest, promoted_name

ENGINE_READY = "EngineReady"
NOT_INSTALLED_MESSAGE = (f"{EXPERIMENT_PLURAL}.{KATIB_API_VERSION} is not served: install Katib "
                         "(its Experiment CRD) to run spec.engine katib")
# Katib trials have no index of ours (Katib names them <experiment>-<random>).
NO_INDEX = -1


# -- reading the Experiment's status ----------------------------------------------------------

def best_trial(job: TuneJob, experiment_status: dict[str, Any]) -> BestTrial | None:
    """`currentOptimalTrial` in the TuneJob's bestTrial shape; None until Katib has one."""
    try:
        optimal = V1beta1OptimalTrial.from_dict(experiment_status.get("currentOptimalTrial"))
    except ValidationError:
        return None
    if optimal is None or not optimal.best_trial_name:
        return None
    metric = job.spec.objective.metric
    observed = [m for m in (optimal.observation.metrics if optimal.observation else None) or []
                if m.name == metric]
    value = _finite(observed[0].latest) if observed else None
    if value is None:
        return None
    params = {a.name: a.value or "" for a in optimal.parameter_assignments or [] if a.name}
    return BestTrial(name=optimal.best_trial_name, index=NO_INDEX, value=value,
                     params=dict(sorted(params.items())))


def _finite(text: str | None) -> float | None:
    try:
        value = float(text or "")
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def trial_counts(experiment_status: dict[str, Any]) -> TrialCounts:
    """Katib's counters in our shape; killed and metrics-less trials count as failed."""
    def count(key: str) -> int:
        value = experiment_status.get(key)
        return value if isinstance(value, int) else 0

    return TrialCounts(
        created=count("trials"),
        running=count("trialsRunning") + count("trialsPending"),
        completed=count("trialsSucceeded"),
        pruned=count("trialsEarlyStopped"),
        failed=(count("trialsFailed") + count("trialsKilled")
                + count("trialMetricsUnavailable")),
    )


def _katib_condition(experiment_status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for condition in experiment_status.get("conditions") or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            return dict(condition)
    return None


# -- the pass ---------------------------------------------------------------------------------

class _Pass(Lifecycle[TuneJob]):
    """One pass of a Katib-engine TuneJob: the shared lifecycle plus the Experiment.
    (spec.suspend is refused at apply for engine katib: an Experiment cannot be suspended.)"""

    def __init__(self, job: TuneJob, now: datetime, experiment: dict[str, Any] | None = None,
                 installed: bool = True) -> None:
        super().__init__(job, now, TuneJobStatus)
        self.experiment, self.installed = experiment, installed
        self.out.requeue_after = 15.0

    def stop_children(self) -> None:
        """Past its deadline: Katib has no stop, so a running Experiment (and its trials) is
        deleted; one Katib finished stays for its record."""
        status = (self.experiment or {}).get("status") or {}
        if self.experiment is not None and not any(
                _katib_condition(status, kind) for kind in ("Succeeded", "Failed")):
            self.delete_child(EXPERIMENT_KIND, experiment_name(self.job))

    def finish(self, kind: Literal["Succeeded", "Failed"], reason: str, message: str) -> None:
        super().finish(kind, reason, message)
        self.out.requeue_after = FINISHED_RECHECK_S

    def on_finished(self) -> None:
        self.promote(self.job.status.best_trial)

    def not_ready(self, reason: str, message: str) -> None:
        if not any(c.type == ENGINE_READY and c.reason == reason for c in self.conditions):
            self.event(reason, message, warning=True)
        self.cond(ENGINE_READY, "False", reason, message)
        self.out.requeue_after = 30.0

    def active(self) -> None:
        if not self.installed:
            self.not_ready("KatibNotInstalled", NOT_INSTALLED_MESSAGE)
        elif self.experiment is None:
            self.create()
        else:
            self.mirror(self.experiment)

    def create(self) -> None:
        try:
            objects = build(self.job)
        except KatibUnsupported as err:
            self.finish("Failed", "EngineError", str(err))
            return
        if objects.config_map is not None:
            self.out.create.append(objects.config_map)
        self.out.create.append(objects.experiment)
        name = experiment_name(self.job)
        self.cond(ENGINE_READY, "True", "ExperimentCreated", f"Katib Experiment {name}")
        self.cond("Running", "True", "ExperimentCreated", f"Katib Experiment {name} created")
        self.event("ExperimentCreated", f"created Katib Experiment {name}")
        self.out.requeue_after = 5.0

    def mirror(self, experiment: dict[str, Any]) -> None:
        status = experiment.get("status") or {}
        name = experiment_name(self.job)
        self.cond(ENGINE_READY, "True", "ExperimentCreated", f"Katib Experiment {name}")
        counts = trial_counts(status)
        finished = counts.completed + counts.pruned + counts.failed
        self.out.status.set(trials=counts,
                            trials_text=f"{finished}/{self.job.spec.budget.max_trials}")
        best = best_trial(self.job, status)
        if best is not None:
            self.out.status.set(best_trial=best)
        succeeded, failed = (_katib_condition(status, "Succeeded"),
                             _katib_condition(status, "Failed"))
        if failed is not None:
            self.finish("Failed", failed.get("reason") or "ExperimentFailed",
                        failed.get("message") or f"Katib Experiment {name} failed")
        elif succeeded is not None:
            self.finish("Succeeded", succeeded.get("reason") or "ExperimentSucceeded",
                        succeeded.get("message") or f"Katib Experiment {name} succeeded")
            self.promote(best)
        else:
            self.cond("Running", "True", "ExperimentRunning", f"{counts.running} trial(s) "
                                                              "running in Katib")
            patch = budget_patch(self.job, experiment)
            if patch:
                self.patch_child(EXPERIMENT_KIND, name, patch)

    def promote(self, best: BestTrial | None) -> None:
        job = self.job
        if (not job.spec.promote.enabled or best is None or job.status.promoted_train_job
                or "promotedTrainJob" in self.out.status
                or not is_condition_true(self.conditions, "Succeeded")):
            return
        trial = TrialObservation(name=best.name, index=NO_INDEX, state="COMPLETE",
                                 params=dict(best.params), value=best.value)
        try:
            manifest = promoted_manifest(job, trial)
        except ValueError as err:  # Katib proposed a value our typed field cannot take
            self.event("PromoteFailed", str(err), warning=True)
            return
        self.out.create.append(manifest)
        self.out.status.set(promoted_train_job=promoted_name(job))
        self.event("Promoted", f"created TrainJob {promoted_name(job)} with the best parameters")


def reconcile(job: TuneJob, experiment: dict[str, Any] | None, installed: bool,
              now: datetime) -> Actions:
    """Everything one pass does for a Katib-engine `job` given its Experiment (None: absent;
    `installed` False: the Experiment CRD is not served)."""
    return _Pass(job, now, experiment, installed).run()

