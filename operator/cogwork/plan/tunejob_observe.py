"""Trials of a TuneJob as the planners and the engine see them. Pure, no I/O.

A trial is a child TrainJob named `<tunejob>-t<index>`. Everything the search needs to rebuild
its state lives on that object: the parameters (annotation), the learning curve and final value
(the TrainJob's reported status), and the pruner's records (annotations written with the stop
request). Nothing lives in the operator's memory, so a restarted operator continues the same
search.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from cogwork.api.common import TunedValue
from cogwork.api.tunejob_spec import CHOICE_FIELDS, DECIMAL_FIELDS, INTEGER_FIELDS, Parameter

LABEL_TUNEJOB = "cogwork.dev/tunejob"
LABEL_TRIAL_INDEX = "cogwork.dev/trial-index"
LABEL_PROMOTED_FROM = "cogwork.dev/promoted-from"
ANNOTATION_PARAMS = "cogwork.dev/trial-params"
# Resource (epoch/step) at which the pruner stopped the trial; present = the trial is Pruned.
ANNOTATION_PRUNED_AT = "cogwork.dev/pruned-at"
# Values the pruner recorded at each rung it evaluated (Optuna's completed_rung_<k>), JSON list.
ANNOTATION_RUNGS = "cogwork.dev/rungs"
# Reason of a succeeded trial that lacks an additional objective's metric (it counts as FAIL).
MISSING_OBJECTIVE_METRIC = "MissingObjectiveMetric"

TrialState = Literal["RUNNING", "COMPLETE", "PRUNED", "FAIL"]
ParamValue = float | int | str
Resource = Literal["epoch", "step"]


@dataclass
class TrialObservation:
    """One child TrainJob, reduced to what the search needs."""

    name: str
    index: int
    state: TrialState
    params: dict[str, ParamValue] = field(default_factory=dict)
    value: float | None = None  # objective, for COMPLETE trials
    curve: dict[int, float] = field(default_factory=dict)  # resource -> objective metric
    rungs: list[float] = field(default_factory=list)  # pruner records persisted on the trial
    finished: bool = False  # the TrainJob reached Succeeded or Failed
    stop_requested: bool = False
    suspended: bool = False
    reason: str = ""  # reason of the terminal condition
    # Latest value of every scalar metric the trial reported (status.metrics.latest, then the
    # scalar fields of status.evaluation): where the extra objectives of a multi-objective
    # search are read from, the same way `value` is read for the primary objective.
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def last_resource(self) -> int | None:
        return max(self.curve) if self.curve else None


def trial_name(tunejob: str, index: int) -> str:
    return f"{tunejob}-t{index}"


def _float(text: object) -> float | None:
    try:
        value = float(str(text))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _terminal(conditions: list[dict[str, Any]]) -> tuple[str, str] | None:
    for condition in conditions:
        if condition.get("type") in ("Succeeded", "Failed") and condition.get("status") == "True":
            return str(condition["type"]), str(condition.get("reason") or "")
    return None


def final_value(status: dict[str, Any], metric: str) -> float | None:
    """The metric's last reported value, or the evaluation's field of that name."""
    for item in (status.get("metrics") or {}).get("latest") or []:
        if item.get("name") == metric:
            return _float(item.get("value"))
    evaluation = status.get("evaluation") or {}
    return _float(evaluation[metric]) if evaluation.get(metric) is not None else None


def reported_metrics(status: dict[str, Any]) -> dict[str, float]:
    """Every metric final_value can read, by name (a metrics entry wins over evaluation)."""
    out: dict[str, float] = {}
    for name, raw in (status.get("evaluation") or {}).items():
        value = _float(raw) if isinstance(raw, int | float) and not isinstance(raw, bool) else None
        if value is not None:
            out[str(name)] = value
    for item in (status.get("metrics") or {}).get("latest") or []:
        value = _float(item.get("value"))
        if item.get("name") and value is not None:
            out[str(item["name"])] = value
    return out


def learning_curve(spec: dict[str, Any], status: dict[str, Any], metric: str,
                   resource: Resource) -> dict[int, float]:
    """Resource -> metric from the trial's (thinned) history and latest report.

    A point that carries its epoch (the trainer, the SDK, stdout metrics) is placed there; an
    older point at step s belongs to epoch s // stepsPerEpoch (stepsPerEpoch = totalSteps /
    task.epochs): the trainer reports val_accuracy of the model after the completed epochs.
    """
    progress = status.get("progress") or {}
    metrics = status.get("metrics") or {}
    points = [(p.get("step"), p.get("epoch"), (p.get("values") or {}).get(metric))
              for p in metrics.get("history") or []]
    latest = final_value({"metrics": {"latest": metrics.get("latest") or []}}, metric)
    if latest is not None and progress.get("step") is not None:
        points.append((progress["step"], progress.get("epoch"), latest))
    epochs = (spec.get("task") or {}).get("epochs")
    total = progress.get("totalSteps")
    per_epoch = total // epochs if isinstance(total, int) and epochs and total >= epochs else None
    curve: dict[int, float] = {}
    for step, epoch, raw in sorted((p for p in points if isinstance(p[0], int)),
                                   key=lambda p: (p[0], p[1] or 0)):
        value = _float(raw) if raw is not None else None
        if value is None:
            continue
        if resource == "step":
            curve[step] = value
        elif isinstance(epoch, int):
            curve.setdefault(epoch, value)  # reported with its epoch (SDK, stdout metrics)
        elif per_epoch:
            curve.setdefault(step // per_epoch, value)  # first report of an epoch's value
    if resource == "epoch" and not per_epoch and latest is not None and progress.get("epoch"):
        curve[int(progress["epoch"])] = latest  # script trials: only the latest point is placed
    curve.pop(0, None)  # nothing is learned at resource 0
    return curve


def observe_trial(body: dict[str, Any], metric: str, resource: Resource) -> TrialObservation | None:
    """A child TrainJob as a trial, or None when it is not one (no index label)."""
    meta = body.get("metadata") or {}
    labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
    try:
        index = int(labels[LABEL_TRIAL_INDEX])
    except (KeyError, ValueError):
        return None
    spec, status = body.get("spec") or {}, body.get("status") or {}
    try:
        params = json.loads(annotations.get(ANNOTATION_PARAMS) or "{}")
        rungs = [float(v) for v in json.loads(annotations.get(ANNOTATION_RUNGS) or "[]")]
    except (ValueError, TypeError):
        params, rungs = {}, []
    terminal = _terminal(status.get("conditions") or [])
    pruned = ANNOTATION_PRUNED_AT in annotations
    value = final_value(status, metric)
    state: TrialState = "RUNNING"
    if terminal is not None:
        kind, reason = terminal
        if pruned or reason == "Stopped":
            state = "PRUNED"
        elif kind == "Succeeded":
            state = "COMPLETE" if value is not None else "FAIL"
        else:
            state = "FAIL"
    elif pruned:
        state = "PRUNED"  # stopping: the pruner's decision is already final
    return TrialObservation(
        name=str(meta.get("name", "")), index=index, state=state,
        params=params if isinstance(params, dict) else {},
        value=value if state == "COMPLETE" else None,
        curve=learning_curve(spec, status, metric, resource), rungs=rungs,
        finished=terminal is not None, stop_requested=bool(spec.get("stop")),
        suspended=bool(spec.get("suspend")), reason=terminal[1] if terminal else "",
        metrics=reported_metrics(status))


def objective_values(trial: TrialObservation, metrics: list[str]) -> list[float] | None:
    """The trial's value of each objective (primary first), None when one is missing."""
    if trial.value is None:
        return None
    extra = [trial.metrics.get(metric) for metric in metrics[1:]]
    if any(value is None for value in extra):
        return None
    return [trial.value, *(v for v in extra if v is not None)]


