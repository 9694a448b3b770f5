"""TuneJob: hyperparameter search whose trials are TrainJobs.

The spec's parameter/objective/pruner blocks live in cogwork.api.tunejob_spec. The status is
deliberately small (counts, best trial); per-trial detail lives on the child TrainJobs, so the
object never grows with the number of trials (Katib's Suggestion outgrew etcd, kubeflow/katib
#1847).
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import ConfigDict, Field, model_validator

from cogwork.api.common import (
    MANAGED_BY_DESCRIPTION,
    ConditionList,
    CustomResource,
    JobStatus,
    ManagedBy,
    PrinterColumn,
    SpecModel,
    StatusModel,
    TunedFrom,
    cel,
    cel_unchanged,
    defaults_of,
    name_rules,
    validations,
)
from cogwork.api.trainjob import ObjectMeta, TrainJobSpec
from cogwork.api.tunejob_spec import (
    MAX_PARAMETERS,
    TARGET_FIELDS,
    Budget,
    Objective,
    Parameter,
    Promote,
    Pruner,
    Search,
)

# Trials are <name>-t<index> (index < 10000) and must be valid TrainJob names (<= 54).
MAX_NAME_LENGTH = 48
# The status lists at most this many Pareto-optimal trials (the status stays small).
MAX_PARETO_TRIALS = 10
Phase = Literal["Pending", "Suspended", "Running", "Succeeded", "Failed"]

# Condition types.
RUNNING = "Running"
SUSPENDED = "Suspended"
SUCCEEDED = "Succeeded"
FAILED = "Failed"


# (CEL check, message, field) that hold when spec.objective.additional is not empty.
MULTI_OBJECTIVE_RULES = (
    ("self.pruner.algorithm == 'none'",
     "spec.pruner.algorithm must be none with spec.objective.additional: Optuna does not prune "
     "multi-objective studies", ".pruner.algorithm"),
    ("self.search.algorithm != 'cmaes'",
     "spec.search.algorithm cmaes supports a single objective: use tpe, gp, random, qmc or "
     "grid with spec.objective.additional", ".search.algorithm"),
    ("self.engine == 'builtin'",
     "spec.engine katib does not support spec.objective.additional: Katib optimizes one "
     "objective (additionalMetricNames are only recorded)", ".engine"),
)


# Katib's Experiment has no suspend: a suspended TuneJob would keep its trials running.
KATIB_SUSPEND_RULE = ("!(has(self.suspend) && self.suspend) || self.engine != 'katib'",
                      "spec.suspend is not supported with spec.engine katib (a Katib "
                      "Experiment cannot be suspended)")


# Trials and the promoted TrainJob are the TuneJob's children: whichever controller runs the
# TuneJob runs them (on a MultiKueue worker, Cogwork there), so the template names none.
TRIAL_MANAGED_BY = ("spec.trialTemplate.managedBy must not be set: the trials are run where "
                    "the TuneJob is (set spec.managedBy on the TuneJob)")


def _multi_objective_errors(spec: TuneJobSpec) -> list[str]:
    """The messages of MULTI_OBJECTIVE_RULES that `spec` breaks (the pydantic twin of the CEL)."""
    if not spec.objective.additional:
        return []
    broken = [spec.pruner.algorithm != "none", spec.search.algorithm == "cmaes",
              spec.engine != "builtin"]
    return [rule[1] for rule, bad in zip(MULTI_OBJECTIVE_RULES, broken, strict=True) if bad]


def _spec_validations() -> dict[str, Any]:
    immutable = ["objective", "parameters", "search", "pruner", "engine", "trialTemplate",
                 "managedBy"]
    task_fields = "[" + ", ".join(f"'{f}'" for f in TARGET_FIELDS) + "]"
    rules = [
        # listType=map also enforces this, but only in the apiserver's strategy, after CEL.
        cel("self.parameters.all(p, self.parameters.exists_one(q, q.name == p.name))",
            "spec.parameters names must be unique", field_path=".parameters"),
        cel("self.search.algorithm != 'grid' || "
            "self.parameters.all(p, has(p.int) || has(p.categorical))",
            "spec.search.algorithm grid needs int or categorical parameters only",
            field_path=".search.algorithm"),
        cel(f"has(self.trialTemplate.task) || "
            f"self.parameters.all(p, !has(p.field) || !(p.field in {task_fields}))",
            "parameters that set task.* fields need spec.trialTemplate.task",
            field_path=".parameters"),
        cel("!self.trialTemplate.stop", "spec.trialTemplate.stop must be false",
            field_path=".trialTemplate.stop"),
        cel(KATIB_SUSPEND_RULE[0], KATIB_SUSPEND_RULE[1], field_path=".suspend"),
        cel("!has(self.trialTemplate.managedBy)", TRIAL_MANAGED_BY,
            field_path=".trialTemplate.managedBy", reason="FieldValueForbidden"),
    ]
    # Multi-objective: what Optuna and Katib cannot do with more than one objective.
    multi = "has(self.objective.additional) && size(self.objective.additional) > 0"
    rules += [cel(f"!({multi}) || {check}", message, field_path=path)
              for check, message, path in MULTI_OBJECTIVE_RULES]
    rules += [cel(cel_unchanged(path), f"spec.{path} is immutable", field_path=f".{path}",
                  reason="FieldValueForbidden") for path in immutable]
    return validations(*rules)


class TuneJobSpec(SpecModel):
    """Desired state of a TuneJob. Mutable: suspend, budget, promote, activeDeadlineSeconds,
    ttlSecondsAfterFinished; the rest is immutable."""

    model_config = ConfigDict(json_schema_extra=_spec_validations())

    suspend: bool = Field(default=False, description="Start no new trials and suspend the "
                                                     "running ones (Kueue); resume continues.")
    managed_by: ManagedBy | None = Field(default=None, description=MANAGED_BY_DESCRIPTION)
    objective: Objective = Field(default_factory=Objective,
                                 json_schema_extra=defaults_of(Objective),
                                 description="Metric and direction the trials are ranked by.")
    parameters: list[Parameter] = Field(
        min_length=1, max_length=MAX_PARAMETERS,
        json_schema_extra={"x-kubernetes-list-type": "map",
                           "x-kubernetes-list-map-keys": ["name"]},
        description="The search space: at least one parameter, unique names.")
    search: Search = Field(default_factory=Search, json_schema_extra=defaults_of(Search),
                           description="Sampler and seed.")
    pruner: Pruner = Field(default_factory=Pruner, json_schema_extra=defaults_of(Pruner),
                           description="Early stopping from the trials' learning curves.")
    budget: Budget = Field(default_factory=Budget,
                           json_schema_extra=defaults_of(Budget),
                           description="Trial counts.")
    engine: Literal["builtin", "katib"] = Field(
        default="builtin", description="builtin (Optuna in the operator, stateless) or katib "
                                       "(a Katib Experiment whose trials are TrainJobs; "
                                       "needs Katib installed).")
    trial_template: TrainJobSpec = Field(description="The TrainJob spec every trial starts "
                                                     "from; parameters overwrite their fields.")
    promote: Promote = Field(default_factory=Promote, json_schema_extra=defaults_of(Promote),
                             description="Final TrainJob with the best parameters.")
    active_deadline_seconds: int | None = Field(
        default=None, ge=1, description="Fail the search (and stop its trials) this long after "
                                        "it started; suspend resets the clock.")
    ttl_seconds_after_finished: int | None = Field(
        default=None, ge=0, description="Delete the TuneJob this long after it finished; its "
                                        "trials and the promoted TrainJob it owns go with it.")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        names = [p.name for p in self.parameters]
        if len(set(names)) != len(names):
            raise ValueError("spec.parameters names must be unique")
        if self.search.algorithm == "grid" and any(
                p.int_range is None and p.categorical is None for p in self.parameters):
            raise ValueError("spec.search.algorithm grid needs int or categorical parameters "
                             "only")
        if self.trial_template.task is None and any(p.field for p in self.parameters):
            raise ValueError("parameters that set task.* fields need spec.trialTemplate.task")
        if self.trial_template.stop:
            raise ValueError("spec.trialTemplate.stop must be false")
        if self.trial_template.managed_by is not None:
            raise ValueError(TRIAL_MANAGED_BY)
        if self.suspend and self.engine == "katib":
            raise ValueError(KATIB_SUSPEND_RULE[1])
        for message in _multi_objective_errors(self):
            raise ValueError(message)
        return self


class TrialCounts(StatusModel):
    """Trials by state."""

    created: int = Field(default=0, description="Trials created so far.")
    running: int = Field(default=0, description="Trials not finished (pending or training).")
    completed: int = Field(default=0, description="Trials that trained to the end.")
    pruned: int = Field(default=0, description="Trials stopped early by the pruner.")
    failed: int = Field(default=0, description="Trials that failed.")


class BestTrial(StatusModel):
    name: str = Field(description="The trial TrainJob.")
    index: int = Field(description="Trial index.")
    value: float = Field(description="Its objective value (the primary objective's).")
    params: dict[str, str] = Field(default_factory=dict, description="Its parameters.")
    values: dict[str, float] | None = Field(
        default=None, description="Every objective's value by metric (multi-objective only).")


class ParetoTrial(StatusModel):
    """A trial no other completed trial beats on every objective."""

    name: str = Field(description="The trial TrainJob.")
    index: int = Field(description="Trial index.")
    values: dict[str, float] = Field(description="Its value of each objective, by metric.")




class TuneJobStatus(JobStatus):
    """Observed state of a TuneJob, written only by the operator."""

    tuned_from: TunedFrom | None = Field(
        default=None, description="What spec.trialTemplate.fromTuneJob resolved to: the "
                                  "parameters every trial starts from.")
    phase: Phase | None = Field(default=None, description="Summary of the conditions: Pending, "
                                "Suspended, Running, Succeeded or Failed.")
    conditions: ConditionList = Field(default_factory=list,
                                      description="Running, Suspended, Succeeded, Failed.")
    trials: TrialCounts | None = Field(default=None, description="Trials by state.")
    trials_text: str | None = Field(default=None,
                                    description="\"finished/maxTrials\" for printing.")
    best_trial: BestTrial | None = Field(
        default=None, description="Best finished trial on the primary objective (with "
                                   "additional objectives: the best of the Pareto front).")
    pareto_front: list[ParetoTrial] | None = Field(
        default=None, max_length=MAX_PARETO_TRIALS,
        description="Multi-objective only: the Pareto-optimal trials, best primary value "
                    "first, at most 10 (paretoFrontSize counts them all).")
    pareto_front_size: int | None = Field(default=None,
                                          description="Trials on the Pareto front.")
    promoted_train_job: str | None = Field(default=None,
                                           description="The final TrainJob, once created.")


class TuneJob(StatusModel):
    """A whole TuneJob object as read from the cluster or a manifest."""

    api_version: Literal["cogwork.dev/v1alpha1"] = "cogwork.dev/v1alpha1"
    kind: Literal["TuneJob"] = "TuneJob"
    metadata: ObjectMeta
    spec: TuneJobSpec
    status: TuneJobStatus = Field(default_factory=TuneJobStatus)

    @model_validator(mode="after")
    def _short_name(self) -> Self:
        if len(self.metadata.name) > MAX_NAME_LENGTH:
            raise ValueError(NAME_LENGTH_MESSAGE)
        if self.spec.trial_template.from_tune_job == self.metadata.name:
            raise ValueError(SELF_REFERENCE_MESSAGE)
        return self


NAME_PATTERN_MESSAGE = ("metadata.name must be a DNS-1035 label (lowercase letters, digits and "
                        "'-', starting with a letter): trials are TrainJobs named after it")
SELF_REFERENCE_MESSAGE = ("spec.trialTemplate.fromTuneJob names this TuneJob: a search cannot "
                          "start from its own best trial")
NAME_LENGTH_MESSAGE = (f"metadata.name must be at most {MAX_NAME_LENGTH} characters: trial "
                       "TrainJobs <name>-t<index> must fit in 54")

TUNEJOB_RESOURCE = CustomResource(
    kind="TuneJob",
    plural="tunejobs",
    singular="tunejob",
    # Not "tunejob"/"exp": Katib's Experiment and Kubeflow's OptimizationJob may be installed.
    short_names=("cwtune",),
    spec_model=TuneJobSpec,
    status_model=TuneJobStatus,
    description="Hyperparameter search: trials are TrainJobs proposed by Optuna samplers, "
                "pruned early from their learning curves; the best can be promoted.",
    printer_columns=(
        PrinterColumn("Phase", ".status.phase", "string", "Derived from the conditions."),
        PrinterColumn("Trials", ".status.trialsText", "string", "Finished/maximum trials."),
        PrinterColumn("Pruned", ".status.trials.pruned", "integer", "Trials pruned."),
        PrinterColumn("Best", ".status.bestTrial.value", "number", "Best objective value."),
        PrinterColumn("Best-Trial", ".status.bestTrial.name", "string", "Best trial.",
                      priority=1),
        PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
    ),
    root_validations=(
        *name_rules(MAX_NAME_LENGTH, NAME_PATTERN_MESSAGE, NAME_LENGTH_MESSAGE),
        cel("!has(self.spec.trialTemplate.fromTuneJob) || "
            "self.spec.trialTemplate.fromTuneJob != self.metadata.name",
            SELF_REFERENCE_MESSAGE, field_path=".spec.trialTemplate.fromTuneJob"),
    ),
)
