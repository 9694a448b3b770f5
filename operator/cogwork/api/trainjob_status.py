"""TrainJob status: conditions are the truth; phase and the *Text fields are derived for people.

The progress/metrics/evaluation shapes follow the report body of docs/pod-contract.md (and so
Kubeflow's trainerStatus, KEP-2779).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from cogwork.api.common import (
    ConditionList,
    JobStatus,
    ResolvedInput,
    StatusModel,
    TunedFrom,
)

Phase = Literal["Pending", "Suspended", "Running", "Restarting", "Succeeded", "Failed"]

# Condition types.
CREATED = "Created"
RUNNING = "Running"
SUSPENDED = "Suspended"
RESTARTING = "Restarting"
SUCCEEDED = "Succeeded"
FAILED = "Failed"


class Metric(StatusModel):
    name: str = Field(description="Metric name, e.g. loss or val_accuracy.")
    value: str = Field(description="Value as a decimal string.")


class MetricPoint(StatusModel):
    step: int = Field(description="Global optimizer step of the values.")
    epoch: int | None = Field(default=None, description="Completed epochs, when reported.")
    values: dict[str, str] = Field(default_factory=dict, description="Metric name -> value.")


class MetricsStatus(StatusModel):
    """Latest metrics and a thinned history (at most 10 points, first and last kept)."""

    latest: list[Metric] = Field(default_factory=list, description="Most recent values.")
    history: list[MetricPoint] = Field(default_factory=list,
                                       description="A few points of the curve, oldest first.")


class ProgressStatus(StatusModel):
    """Training progress as last reported by rank 0."""

    step: int | None = Field(default=None, description="Global optimizer step.")
    total_steps: int | None = Field(default=None, description="Steps of the whole run.")
    epoch: int | None = Field(default=None, description="Current epoch.")
    progress_percentage: int | None = Field(default=None, ge=0, le=100,
                                            description="Percent of totalSteps done.")
    estimated_remaining_seconds: int | None = Field(default=None,
                                                    description="Estimated time to finish.")
    samples_per_second: float | None = Field(default=None, description="Training throughput.")
    resumed_from_step: int | None = Field(default=None,
                                          description="Step of the checkpoint last resumed from.")
    update_time: str | None = Field(default=None, json_schema_extra={"format": "date-time"},
                                    description="When the operator received the report.")
    resumed_at: str | None = Field(default=None, json_schema_extra={"format": "date-time"},
                                   description="When the ranks last reported resuming.")


class EvaluationStatus(StatusModel):
    """Final evaluation on the held-out split."""

    accuracy: float | None = Field(default=None, description="Fraction correctly classified.")
    macro_f1: float | None = Field(default=None, description="Unweighted mean of per-class F1.")
    precision: list[float] = Field(default_factory=list, description="Per-class precision.")
    recall: list[float] = Field(default_factory=list, description="Per-class recall.")
    f1: list[float] = Field(default_factory=list, description="Per-class F1.")
    confusion_matrix: list[list[int]] = Field(default_factory=list,
                                              description="Rows: true class; columns: predicted.")
    classes: list[str] = Field(default_factory=list, description="Class names, in matrix order.")
    samples: int | None = Field(default=None, description="Evaluated samples.")


class ArtifactsStatus(StatusModel):
    checkpoint: str | None = Field(default=None, description="Latest checkpoint location.")
    model: str | None = Field(default=None, description="Final model location.")


class FailureRecord(StatusModel):
    """The last pod failure the operator acted on."""

    pod: str | None = Field(default=None, description="Pod name.")
    exit_code: int | None = Field(default=None, description="Trainer container exit code.")
    reason: str | None = Field(default=None, description="Why it failed, e.g. Evicted, Error.")
    action: str | None = Field(default=None, description="Failure-policy action taken.")
    time: str | None = Field(default=None, json_schema_extra={"format": "date-time"},
                             description="When the failure was observed.")


class CheckpointRequest(StatusModel):
    """An outstanding ask for a checkpoint (before scale-down)."""

    token: str = Field(description="Value of the cogwork.dev/checkpoint-request annotation.")
    acknowledged: bool | None = Field(default=None,
                                      description="Rank 0 reported the checkpoint for token.")
    time: str | None = Field(default=None, json_schema_extra={"format": "date-time"},
                             description="When the checkpoint was requested.")




class TrainJobStatus(JobStatus):
    """Observed state of a TrainJob, written only by the operator."""

    phase: Phase | None = Field(default=None, description="Summary of the conditions: Pending, "
                                "Suspended, Running, Restarting, Succeeded or Failed.")
    conditions: ConditionList = Field(
        default_factory=list,
        description="Created, Running, Suspended, Restarting, Succeeded, Failed. Succeeded and "
                    "Failed are terminal.")
    replicas: int | None = Field(default=None, description="Worker pods that exist (scale).")
    ready_replicas: int | None = Field(default=None, description="Worker pods running.")
    selector: str | None = Field(default=None,
                                 description="Label selector of the worker pods (scale/HPA).")
    nodes_text: str | None = Field(default=None, description="\"ready/desired\" for printing.")
    restarts: int | None = Field(default=None, description="Job-level restarts counted so far.")
    last_restart_time: str | None = Field(default=None, json_schema_extra={"format": "date-time"},
                                          description="When the last restart began.")
    active_nodes: list[int] = Field(
        default_factory=list, description="Node indices the operator counts as members of the "
                                          "current group (to notice pods that vanish).")
    last_failure: FailureRecord | None = Field(default=None, description="Last pod failure.")
    progress: ProgressStatus | None = Field(default=None, description="Training progress.")
    metrics: MetricsStatus | None = Field(default=None, description="Reported metrics.")
    evaluation: EvaluationStatus | None = Field(default=None, description="Final evaluation.")
    artifacts: ArtifactsStatus | None = Field(default=None, description="Outputs.")
    tuned_from: TunedFrom | None = Field(
        default=None, description="What spec.fromTuneJob resolved to: the parameters this job "
                                  "runs with.")
    data_from: ResolvedInput | None = Field(
        default=None, description="What spec.data.fromLabelJob resolved to: the dataset this "
                                  "job reads.")
    last_checkpoint_step: int | None = Field(default=None,
                                             description="Step of the last reported checkpoint.")
    checkpoint_request: CheckpointRequest | None = Field(
        default=None, description="Outstanding checkpoint request, if any.")
