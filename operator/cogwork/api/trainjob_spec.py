"""Building blocks of the TrainJob spec (see cogwork.api.trainjob for the whole object).

Every rule lives twice on purpose: as CEL in the CRD (the apiserver rejects bad objects) and as
a pydantic validator (`cogwork run` and `cogwork render` reject the same objects offline).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import ConfigDict, Field, model_validator

from cogwork.api import contract
from cogwork.api.common import (
    DecimalString,
    DnsName,
    Quantity,
    SpecModel,
    cel,
    validations,
)

MAX_NODES = 1000


class TaskSpec(SpecModel):
    """A built-in training task run by the trainer image (`python -m cogwork_trainer.train`)."""

    name: Literal["image-classification"] = Field(description="Built-in task to run.")
    model: Literal["mlp", "cnn"] = Field(default="mlp", description="Model architecture.")
    epochs: int = Field(default=12, ge=1, le=100_000, description="Passes over the training set.")
    batch_size: int = Field(
        default=64, ge=1, le=1_048_576,
        description="GLOBAL batch size: constant whatever the number of nodes and processes "
                    "(each rank takes batchSize / world size).")
    learning_rate: DecimalString = Field(
        default="0.05", description="Learning rate as a decimal string, e.g. \"0.05\" or \"3e-4\".",
        json_schema_extra=validations(cel("!self.matches('^[0.]*([eE].*)?$')",  # all-zero mantissa
                                          "spec.task.learningRate must be greater than 0")))
    optimizer: Literal["sgd", "adam", "adamw"] = Field(default="sgd", description="Optimizer.")
    hidden_size: int = Field(default=128, ge=1, le=65_536, description="Width of hidden layers.")
    seed: int = Field(default=0, ge=0, le=2**31 - 1,
                      description="Seed of initialisation and of the per-epoch data order.")
    momentum: DecimalString | None = Field(
        default=None, description="SGD momentum as a decimal string (trainer default \"0.9\").")
    weight_decay: DecimalString | None = Field(
        default=None, description="Weight decay as a decimal string (trainer default \"0\").")

    @model_validator(mode="after")
    def _positive_learning_rate(self) -> Self:
        if float(self.learning_rate) <= 0:
            raise ValueError("spec.task.learningRate must be greater than 0")
        return self


class ScriptSpec(SpecModel):
    """User code, in the trainer image or in the user's own image."""

    model_config = ConfigDict(json_schema_extra=validations(cel(
        "has(self.module) != has(self.command)",
        "exactly one of spec.script.module or spec.script.command must be set")))

    module: str | None = Field(
        default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$",
        max_length=256,
        description="Python module run as __main__ under the trainer's harness "
                    "(`-m cogwork_trainer.train` with COGWORK_TASK={\"script\": ...}); the "
                    "image must contain cogwork_trainer.")
    command: list[Annotated[str, Field(max_length=4096)]] | None = Field(
        default=None, min_length=1, max_length=64,
        description="Executable and arguments that torchrun starts directly on every rank "
                    "(`torchrun ... --no-python <command> <args>`); for images without "
                    "cogwork_trainer.")
    args: list[Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=list, max_length=256, description="Arguments appended to the program.")

    @model_validator(mode="after")
    def _one_entry_point(self) -> Self:
        if (self.module is None) == (self.command is None):
            raise ValueError("exactly one of spec.script.module or spec.script.command must be set")
        return self


class DataSpec(SpecModel):
    """Where the training and evaluation data live (exactly one source)."""

    model_config = ConfigDict(json_schema_extra=validations(
        cel("(has(self.dataset) ? 1 : 0) + (has(self.path) ? 1 : 0)"
            " + (has(self.fromLabelJob) ? 1 : 0) == 1",
            "exactly one of spec.data.dataset, spec.data.path or spec.data.fromLabelJob must be "
            "set"),
        cel("!has(self.claimName) || has(self.path)",
            "spec.data.claimName requires spec.data.path", field_path=".claimName"),
        cel("!has(self.claimName) || !has(self.path) || !self.path.startsWith('/')",
            "spec.data.path must be relative to the claim when spec.data.claimName is set",
            field_path=".path"),
    ))

    dataset: Literal["digits"] | None = Field(
        default=None, description="A dataset bundled in the trainer image.")
    path: str | None = Field(
        default=None, min_length=1, max_length=4096, pattern=r"\.npz$",
        description="An .npz file with arrays x and y. Relative to the claim's mount "
                    f"({contract.DATA_DIR}) when claimName is set, else a path in the image.")
    claim_name: DnsName | None = Field(
        default=None, description="Existing PersistentVolumeClaim holding `path`, mounted "
                                  f"read-only at {contract.DATA_DIR}.")
    from_label_job: DnsName | None = Field(
        default=None, description="Name of a LabelJob in the same namespace whose labeled "
                                  "dataset to train on (resolved by the operator).")
    test_percent: int = Field(
        default=20, ge=1, le=90, description="Percent of the data held out for evaluation.")

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        sources = [self.dataset, self.path, self.from_label_job]
        if sum(s is not None for s in sources) != 1:
            raise ValueError("exactly one of spec.data.dataset, spec.data.path or "
                             "spec.data.fromLabelJob must be set")
        if self.claim_name is not None:
            if self.path is None:
                raise ValueError("spec.data.claimName requires spec.data.path")
            if self.path.startswith("/"):
                raise ValueError("spec.data.path must be relative to the claim when "
                                 "spec.data.claimName is set")
        return self


