"""TrainJob: elastic PyTorch DDP training as a custom resource.

The spec's building blocks live in cogwork.api.trainjob_spec, the status in
cogwork.api.trainjob_status. Transition rules (immutability) exist only in CEL: they need the old
object; every other rule is also a pydantic validator so `cogwork run` rejects what the
apiserver rejects.
"""

from __future__ import annotations

import re
from typing import Any, Literal, Self

from pydantic import ConfigDict, Field, field_validator, model_validator

from cogwork.api.common import (
    DNS_1035_LABEL,
    MANAGED_BY_DESCRIPTION,
    CustomResource,
    DnsName,
    ManagedBy,
    PrinterColumn,
    ScaleSubresource,
    SpecModel,
    StatusModel,
    cel,
    cel_unchanged,
    defaults_of,
    name_rules,
    validations,
)
from cogwork.api.trainjob_spec import (
    CheckpointSpec,
    DataSpec,
    EnvFromSource,
    EnvVar,
    FailurePolicy,
    NodesSpec,
    PodTemplate,
    RendezvousSpec,
    ResourcesSpec,
    ScriptSpec,
    TaskSpec,
)
from cogwork.api.trainjob_status import TrainJobStatus

DEFAULT_IMAGE = "ghcr.io/cogwork/trainer:0.1.0"
# Worker hostnames are <name>-node-<index> (a DNS label, <= 63): 63 - len("-node-999") = 54.
MAX_NAME_LENGTH = 54


def _spec_validations() -> dict[str, Any]:
    immutable = ["image", "imagePullPolicy", "task", "script", "data", "nodes.min", "nodes.max",
                 "nprocPerNode", "resources", "env", "envFrom", "podTemplate.serviceAccountName",
                 "podTemplate.priorityClassName", "podTemplate.schedulerName",
                 "podTemplate.imagePullSecrets", "podTemplate.affinity",
                 "podTemplate.topologySpreadConstraints", "podTemplate.volumes",
                 "podTemplate.volumeMounts", "podTemplate.shmSize", "podTemplate.securityContext",
                 "podTemplate.readOnlyRootFilesystem", "checkpoint", "failurePolicy",
                 "rendezvous", "activeDeadlineSeconds", "preRunningDeadlineSeconds",
                 "fromTuneJob", "managedBy"]
    while_suspended = ["podTemplate.nodeSelector", "podTemplate.tolerations",
                       "podTemplate.labels", "podTemplate.annotations"]
    suspended = "(has(self.suspend) && self.suspend) || (has(oldSelf.suspend) && oldSelf.suspend)"
    rules = [
        cel("has(self.task) != has(self.script)",
            "exactly one of spec.task or spec.script must be set"),
        cel("!has(self.task) || has(self.data)", "spec.data is required when spec.task is set",
            field_path=".data", reason="FieldValueRequired"),
    ]
    rules += [cel(cel_unchanged(path), f"spec.{path} is immutable", field_path=f".{path}",
                  reason="FieldValueForbidden") for path in immutable]
    rules += [cel(f"{suspended} || {cel_unchanged(path)}",
                  f"spec.{path} may change only while the job is suspended (spec.suspend)",
                  field_path=f".{path}", reason="FieldValueForbidden") for path in while_suspended]
    return validations(*rules)