def with_objectives(trials: list[TrialObservation],
                    metrics: list[str]) -> list[TrialObservation]:
    """Completed trials that lack an additional objective's metric count as failed.

    The primary metric is checked when the trial is observed; the others here, where the
    objectives are known (the engine and the planner both call this; it is idempotent).
    """
    out = []
    for trial in trials:
        if trial.state == "COMPLETE" and objective_values(trial, metrics) is None:
            missing = [m for m in metrics[1:] if m not in trial.metrics]
            trial = replace(trial, state="FAIL", value=None,
                            reason=f"{MISSING_OBJECTIVE_METRIC}: {', '.join(missing)} not reported")
        out.append(trial)
    return out


# -- parameters -> TrainJob fields ------------------------------------------------------------

def value_text(value: ParamValue) -> str:
    """A parameter as API text: floats without binary noise, in the decimal pattern."""
    if isinstance(value, float):
        return format(value, ".10g")
    return str(value)


def apply_params(template: dict[str, Any], parameters: list[Parameter],
                 params: dict[str, ParamValue]) -> dict[str, Any]:
    """The trial's TrainJob spec: the template with each parameter written to its field/env."""
    return apply_values(template, tuned_values(parameters, params))


def tuned_values(parameters: list[Parameter], params: Mapping[str, ParamValue]
                 ) -> list[TunedValue]:
    """Each parameter `params` has a value for, with where it goes and its value as text."""
    return [TunedValue(name=p.name, field=p.field, env=p.env, value=value_text(params[p.name]))
            for p in parameters if p.name in params]


def apply_values(template: dict[str, Any], values: list[TunedValue]) -> dict[str, Any]:
    """A TrainJob spec with each value written to its field (typed as the field is) or env."""
    spec = copy.deepcopy(template)
    for value in values:
        if value.env is not None:
            env = [e for e in spec.get("env") or [] if e.get("name") != value.env]
            spec["env"] = [*env, {"name": value.env, "value": value.value}]
            continue
        if value.field is None:
            continue
        section, key = value.field.split(".", 1)
        target = spec.setdefault(section, {})
        if value.field in INTEGER_FIELDS:
            target[key] = int(float(value.value))
        elif value.field in DECIMAL_FIELDS or value.field in CHOICE_FIELDS:
            target[key] = value.value
    return spec


def params_text(params: dict[str, ParamValue]) -> dict[str, str]:
    return {name: value_text(value) for name, value in sorted(params.items())}