class NodesSpec(SpecModel):
    """Elastic node range; each node is one pod running torchrun."""

    model_config = ConfigDict(json_schema_extra=validations(
        cel("self.min <= self.max", "spec.nodes.min must be less than or equal to spec.nodes.max",
            field_path=".min"),
        cel("!has(self.count) || (self.count >= self.min && self.count <= self.max)",
            "spec.nodes.count must be between spec.nodes.min and spec.nodes.max",
            field_path=".count"),
    ))

    min: int = Field(default=1, ge=1, le=MAX_NODES,
                     description="Fewest nodes training runs with (torchrun --nnodes MIN:MAX).")
    max: int = Field(default=1, ge=1, le=MAX_NODES, description="Most nodes training runs with.")
    count: int | None = Field(
        default=None, ge=1, le=MAX_NODES, json_schema_extra={"format": "int32"},
        description="Desired node count within [min, max]; the scale subresource's replicas "
                    "(`kubectl scale`, HPA). Unset means max. May change at any time.")

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.min > self.max:
            raise ValueError("spec.nodes.min must be less than or equal to spec.nodes.max")
        if self.count is not None and not self.min <= self.count <= self.max:
            raise ValueError("spec.nodes.count must be between spec.nodes.min and "
                             f"spec.nodes.max (count {self.count}, min {self.min}, "
                             f"max {self.max})")
        return self


class ResourcesSpec(SpecModel):
    """Per-node resources (requests = limits, so the pod is Guaranteed for CPU and memory)."""

    cpu: Quantity = Field(default="1", description="CPU per node, e.g. 2 or \"500m\". "
                          "OMP_NUM_THREADS = cpu / nprocPerNode (at least 1).")
    memory: Quantity = Field(default="2Gi", description="Memory per node, e.g. \"4Gi\".")
    gpu: int = Field(default=0, ge=0, le=64,
                     description="nvidia.com/gpu per node; > 0 selects the nccl backend. "
                                 "Usually equal to nprocPerNode.")


_RESERVED_ENV_LIST = ", ".join(f"'{name}'" for name in contract.INJECTED_ENV_NAMES)


class EnvVar(SpecModel):
    """A plain environment variable for the training processes."""

    model_config = ConfigDict(json_schema_extra=validations(cel(
        f"!self.name.startsWith('{contract.RESERVED_ENV_PREFIX}')"
        f" && !(self.name in [{_RESERVED_ENV_LIST}])",
        "spec.env: names starting with COGWORK_ and the names the operator injects "
        f"({', '.join(contract.INJECTED_ENV_NAMES)}) are reserved",
        message_expression="'spec.env: ' + self.name + ' is reserved: the operator injects "
                           "COGWORK_* and " + ", ".join(contract.INJECTED_ENV_NAMES) + "'",
        field_path=".name", reason="FieldValueForbidden")))

    name: str = Field(pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$", max_length=256,
                      description="Variable name (not COGWORK_* nor an injected name).")
    value: str = Field(default="", max_length=8192, description="Variable value.")

    @model_validator(mode="after")
    def _not_reserved(self) -> Self:
        if contract.is_reserved_env_name(self.name):
            raise ValueError(f"spec.env: {self.name} is reserved: the operator injects COGWORK_* "
                             f"and {', '.join(contract.INJECTED_ENV_NAMES)}")
        return self


class Toleration(SpecModel):
    """A pod toleration (core/v1 Toleration)."""

    key: str | None = Field(default=None, max_length=316, description="Taint key; empty matches "
                            "all keys (with operator Exists).")
    operator: Literal["Exists", "Equal"] | None = Field(
        default=None, description="Exists or Equal (Kubernetes default Equal).")
    value: str | None = Field(default=None, max_length=256, description="Taint value (Equal).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; empty matches all effects.")
    toleration_seconds: int | None = Field(
        default=None, description="How long a NoExecute taint is tolerated.")


def _no_reserved_keys(what: str) -> dict[str, Any]:
    prefix = contract.RESERVED_KEY_PREFIX
    return validations(cel(
        f"self.all(k, !k.startsWith('{prefix}'))",
        f"spec.podTemplate.{what}: keys starting with {prefix} are reserved for the operator",
        reason="FieldValueForbidden"))


StringMap = dict[str, Annotated[str, Field(max_length=4096)]]