class TrainJobSpec(SpecModel):
    """Desired state of a TrainJob. Mutable: nodes.count, suspend, stop,
    ttlSecondsAfterFinished, and podTemplate labels/annotations/nodeSelector/tolerations while
    suspended. Everything else is immutable."""

    model_config = ConfigDict(json_schema_extra=_spec_validations())

    suspend: bool = Field(default=False, description="Suspend the job: delete its pods, keep "
                          "checkpoints; resuming continues from the last checkpoint (Kueue).")
    stop: bool = Field(default=False, description="Graceful stop: the ranks checkpoint and exit "
                       "0; the job ends Succeeded with reason Stopped (tuner pruning).")
    managed_by: ManagedBy | None = Field(default=None, description=MANAGED_BY_DESCRIPTION)
    image: str = Field(default=DEFAULT_IMAGE, min_length=1, max_length=1024,
                       description="Container image of the training pods.")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        default="IfNotPresent", description="Image pull policy of the training pods.")
    task: TaskSpec | None = Field(default=None, description="A built-in task (exclusive with "
                                  "script; requires data).")
    script: ScriptSpec | None = Field(default=None, description="User code (exclusive with task).")
    data: DataSpec | None = Field(default=None, description="Training data; required with task.")
    from_tune_job: DnsName | None = Field(
        default=None, description="A TuneJob in this namespace whose best trial's parameters "
                                  "this job takes once it Succeeded, each written where the "
                                  "TuneJob's spec.parameters put them (a task field or an env "
                                  "variable); the rest of the spec is this job's own. The job "
                                  "waits for it, and fails if it fails.")
    nodes: NodesSpec = Field(default_factory=NodesSpec, json_schema_extra=defaults_of(NodesSpec),
                             description="Elastic node range and desired count.")
    nproc_per_node: int = Field(default=1, ge=1, le=64,
                                description="Training processes per node (torchrun "
                                            "--nproc-per-node); usually the GPU count.")
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec,
                                     json_schema_extra=defaults_of(ResourcesSpec),
                                     description="Resources per node.")
    env: list[EnvVar] = Field(
        default_factory=list, max_length=64,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        description="Extra environment variables for the training processes.")
    env_from: list[EnvFromSource] = Field(
        default_factory=list, max_length=16,
        description="Every key of a Secret or ConfigMap as a variable of the trainer container "
                    "(spec.env and the operator's variables win). Cluster only: `cogwork run` "
                    "refuses it.")
    pod_template: PodTemplate | None = Field(default=None, description="Pod overrides.")
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec,
                                       json_schema_extra=defaults_of(CheckpointSpec),
                                       description="Checkpoint cadence and storage.")
    failure_policy: FailurePolicy = Field(default_factory=FailurePolicy,
                                          json_schema_extra=defaults_of(FailurePolicy),
                                          description="How pod failures are handled.")
    rendezvous: RendezvousSpec = Field(default_factory=RendezvousSpec,
                                       json_schema_extra=defaults_of(RendezvousSpec),
                                       description="torchrun rendezvous tuning.")
    active_deadline_seconds: int | None = Field(
        default=None, ge=1, description="Fail the job this long after it started.")
    pre_running_deadline_seconds: int | None = Field(
        default=None, ge=1, description="Fail the job if it has not reached Running this "
                                        "long after it started (stuck image pulls, scheduling, "
                                        "quota).")
    ttl_seconds_after_finished: int | None = Field(
        default=None, ge=0, description="Delete the finished job (and its children) this long "
                                        "after it succeeded or failed.")

    @model_validator(mode="after")
    def _entry_point_and_data(self) -> Self:
        if (self.task is None) == (self.script is None):
            raise ValueError("exactly one of spec.task or spec.script must be set")
        if self.task is not None and self.data is None:
            raise ValueError("spec.data is required when spec.task is set")
        return self


NAME_PATTERN_MESSAGE = ("metadata.name must be a DNS-1035 label (lowercase letters, digits and "
                        "'-', starting with a letter): it names the workers' headless Service")
NAME_LENGTH_MESSAGE = (f"metadata.name must be at most {MAX_NAME_LENGTH} characters: worker "
                       "hostnames <name>-node-<index> must fit in 63")


class ObjectMeta(StatusModel):
    """The parts of metadata the planners read."""

    name: str
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    creation_timestamp: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _usable_as_child_prefix(cls, name: str) -> str:
        if not re.fullmatch(DNS_1035_LABEL, name):
            raise ValueError(NAME_PATTERN_MESSAGE)
        if len(name) > MAX_NAME_LENGTH:
            raise ValueError(NAME_LENGTH_MESSAGE)
        return name


class TrainJob(StatusModel):
    """A whole TrainJob object as read from the cluster or a manifest."""

    api_version: Literal["cogwork.dev/v1alpha1"] = "cogwork.dev/v1alpha1"
    kind: Literal["TrainJob"] = "TrainJob"
    metadata: ObjectMeta
    spec: TrainJobSpec
    status: TrainJobStatus = Field(default_factory=TrainJobStatus)


TRAINJOB_RESOURCE = CustomResource(
    kind="TrainJob",
    plural="trainjobs",
    singular="trainjob",
    # Not "trainjob"/"tj": Kubeflow Trainer's TrainJob (trainer.kubeflow.org) may be installed.
    short_names=("cwtrain", "cwtj"),
    spec_model=TrainJobSpec,
    status_model=TrainJobStatus,
    description="Elastic PyTorch DDP training: a rendezvous pod plus one pod per node, "
                "checkpointed, restarted per failure policy, progress reported in status.",
    printer_columns=(
        PrinterColumn("Phase", ".status.phase", "string", "Derived from the conditions."),
        PrinterColumn("Nodes", ".status.nodesText", "string", "Ready/desired nodes."),
        PrinterColumn("Restarts", ".status.restarts", "integer", "Job-level restarts."),
        PrinterColumn("Progress", ".status.progress.progressPercentage", "integer",
                      "Percent of training steps done."),
        PrinterColumn("Accuracy", ".status.evaluation.accuracy", "number",
                      "Final evaluation accuracy."),
        PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
        PrinterColumn("Queue", ".metadata.labels.kueue\\.x-k8s\\.io/queue-name", "string",
                      "Kueue LocalQueue (kubectl get -o wide); the Suspended condition says "
                      "why a queued job waits.", priority=1),
    ),
    scale=ScaleSubresource(spec_replicas_path=".spec.nodes.count",
                           status_replicas_path=".status.replicas",
                           label_selector_path=".status.selector"),
    root_validations=(
        *name_rules(MAX_NAME_LENGTH, NAME_PATTERN_MESSAGE, NAME_LENGTH_MESSAGE),
    ),
)
