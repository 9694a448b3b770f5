"""Building blocks of the TuneJob spec (see cogwork.api.tunejob for the whole object).

As for TrainJob, every rule lives twice: as CEL in the CRD (the apiserver rejects a bad object
at apply, naming the field) and as a pydantic validator (`cogwork run` rejects the same object
offline).

Parameters reach trials as typed TrainJob fields (`field: task.learningRate`) or environment
variables (`env: LR`), never by text substitution: the allowed fields and the distributions each
accepts are listed here, so a bad mapping fails at apply, not inside a trial.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Self

from pydantic import ConfigDict, Field, field_validator, model_validator

from cogwork.api import contract
from cogwork.api.common import DECIMAL_PATTERN, DecimalString, SpecModel, cel, validations
from cogwork.api.trainjob_spec import cel_finite, finite_message, finite_rule, is_finite_decimal

# Signed decimal as a string (bounds of a uniform parameter, an objective goal).
SIGNED_DECIMAL_PATTERN = r"^[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?$"
SignedDecimalString = Annotated[str, Field(pattern=SIGNED_DECIMAL_PATTERN, max_length=32)]

# TrainJob fields a parameter may set, by the kind of value they take.
DECIMAL_FIELDS = ("task.learningRate", "task.momentum", "task.weightDecay")
INTEGER_FIELDS = ("task.batchSize", "task.hiddenSize", "task.epochs", "task.seed")
CHOICE_FIELDS: dict[str, tuple[str, ...]] = {
    "task.optimizer": ("sgd", "adam", "adamw"),
    "task.model": ("mlp", "cnn"),
}
TARGET_FIELDS = (*DECIMAL_FIELDS, *INTEGER_FIELDS, *CHOICE_FIELDS)
DISTRIBUTIONS = ("uniform", "logUniform", "int", "categorical")
MAX_PARAMETERS = 32
MAX_CATEGORIES = 64
MAX_ADDITIONAL_OBJECTIVES = 4
INTEGER_PATTERN = r"^[0-9]+$"


def _cel_list(items: tuple[str, ...] | list[str]) -> str:
    return "[" + ", ".join(f"'{item}'" for item in items) + "]"


def _finite(value: str | None) -> str | None:
    if value is not None and not is_finite_decimal(value):
        raise ValueError(f"{finite_message()} (got {value})")
    return value


_FINITE = validations(finite_rule())


class FloatRange(SpecModel):
    """A continuous range, bounds as decimal strings (the API has no floats)."""

    model_config = ConfigDict(json_schema_extra=validations(cel(
        "double(self.min) < double(self.max)", "min must be less than max", field_path=".min")))

    min: SignedDecimalString = Field(description="Lower bound, e.g. \"0.001\" (finite).",
                                     json_schema_extra=_FINITE)
    max: SignedDecimalString = Field(description="Upper bound, e.g. \"0.3\" (finite).",
                                     json_schema_extra=_FINITE)

    _finite_bounds = field_validator("min", "max")(_finite)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if float(self.min) >= float(self.max):
            raise ValueError(f"min must be less than max (min {self.min}, max {self.max})")
        return self


class LogRange(SpecModel):
    """A continuous range sampled on a log scale; both bounds positive."""

    model_config = ConfigDict(json_schema_extra=validations(
        cel("double(self.min) < double(self.max)", "min must be less than max",
            field_path=".min"),
        cel("double(self.min) > 0.0", "min of a logUniform range must be greater than 0",
            field_path=".min"),
    ))

    min: DecimalString = Field(description="Lower bound (> 0), e.g. \"1e-4\".",
                               json_schema_extra=_FINITE)
    max: DecimalString = Field(description="Upper bound, e.g. \"0.3\" (finite).",
                               json_schema_extra=_FINITE)

    _finite_bounds = field_validator("min", "max")(_finite)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if float(self.min) <= 0:
            raise ValueError("min of a logUniform range must be greater than 0")
        if float(self.min) >= float(self.max):
            raise ValueError(f"min must be less than max (min {self.min}, max {self.max})")
        return self


class IntRange(SpecModel):
    """Integers from min to max inclusive, every `step`, or on a log scale."""

    model_config = ConfigDict(json_schema_extra=validations(
        cel("self.min < self.max", "min must be less than max", field_path=".min"),
        cel("!self.log || self.min >= 1", "min of a log int range must be at least 1",
            field_path=".min"),
        cel("!self.log || self.step == 1", "step must be 1 when log is true",
            field_path=".step"),
    ))

    min: int = Field(ge=-(2**31), le=2**31 - 1, description="Smallest value.")
    max: int = Field(ge=-(2**31), le=2**31 - 1, description="Largest value.")
    step: int = Field(default=1, ge=1, le=2**31 - 1, description="Spacing of the values.")
    log: bool = Field(default=False, description="Sample on a log scale (step must be 1).")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.min >= self.max:
            raise ValueError(f"min must be less than max (min {self.min}, max {self.max})")
        if self.log and self.min < 1:
            raise ValueError("min of a log int range must be at least 1")
        if self.log and self.step != 1:
            raise ValueError("step must be 1 when log is true")
        return self


class Categorical(SpecModel):
    """A choice among listed values (strings; integer and decimal fields parse them)."""

    values: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        min_length=1, max_length=MAX_CATEGORIES,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="The choices, at least one, no duplicates.")

    @model_validator(mode="after")
    def _unique(self) -> Self:
        if len(set(self.values)) != len(self.values):
            raise ValueError("categorical values must be unique")
        return self


def _parameter_validations() -> dict[str, Any]:
    one_of = " + ".join(f"(has(self.{d}) ? 1 : 0)" for d in DISTRIBUTIONS)
    decimal, integer = _cel_list(DECIMAL_FIELDS), _cel_list(INTEGER_FIELDS)
    rules = [
        cel(f"{one_of} == 1", "a parameter needs exactly one of uniform, logUniform, int or "
            "categorical"),
        cel("has(self.field) != has(self.env)", "a parameter needs exactly one of field or env"),
        cel(f"!has(self.field) || !(self.field in {decimal}) || !has(self.int)",
            "decimal fields (task.learningRate, task.momentum, task.weightDecay) take uniform, "
            "logUniform or categorical", field_path=".field"),
        cel(f"!has(self.field) || !(self.field in {decimal}) || !has(self.uniform) || "
            "double(self.uniform.min) >= 0.0",
            "decimal fields take non-negative values: uniform.min must be >= 0",
            field_path=".uniform.min"),
        cel(f"!has(self.field) || !(self.field in {decimal}) || !has(self.categorical) || "
            f"self.categorical.values.all(v, v.matches(r'{DECIMAL_PATTERN}') && "
            f"{cel_finite('v')})",
            "categorical values of a decimal field must be finite non-negative decimals",
            field_path=".categorical.values"),
        cel(f"!has(self.field) || !(self.field in {integer}) || has(self.int) || "
            "has(self.categorical)",
            "integer fields (task.batchSize, task.hiddenSize, task.epochs, task.seed) take int "
            "or categorical", field_path=".field"),
        cel(f"!has(self.field) || !(self.field in {integer}) || !has(self.int) || "
            "self.int.min >= 1 || self.field == 'task.seed'",
            "int.min must be at least 1 for this field", field_path=".int.min"),
        cel(f"!has(self.field) || !(self.field in {integer}) || !has(self.categorical) || "
            f"self.categorical.values.all(v, v.matches(r'{INTEGER_PATTERN}'))",
            "categorical values of an integer field must be integers",
            field_path=".categorical.values"),
    ]
    for name, choices in CHOICE_FIELDS.items():
        rules.append(cel(
            f"!has(self.field) || self.field != '{name}' || (has(self.categorical) && "
            f"self.categorical.values.all(v, v in {_cel_list(choices)}))",
            f"{name} takes categorical values among {', '.join(choices)}",
            field_path=".categorical"))
    return validations(*rules)


class Parameter(SpecModel):
    """One searched parameter: a distribution and where its value goes in each trial."""

    model_config = ConfigDict(json_schema_extra=_parameter_validations())

    name: str = Field(pattern=r"^[a-zA-Z][-_a-zA-Z0-9]*$", max_length=63,
                      description="Parameter name (unique), as shown in status.bestTrial.params.")
    field: Literal[TARGET_FIELDS] | None = Field(  # type: ignore[valid-type]
        default=None,
        description="The trial TrainJob field the value sets: task.learningRate, task.momentum, "
                    "task.weightDecay (decimal), task.batchSize, task.hiddenSize, task.epochs, "
                    "task.seed (integer), task.optimizer, task.model (categorical).")
    env: str | None = Field(default=None, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$",
                            max_length=256,
                            description="An environment variable of the trial that receives the "
                                        "value as text (for script trials).")
    uniform: FloatRange | None = Field(default=None, description="Uniform over [min, max].")
    log_uniform: LogRange | None = Field(default=None,
                                         description="Log-uniform over [min, max], min > 0.")
    int_range: IntRange | None = Field(default=None, alias="int",
                                       description="Integers in [min, max].")
    categorical: Categorical | None = Field(default=None, description="One of the values.")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        chosen = [d for d in ("uniform", "log_uniform", "int_range", "categorical")
                  if getattr(self, d) is not None]
        if len(chosen) != 1:
            raise ValueError("a parameter needs exactly one of uniform, logUniform, int or "
                             "categorical")
        if (self.field is None) == (self.env is None):
            raise ValueError("a parameter needs exactly one of field or env")
        if self.env is not None and contract.is_reserved_env_name(self.env):
            raise ValueError(f"env {self.env} is reserved for the operator")
        if self.field is not None:
            self._check_field(self.field)
        return self

    def _check_field(self, name: str) -> None:
        values = self.categorical.values if self.categorical is not None else []
        if name in DECIMAL_FIELDS:
            if self.int_range is not None:
                raise ValueError("decimal fields (task.learningRate, task.momentum, "
                                 "task.weightDecay) take uniform, logUniform or categorical")
            if self.uniform is not None and float(self.uniform.min) < 0:
                raise ValueError("decimal fields take non-negative values: uniform.min must "
                                 "be >= 0")
            if any(not re.fullmatch(DECIMAL_PATTERN, v) or not is_finite_decimal(v)
                   for v in values):
                raise ValueError("categorical values of a decimal field must be finite "
                                 "non-negative decimals")
        elif name in INTEGER_FIELDS:
            if self.int_range is None and self.categorical is None:
                raise ValueError("integer fields (task.batchSize, task.hiddenSize, task.epochs, "
                                 "task.seed) take int or categorical")
            if self.int_range is not None and self.int_range.min < 1 and name != "task.seed":
                raise ValueError("int.min must be at least 1 for this field")
            if any(not re.fullmatch(INTEGER_PATTERN, v) for v in values):
                raise ValueError("categorical values of an integer field must be integers")
        else:
            choices = CHOICE_FIELDS[name]
            if self.categorical is None or any(v not in choices for v in values):
                raise ValueError(f"{name} takes categorical values among {', '.join(choices)}")


Direction = Literal["maximize", "minimize"]


class AdditionalObjective(SpecModel):
    """A further objective of a multi-objective search: optimized, never a stopping goal."""

    metric: str = Field(min_length=1, max_length=63,
                        description="A metric the trial reports, like spec.objective.metric.")
    direction: Direction = Field(description="maximize or minimize.")


class Objective(SpecModel):
    """What the trials are ranked by: a metric the trainer reports, and optionally more.

    The primary objective (metric, direction, goal) ranks bestTrial, drives the goal and picks
    the promoted trial; `additional` objectives make the search multi-objective (a Pareto front).
    """

    model_config = ConfigDict(json_schema_extra=validations(cel(
        "!has(self.additional) || self.additional.all(a, a.metric != self.metric && "
        "self.additional.exists_one(b, b.metric == a.metric))",
        "spec.objective.additional metrics must be unique and differ from "
        "spec.objective.metric", field_path=".additional")))

    metric: str = Field(default="val_accuracy", min_length=1, max_length=63,
                        description="A metric in the trial's status.metrics (e.g. val_accuracy, "
                                    "loss), or accuracy / macroF1 from status.evaluation.")
    direction: Direction = Field(default="maximize", description="maximize or minimize.")
    goal: SignedDecimalString | None = Field(
        default=None, description="Stop starting trials once a trial reaches this value "
                                  "(primary objective only; finite).",
        json_schema_extra=validations(finite_rule("spec.objective.goal")))
    additional: list[AdditionalObjective] = Field(
        default_factory=list, max_length=MAX_ADDITIONAL_OBJECTIVES,
        json_schema_extra={"x-kubernetes-list-type": "map",
                           "x-kubernetes-list-map-keys": ["metric"]},
        description="Further objectives (at most 4) for a multi-objective search: trials are "
                    "compared by Pareto dominance; needs pruner none and a search algorithm "
                    "other than cmaes; builtin engine only.")

    @field_validator("goal")
    @classmethod
    def _finite_goal(cls, goal: str | None) -> str | None:
        if goal is not None and not is_finite_decimal(goal):
            raise ValueError(f"{finite_message('spec.objective.goal')} (got {goal})")
        return goal

    @model_validator(mode="after")
    def _unique(self) -> Self:
        if len(set(self.metrics)) != len(self.metrics):
            raise ValueError("spec.objective.additional metrics must be unique and differ from "
                             "spec.objective.metric")
        return self

    @property
    def metrics(self) -> list[str]:
        """Every objective's metric, the primary first."""
        return [self.metric, *(a.metric for a in self.additional)]

    @property
    def directions(self) -> list[Direction]:
        return [self.direction, *(a.direction for a in self.additional)]


