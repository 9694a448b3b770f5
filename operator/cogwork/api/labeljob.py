"""LabelJob: pre-label a pool, auto-accept what is certified, route the doubtful to people.

The spec's building blocks live in cogwork.api.labeljob_spec. Transition rules (immutability)
exist only in CEL; every create-time rule is also a pydantic validator.
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
    ResolvedInput,
    SpecModel,
    StatusModel,
    cel,
    cel_unchanged,
    defaults_of,
    name_rules,
    validations,
)
from cogwork.api.labeljob_spec import (
    AutoAcceptSpec,
    InferenceSpec,
    LabelErrorsSpec,
    ModelSource,
    OutputSpec,
    PoolSpec,
    ReviewSpec,
    SeedSpec,
    SinkSpec,
)
from cogwork.api.trainjob import (
    DEFAULT_IMAGE,
    MAX_NAME_LENGTH,
    NAME_LENGTH_MESSAGE,
    NAME_PATTERN_MESSAGE,
    ObjectMeta,
)

DEMO_ONLY = ("needs spec.pool.dataset: only a bundled dataset's hidden labels can answer for "
             "the annotators; give a CSV path for your own pool")
ROUNDS_NEED_TRAINJOB = ("needs spec.model.fromTrainJob: each round retrains a copy of that "
                        "TrainJob on the labels gathered so far")
ROUNDS_NEED_PEOPLE = ("needs spec.sink.labelStudio to bring people's labels back (or a bundled "
                      "spec.pool.dataset, whose hidden labels answer in a demo)")
ENTRYPOINT_NEEDS_POOL_FILE = ("spec.model.entrypoint needs spec.pool.path: its score pods run "
                              "in spec.model.image, which holds no bundled dataset")
# Mutable: suspend, ttlSecondsAfterFinished, review (more rounds or labels may be granted).
IMMUTABLE = ("image", "imagePullPolicy", "model", "pool", "seed", "inference", "autoAccept",
             "labelErrors", "sink", "output", "randomSeed", "activeDeadlineSeconds", "managedBy")


def _spec_validations() -> dict[str, Any]:
    rules = [
        cel("!has(self.seed) || !has(self.seed.count) || has(self.pool.dataset)",
            f"spec.seed.count {DEMO_ONLY}", field_path=".seed.count"),
        cel("!has(self.autoAccept) || !has(self.autoAccept.validation.humanBudget)"
            " || has(self.pool.dataset)",
            f"spec.autoAccept.validation.humanBudget {DEMO_ONLY}",
            field_path=".autoAccept.validation.humanBudget"),
    ]
    rules.append(cel("!has(self.model.entrypoint) || has(self.pool.path)",
                     ENTRYPOINT_NEEDS_POOL_FILE, field_path=".model.entrypoint"))
    rules += [
        cel("self.review.maxRounds <= 1 || has(self.model.fromTrainJob)",
            f"spec.review.maxRounds > 1 {ROUNDS_NEED_TRAINJOB}", field_path=".review.maxRounds"),
        cel("self.review.maxRounds <= 1 || has(self.pool.dataset) || "
            "(has(self.sink) && has(self.sink.labelStudio))",
            f"spec.review.maxRounds > 1 {ROUNDS_NEED_PEOPLE}", field_path=".review.maxRounds"),
    ]
    rules += [cel(cel_unchanged(path), f"spec.{path} is immutable", field_path=f".{path}",
                  reason="FieldValueForbidden") for path in IMMUTABLE]
    return validations(*rules)


class LabelJobSpec(SpecModel):
    """Desired state of a LabelJob. Mutable: suspend, review, ttlSecondsAfterFinished."""

    model_config = ConfigDict(json_schema_extra=_spec_validations())

    suspend: bool = Field(default=False, description="Suspend: delete the pods, keep outputs.")
    managed_by: ManagedBy | None = Field(default=None, description=MANAGED_BY_DESCRIPTION)
    image: str = Field(default=DEFAULT_IMAGE, min_length=1, max_length=1024,
                       description="Container image of the labeling pods (the trainer image).")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        default="IfNotPresent", description="Image pull policy of the labeling pods.")
    model: ModelSource = Field(description="The model that pre-labels the pool.")
    pool: PoolSpec = Field(description="The unlabeled items.")
    seed: SeedSpec | None = Field(default=None, description="Items already labeled.")
    inference: InferenceSpec = Field(
        default_factory=InferenceSpec, json_schema_extra=defaults_of(InferenceSpec),
        description="Sharded pre-labeling pods.")
    auto_accept: AutoAcceptSpec | None = Field(
        default=None, description="Certified auto-accept; without it nothing is accepted and "
                                  "every item is a review candidate.")
    review: ReviewSpec = Field(
        default_factory=ReviewSpec, json_schema_extra=defaults_of(ReviewSpec),
        description="Review batches.")
    label_errors: LabelErrorsSpec = Field(
        default_factory=LabelErrorsSpec, json_schema_extra=defaults_of(LabelErrorsSpec),
        description="Label-error detection.")
    sink: SinkSpec | None = Field(default=None, description="Where review tasks go.")
    output: OutputSpec = Field(
        default_factory=OutputSpec, json_schema_extra=defaults_of(OutputSpec),
        description="Where outputs go.")
    random_seed: int = Field(default=0, ge=0, le=2**31 - 1,
                             description="Seed of every random choice (sampling, folds).")
    active_deadline_seconds: int | None = Field(default=None, ge=1,
                                                description="Fail the job after this long.")
    ttl_seconds_after_finished: int | None = Field(
        default=None, ge=0, description="Delete the finished job this long after it ended.")

    @model_validator(mode="after")
    def _demo_only_sources(self) -> Self:
        if self.model.entrypoint is not None and self.pool.path is None:
            raise ValueError(ENTRYPOINT_NEEDS_POOL_FILE)
        if self.review.max_rounds > 1:
            if self.model.from_train_job is None:
                raise ValueError(f"spec.review.maxRounds > 1 {ROUNDS_NEED_TRAINJOB}")
            if self.pool.dataset is None and (self.sink is None or self.sink.label_studio is None):
                raise ValueError(f"spec.review.maxRounds > 1 {ROUNDS_NEED_PEOPLE}")
        if self.pool.dataset is None:
            if self.seed is not None and self.seed.count is not None:
                raise ValueError(f"spec.seed.count {DEMO_ONLY}")
            if self.auto_accept is not None and self.auto_accept.validation.human_budget:
                raise ValueError(f"spec.autoAccept.validation.humanBudget {DEMO_ONLY}")
        return self


Phase = Literal["Pending", "Suspended", "Running", "Succeeded", "Failed"]
# Condition types.
CREATED, RUNNING, CERTIFIED, SINK_READY = "Created", "Running", "Certified", "SinkReady"
SUCCEEDED, FAILED, SUSPENDED = "Succeeded", "Failed", "Suspended"



class LabelCounts(StatusModel):
    total: int | None = Field(default=None, description="Items in the pool.")
    predicted: int | None = Field(default=None, description="Items scored by the model.")
    auto_accepted: int | None = Field(default=None, description="Model labels accepted.")
    routed_to_review: int | None = Field(default=None, description="Items sent to people.")
    human_labeled: int | None = Field(default=None, description="Labels people gave.")
    flagged_errors: int | None = Field(default=None,
                                       description="Seed/human labels flagged as likely wrong.")


class LabelOutputs(StatusModel):
    labels: str | None = Field(default=None, description="labels.csv (the labels table).")
    dataset: str | None = Field(default=None, description="dataset.npz (TrainJob data).")
    review_tasks: str | None = Field(default=None, description="review-tasks.json.")
    label_issues: str | None = Field(default=None, description="label-issues.csv.")
    calibration: str | None = Field(default=None, description="calibration.json.")


class LabelJobStatus(JobStatus):
    """Observed state of a LabelJob, written only by the operator."""

    phase: Phase | None = Field(default=None, description="Summary of the conditions.")
    conditions: ConditionList = Field(
        default_factory=list, description="Created, Running, Certified (False with the bound "
                                          "reached when the target cannot be certified), "
                                          "SinkReady, Suspended, Succeeded, Failed.")
    counts: LabelCounts | None = Field(default=None, description="Item counts.")
    predicted_text: str | None = Field(default=None, description="\"predicted/total\".")
    threshold: float | None = Field(default=None, description="Auto-accept score threshold.")
    certified_lower_bound: float | None = Field(
        default=None, description="Clopper-Pearson lower bound on the auto-accepted precision "
                                  "(the best bound reached when not certified).")
    coverage: float | None = Field(default=None, description="Fraction of the pool accepted.")
    round: int | None = Field(default=None, description="Current review round (0-based; "
                                                        "spec.review.maxRounds).")
    items_per_second: float | None = Field(default=None, description="Pre-labeling rate.")
    model_version: str | None = Field(default=None, description="Model that labeled.")
    outputs: LabelOutputs | None = Field(default=None, description="Output locations.")
    model_from: ResolvedInput | None = Field(
        default=None, description="What spec.model.fromTrainJob resolved to: the model this "
                                  "job labels with.")


class LabelJob(StatusModel):
    """A whole LabelJob object as read from the cluster or a manifest."""

    api_version: Literal["cogwork.dev/v1alpha1"] = "cogwork.dev/v1alpha1"
    kind: Literal["LabelJob"] = "LabelJob"
    metadata: ObjectMeta
    spec: LabelJobSpec
    status: LabelJobStatus = Field(default_factory=LabelJobStatus)


LABELJOB_RESOURCE = CustomResource(
    kind="LabelJob",
    plural="labeljobs",
    singular="labeljob",
    short_names=("cwlabel", "cwlj"),
    spec_model=LabelJobSpec,
    status_model=LabelJobStatus,
    description="Pre-label a pool with a model in sharded pods, auto-accept labels above a "
                "certified-precision threshold, route the most useful rest to review, flag "
                "likely label errors.",
    printer_columns=(
        PrinterColumn("Phase", ".status.phase", "string", "Derived from the conditions."),
        PrinterColumn("Predicted", ".status.predictedText", "string", "Scored/total items."),
        PrinterColumn("Auto", ".status.counts.autoAccepted", "integer",
                      "Auto-accepted labels."),
        PrinterColumn("Review", ".status.counts.routedToReview", "integer",
                      "Items routed to people."),
        PrinterColumn("Precision>=", ".status.certifiedLowerBound", "number",
                      "Certified lower bound on auto-accepted precision."),
        PrinterColumn("Round", ".status.round", "integer", "Current review round.",
                      priority=1),
        PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
    ),
    root_validations=(
        *name_rules(MAX_NAME_LENGTH, NAME_PATTERN_MESSAGE, NAME_LENGTH_MESSAGE),
    ),
)
