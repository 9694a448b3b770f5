"""One pass of a Katib-engine TuneJob: TuneJob + observed Experiment -> actions. Pure, no I/O.

Katib runs the search; the operator only creates the Experiment (cogwork.tuning.katib) and
mirrors what Katib reports into the TuneJob's usual, small status: conditions, trial counts,
`bestTrial` from the Experiment's `currentOptimalTrial`, and the promoted TrainJob. Everything is
recomputed from the two objects on each pass, like the builtin engine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kubeflow_katib_api.models import V1beta1OptimalTrial
from pydantic import ValidationError

from cogwork.api.common import Condition, is_condition_true, rfc3339, set_condition
from cogwork.api.tunejob import TuneJob
from cogwork.plan.kstatus import with_kstatus
from cogwork.plan.tunejob import derive_phase, is_terminal, promoted_manifest, promoted_name
from cogwork.plan.tunejob_trials import TrialObservation
from cogwork.tuning.katib import KatibUnsupported, budget_patch, build
from cogwork.tuning.katib_names import EXPERIMENT_PLURAL, KATIB_API_VERSION, experiment_name

ENGINE_READY = "EngineReady"
NOT_INSTALLED_MESSAGE = (f"{EXPERIMENT_PLURAL}.{KATIB_API_VERSION} is not served: install Katib "
                         "(its Experiment CRD) to run spec.engine katib")
# Katib trials have no index of ours (Katib names them <experiment>-<random>).
NO_INDEX = -1


@dataclass
class KatibActions:
    create: list[dict[str, Any]] = field(default_factory=list)  # in order: template, Experiment
    patch_experiment: dict[str, Any] | None = None
    status: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[str, str, str]] = field(default_factory=list)  # type, reason, message
    requeue_after: float = 15.0


# -- reading the Experiment's status ----------------------------------------------------------

def best_trial(job: TuneJob, experiment_status: dict[str, Any]) -> dict[str, Any] | None:
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
    return {"name": optimal.best_trial_name, "index": NO_INDEX, "value": value,
            "params": dict(sorted(params.items()))}


def _finite(text: str | None) -> float | None:
    try:
        value = float(text or "")
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def trial_counts(experiment_status: dict[str, Any]) -> dict[str, int]:
    """Katib's counters in our shape; killed and metrics-less trials count as failed."""
    def count(key: str) -> int:
        value = experiment_status.get(key)
        return value if isinstance(value, int) else 0

    return {
        "created": count("trials"),
        "running": count("trialsRunning") + count("trialsPending"),
        "completed": count("trialsSucceeded"),
        "pruned": count("trialsEarlyStopped"),
        "failed": (count("trialsFailed") + count("trialsKilled")
                   + count("trialMetricsUnavailable")),
    }


def _katib_condition(experiment_status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for condition in experiment_status.get("conditions") or []:
        if condition.get("type") == kind and condition.get("status") == "True":
            return dict(condition)
    return None


# -- the pass ---------------------------------------------------------------------------------

class _Pass:
    def __init__(self, job: TuneJob, now: datetime) -> None:
        self.job, self.now = job, now
        self.conditions: list[Condition] = list(job.status.conditions)
        self.out = KatibActions()

    def cond(self, kind: str, status: str, reason: str, message: str = "") -> None:
        self.conditions = set_condition(self.conditions, kind, status, reason,  # type: ignore[arg-type]
                                        message, observed_generation=self.job.metadata.generation,
                                        now=self.now)

    def finish(self, kind: str, reason: str, message: str) -> None:
        self.cond(kind, "True", reason, message)
        self.cond("Running", "False", reason, message)
        self.out.status["completionTime"] = rfc3339(self.now)
        self.out.events.append(("Warning" if kind == "Failed" else "Normal", reason, message))
        self.out.requeue_after = 300.0

    def not_ready(self, reason: str, message: str) -> None:
        if not any(c.type == ENGINE_READY and c.reason == reason for c in self.conditions):
            self.out.events.append(("Warning", reason, message))
        self.cond(ENGINE_READY, "False", reason, message)
        self.out.requeue_after = 30.0

    def run(self, experiment: dict[str, Any] | None, installed: bool) -> KatibActions:
        if not self.job.status.start_time:
            self.out.status["startTime"] = rfc3339(self.now)
        if is_terminal(self.job):
            self.promote(self.job.status.best_trial.model_dump() if self.job.status.best_trial
                         else None)
            self.out.requeue_after = 300.0
        elif not installed:
            self.not_ready("KatibNotInstalled", NOT_INSTALLED_MESSAGE)
        elif experiment is None:
            self.create()
        else:
            self.mirror(experiment)
        self.write_conditions()
        return self.out

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
        self.out.events.append(("Normal", "ExperimentCreated", f"created Katib Experiment {name}"))
        self.out.requeue_after = 5.0

    def mirror(self, experiment: dict[str, Any]) -> None:
        status = experiment.get("status") or {}
        name = experiment_name(self.job)
        self.cond(ENGINE_READY, "True", "ExperimentCreated", f"Katib Experiment {name}")
        counts = trial_counts(status)
        finished = counts["completed"] + counts["pruned"] + counts["failed"]
        self.out.status["trials"] = counts
        self.out.status["trialsText"] = f"{finished}/{self.job.spec.budget.max_trials}"
        best = best_trial(self.job, status)
        if best is not None:
            self.out.status["bestTrial"] = best
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
            self.cond("Running", "True", "ExperimentRunning", f"{counts['running']} trial(s) "
                                                              "running in Katib")
            self.out.patch_experiment = budget_patch(self.job, experiment)

    def promote(self, best: dict[str, Any] | None) -> None:
        job = self.job
        if (not job.spec.promote.enabled or best is None or job.status.promoted_train_job
                or not is_condition_true(self.conditions, "Succeeded")):
            return
        trial = TrialObservation(name=best["name"], index=NO_INDEX, state="COMPLETE",
                                 params=dict(best["params"]), value=best["value"])
        try:
            manifest = promoted_manifest(job, trial)
        except ValueError as err:  # Katib proposed a value our typed field cannot take
            self.out.events.append(("Warning", "PromoteFailed", str(err)))
            return
        self.out.create.append(manifest)
        self.out.status["promotedTrainJob"] = promoted_name(job)
        self.out.events.append(("Normal", "Promoted", f"created TrainJob {promoted_name(job)} "
                                                      "with the best parameters"))

    def write_conditions(self) -> None:
        phase = derive_phase(self.conditions)
        conditions = with_kstatus(self.conditions, phase, self.job.metadata.generation, self.now)
        self.out.status["observedGeneration"] = self.job.metadata.generation
        self.out.status["phase"] = phase
        self.out.status["conditions"] = [c.model_dump(mode="json", by_alias=True,
                                                      exclude_none=True) for c in conditions]


def reconcile(job: TuneJob, experiment: dict[str, Any] | None, installed: bool,
              now: datetime) -> KatibActions:
    """Everything one pass does for a Katib-engine `job` given its Experiment (None: absent;
    `installed` False: the Experiment CRD is not served)."""
    return _Pass(job, now).run(experiment, installed)


def rejected(job: TuneJob, message: str, now: datetime) -> KatibActions:
    """The apiserver or Katib's webhook refused the Experiment: not ready, retried later."""
    one = _Pass(job, now)
    one.not_ready("ExperimentRejected", message[:1000])
    one.cond("Running", "False", "ExperimentRejected", message[:1000])
    one.write_conditions()
    return one.out