class Search(SpecModel):
    """The sampler that proposes parameters."""

    algorithm: Literal["tpe", "gp", "cmaes", "qmc", "random", "grid"] = Field(
        default="tpe", description="tpe, gp, cmaes, qmc, random or grid (grid: int and "
                                   "categorical parameters only).")
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1,
                             description="Base seed; each trial's sampler seed derives from it "
                                         "and the trial index (default: from the TuneJob uid).")
    startup_trials: int = Field(default=4, ge=0, le=1000,
                                description="Random trials before tpe/gp/cmaes model the space.")


class Pruner(SpecModel):
    """Early stopping of unpromising trials, decided from their reported learning curves."""

    model_config = ConfigDict(json_schema_extra=validations(
        cel("self.algorithm != 'hyperband' || has(self.maxResource)",
            "spec.pruner.maxResource is required for hyperband", field_path=".maxResource",
            reason="FieldValueRequired"),
        cel("!has(self.maxResource) || self.maxResource > self.minResource",
            "spec.pruner.maxResource must be greater than spec.pruner.minResource",
            field_path=".maxResource"),
    ))

    algorithm: Literal["none", "median", "asha", "hyperband"] = Field(
        default="none", description="none, median, asha or hyperband.")
    resource: Literal["epoch", "step"] = Field(
        default="epoch", description="Unit of the curve: completed epochs or optimizer steps.")
    min_resource: int = Field(default=1, ge=1, le=10_000_000,
                              description="First rung (asha, hyperband) or warm-up (median), in "
                                          "resource units.")
    max_resource: int | None = Field(default=None, ge=2, le=10_000_000,
                                     description="Full budget of a trial (hyperband).")
    reduction_factor: int = Field(default=3, ge=2, le=100,
                                  description="Keep 1/reductionFactor of the trials per rung.")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.algorithm == "hyperband" and self.max_resource is None:
            raise ValueError("spec.pruner.maxResource is required for hyperband")
        if self.max_resource is not None and self.max_resource <= self.min_resource:
            raise ValueError("spec.pruner.maxResource must be greater than "
                             "spec.pruner.minResource")
        return self


class Budget(SpecModel):
    """How many trials, how many at once, how many failures are tolerated."""

    model_config = ConfigDict(json_schema_extra=validations(cel(
        "self.parallelTrials <= self.maxTrials",
        "spec.budget.parallelTrials must be less than or equal to spec.budget.maxTrials",
        field_path=".parallelTrials")))

    max_trials: int = Field(default=10, ge=1, le=10_000, description="Trials in total.")
    parallel_trials: int = Field(default=1, ge=1, le=1_000, description="Trials at once.")
    max_failed_trials: int = Field(default=3, ge=0, le=10_000,
                                   description="The TuneJob fails when more trials fail.")

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.parallel_trials > self.max_trials:
            raise ValueError("spec.budget.parallelTrials must be less than or equal to "
                             "spec.budget.maxTrials")
        return self


class Promote(SpecModel):
    """Create a final TrainJob with the best parameters when the search succeeds."""

    enabled: bool = Field(default=False, description="Create the final TrainJob.")
    name: str | None = Field(default=None, pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$",
                             max_length=54,
                             description="Its name (default <tunejob>-best).")