class PodTemplate(SpecModel):
    """Overrides applied to the pods (workers; the rendezvous pod gets labels, annotations,
    tolerations and priorityClassName but not nodeSelector)."""

    labels: StringMap | None = Field(
        default=None, max_length=64, json_schema_extra=_no_reserved_keys("labels"),
        description="Extra pod labels. May change only while suspended (Kueue).")
    annotations: StringMap | None = Field(
        default=None, max_length=64, json_schema_extra=_no_reserved_keys("annotations"),
        description="Extra pod annotations. May change only while suspended (Kueue).")
    node_selector: StringMap | None = Field(
        default=None, max_length=64,
        description="Worker nodeSelector. May change only while suspended (Kueue).")
    tolerations: list[Toleration] | None = Field(
        default=None, max_length=32, description="Pod tolerations. May change only while "
                                                 "suspended (Kueue).")
    service_account_name: DnsName | None = Field(
        default=None, description="ServiceAccount of the training pods (default: the operator's "
                                  "configured trainer account). Its API token is never mounted.")
    priority_class_name: DnsName | None = Field(default=None,
                                                description="PriorityClass of the pods.")

    @model_validator(mode="after")
    def _no_reserved(self) -> Self:
        for what, mapping in (("labels", self.labels), ("annotations", self.annotations)):
            bad = sorted(k for k in mapping or {} if k.startswith(contract.RESERVED_KEY_PREFIX))
            if bad:
                raise ValueError(f"spec.podTemplate.{what}: keys starting with "
                                 f"{contract.RESERVED_KEY_PREFIX} are reserved: {bad}")
        return self


class CheckpointSpec(SpecModel):
    """Shared checkpoint storage; a restart loses at most everySteps steps."""

    every_steps: int = Field(default=50, ge=1, le=10_000_000,
                             description="Checkpoint every N optimizer steps.")
    keep: int = Field(default=3, ge=1, le=100, description="Keep the last k checkpoints.")
    claim_name: DnsName | None = Field(
        default=None, description="Existing PersistentVolumeClaim to use; when unset the "
                                  "operator creates <job>-ckpt.")
    size: Quantity = Field(default="1Gi", description="Size of the created claim.")
    storage_class_name: DnsName | None = Field(
        default=None, description="StorageClass of the created claim (cluster default if unset).")
    access_mode: Literal["ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"] = Field(
        default="ReadWriteMany", description="Access mode of the created claim; nodes on "
                                             "different machines need ReadWriteMany.")


class FailureAction(StrEnum):
    """What the operator does about a failed pod."""

    RESTART_NODE = "RestartNode"  # replace the failed pod; counts toward backoffLimit
    RESTART_JOB = "RestartJob"  # replace every pod; counts
    FAIL_JOB = "FailJob"  # the job fails
    IGNORE = "Ignore"  # replace the failed pod without counting


class ExitCodeMatch(SpecModel):
    """Matches the exit code of the pod's trainer container."""

    operator: Literal["In", "NotIn"] = Field(description="In or NotIn.")
    values: list[Annotated[int, Field(ge=0, le=255)]] = Field(
        min_length=1, max_length=255, json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Exit codes.")


class FailureRule(SpecModel):
    """First matching rule wins; exactly one of onExitCodes or onPodConditions."""

    model_config = ConfigDict(json_schema_extra=validations(cel(
        "has(self.onExitCodes) != has(self.onPodConditions)",
        "a failurePolicy rule needs exactly one of onExitCodes or onPodConditions")))

    action: FailureAction = Field(
        description="RestartNode: replace the failed pod (counts toward backoffLimit). "
                    "RestartJob: replace every pod (counts). FailJob: fail the job. "
                    "Ignore: replace the failed pod without counting.")
    on_exit_codes: ExitCodeMatch | None = Field(default=None, description="Exit code match.")
    on_pod_conditions: list[Annotated[str, Field(max_length=316)]] | None = Field(
        default=None, min_length=1, max_length=8,
        description="Pod condition types (status True) that match, e.g. DisruptionTarget.")

    @model_validator(mode="after")
    def _one_match(self) -> Self:
        if (self.on_exit_codes is None) == (self.on_pod_conditions is None):
            raise ValueError("a failurePolicy rule needs exactly one of onExitCodes or "
                             "onPodConditions")
        return self


class FailurePolicy(SpecModel):
    """What a failed pod does to the job. Without a matching rule: evictions
    (DisruptionTarget), lost pods and exit codes >= 128 (signals) are RestartNode; any other
    non-zero exit code is FailJob."""

    backoff_limit: int = Field(default=3, ge=0, le=1000,
                               description="Counted restarts before the job fails.")
    rules: list[FailureRule] = Field(default_factory=list, max_length=16,
                                     description="Rules checked in order before the defaults.")


class RendezvousSpec(SpecModel):
    """torchrun's c10d rendezvous (the store runs in its own pod, <job>-rdzv)."""

    join_timeout_seconds: int = Field(
        default=60, ge=1, le=86_400,
        description="How long nodes wait for at least nodes.min members (torch default 600).")
    last_call_timeout_seconds: int = Field(
        default=3, ge=1, le=3_600,
        description="Extra wait for more members once min is reached (torch default 30).")
    max_restarts: int = Field(
        default=3, ge=0, le=1_000,
        description="torchrun --max-restarts: in-pod worker group restarts before the pod "
                    "fails (separate from failurePolicy.backoffLimit).")
