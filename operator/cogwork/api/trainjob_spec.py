"""Building blocks of the TrainJob spec (see cogwork.api.trainjob for the whole object).

Every rule lives twice on purpose: as CEL in the CRD (the apiserver rejects bad objects) and as
a pydantic validator (`cogwork run` and `cogwork render` reject the same objects offline).
"""

from __future__ import annotations

import math
import re
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from cogwork_sdk import contract as pod_contract
from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

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

# A decimal string whose integer part is not zero and whose exponent is at least 309 is above
# the largest double (about 1.8e308): "1e999" would become inf in the trainer.
OVERFLOWS_PATTERN = (r"^[-+]?0*[1-9][0-9]*([.][0-9]*)?[eE][+]?0*"
                     r"(309|3[1-9][0-9]|[4-9][0-9][0-9]|[1-9][0-9][0-9][0-9]+)$")


def finite_message(path: str = "") -> str:
    return f"{path} must be a finite number" if path else "must be a finite number"


def cel_finite(value: str = "self") -> str:
    """CEL that is true when the decimal string `value` fits in a double. The regex settles
    the usual overflows ("1e999") as a plain rule failure; CEL's double() fails on any other
    (e.g. "0.01e311"), which the apiserver refuses too, quoting the rule's message."""
    return (f"!{value}.matches('{OVERFLOWS_PATTERN}') && "
            f"double({value}) <= 1.7976931348623157e308")


def finite_rule(path: str = "") -> dict[str, str]:
    return cel(cel_finite(), finite_message(path))


def is_finite_decimal(text: str) -> bool:
    """What cel_finite accepts, for the pydantic side (Python's float() and CEL's double()
    round alike: both give up on exactly the strings whose double would be infinite)."""
    return math.isfinite(float(text))


NON_FINITE_LOSS_DESCRIPTION = (
    "End the job Failed with reason NonFiniteLoss when the training loss becomes NaN or "
    "infinite (the run diverged): the ranks exit with code "
    f"{pod_contract.EXIT_NON_FINITE_LOSS} and the operator restarts neither the pod nor the "
    "group, since a restart from the last checkpoint would diverge again. Default true; false "
    "trains on.")


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
                                          "spec.task.learningRate must be greater than 0"),
                                      finite_rule("spec.task.learningRate")))
    optimizer: Literal["sgd", "adam", "adamw"] = Field(default="sgd", description="Optimizer.")
    hidden_size: int = Field(default=128, ge=1, le=65_536, description="Width of hidden layers.")
    seed: int = Field(default=0, ge=0, le=2**31 - 1,
                      description="Seed of initialisation and of the per-epoch data order.")
    momentum: DecimalString | None = Field(
        default=None, description="SGD momentum as a decimal string (trainer default \"0.9\").",
        json_schema_extra=validations(finite_rule("spec.task.momentum")))
    weight_decay: DecimalString | None = Field(
        default=None, description="Weight decay as a decimal string (trainer default \"0\").",
        json_schema_extra=validations(finite_rule("spec.task.weightDecay")))
    fail_on_non_finite_loss: bool = Field(
        default=True, description=NON_FINITE_LOSS_DESCRIPTION)

    @model_validator(mode="after")
    def _finite_decimals(self) -> Self:
        for wire, value in (("learningRate", self.learning_rate), ("momentum", self.momentum),
                            ("weightDecay", self.weight_decay)):
            if value is not None and not is_finite_decimal(value):
                raise ValueError(f"{finite_message(f'spec.task.{wire}')} (got {value})")
        return self

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
    metrics_format: list[Annotated[str, Field(min_length=1, max_length=1024)]] | None = Field(
        default=None, max_length=8,
        description="Zero-code metrics: regular expressions (Python syntax) whose first group "
                    "is a metric name and second its value, applied to every line the workers "
                    "print on stdout; matches go to status.metrics (`epoch` and `step` to "
                    "status.progress). Unset: Katib's StdOut format, `name=value` "
                    "(e.g. `epoch=3 loss=0.21 val_accuracy=0.93`). An empty list turns it off.")
    fail_on_non_finite_loss: bool = Field(
        default=True, description=NON_FINITE_LOSS_DESCRIPTION + " Applies to the losses the "
        "script reports through cogwork_sdk (cogwork_sdk.report, the Hugging Face and "
        "Lightning callbacks): metrics named loss or ending in _loss.")

    @model_validator(mode="after")
    def _one_entry_point(self) -> Self:
        if (self.module is None) == (self.command is None):
            raise ValueError("exactly one of spec.script.module or spec.script.command must be set")
        return self

    @model_validator(mode="after")
    def _metrics_format_compiles(self) -> Self:
        for i, pattern in enumerate(self.metrics_format or []):
            try:
                groups = re.compile(pattern).groups
            except re.error as e:
                raise ValueError(f"spec.script.metricsFormat[{i}] is not a regular expression: "
                                 f"{e}") from e
            if groups < 2:
                raise ValueError(f"spec.script.metricsFormat[{i}] needs two groups (name, "
                                 f"value); it has {groups}")
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
                    f"({pod_contract.DATA_DIR}) when claimName is set, else a path in the image.")
    claim_name: DnsName | None = Field(
        default=None, description="Existing PersistentVolumeClaim holding `path`, mounted "
                                  f"read-only at {pod_contract.DATA_DIR}.")
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
ENV_NAME_PATTERN = r"^[-._a-zA-Z][-._a-zA-Z0-9]*$"
CONFIG_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"  # a key of a ConfigMap or Secret


class KeySelector(SpecModel):
    """One key of a Secret or ConfigMap in the job's namespace (read by the kubelet, never by
    the operator)."""

    name: DnsName = Field(description="Name of the Secret or ConfigMap.")
    key: str = Field(pattern=CONFIG_KEY_PATTERN, max_length=253, description="The key.")
    optional: bool | None = Field(default=None, description="Start the pod even when the object "
                                                            "or key is missing.")


VALUE_FROM_ONE = "spec.env[].valueFrom needs exactly one of secretKeyRef or configMapKeyRef"


class EnvVarSource(SpecModel):
    """Where a variable's value comes from: exactly one of secretKeyRef or configMapKeyRef."""

    model_config = ConfigDict(json_schema_extra=validations(cel(
        "has(self.secretKeyRef) != has(self.configMapKeyRef)", VALUE_FROM_ONE)))

    secret_key_ref: KeySelector | None = Field(default=None, description="A key of a Secret.")
    config_map_key_ref: KeySelector | None = Field(default=None,
                                                   description="A key of a ConfigMap.")

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.secret_key_ref is None) == (self.config_map_key_ref is None):
            raise ValueError(VALUE_FROM_ONE)
        return self


VALUE_AND_VALUE_FROM = "spec.env[].value must be empty when spec.env[].valueFrom is set"


class EnvVar(SpecModel):
    """An environment variable for the training processes: a value, or a key of a Secret or
    ConfigMap (valueFrom)."""

    model_config = ConfigDict(json_schema_extra=validations(
        cel(f"!self.name.startsWith('{contract.RESERVED_ENV_PREFIX}')"
            f" && !(self.name in [{_RESERVED_ENV_LIST}])",
            "spec.env: names starting with COGWORK_ and the names the operator injects "
            f"({', '.join(contract.INJECTED_ENV_NAMES)}) are reserved",
            message_expression="'spec.env: ' + self.name + ' is reserved: the operator injects "
                               "COGWORK_* and " + ", ".join(contract.INJECTED_ENV_NAMES) + "'",
            field_path=".name", reason="FieldValueForbidden"),
        cel("!has(self.valueFrom) || !has(self.value) || self.value == ''",
            VALUE_AND_VALUE_FROM, field_path=".value"),
    ))

    name: str = Field(pattern=ENV_NAME_PATTERN, max_length=256,
                      description="Variable name (not COGWORK_* nor an injected name).")
    value: str = Field(default="", max_length=8192, description="Variable value.")
    value_from: EnvVarSource | None = Field(
        default=None, description="Take the value from a key of a Secret or ConfigMap in the "
                                  "job's namespace (the kubelet reads it; value must be empty). "
                                  "Cluster only: `cogwork run` refuses it.")

    @model_validator(mode="after")
    def _not_reserved(self) -> Self:
        if contract.is_reserved_env_name(self.name):
            raise ValueError(f"spec.env: {self.name} is reserved: the operator injects COGWORK_* "
                             f"and {', '.join(contract.INJECTED_ENV_NAMES)}")
        if self.value_from is not None and self.value:
            raise ValueError(VALUE_AND_VALUE_FROM)
        return self


class ObjectRef(SpecModel):
    """A whole Secret or ConfigMap in the job's namespace."""

    name: DnsName = Field(description="Name of the Secret or ConfigMap.")
    optional: bool | None = Field(default=None, description="Start the pod even when it is "
                                                            "missing.")


ENV_FROM_ONE = "spec.envFrom[] needs exactly one of secretRef or configMapRef"
ENV_FROM_PREFIX = (f"spec.envFrom[].prefix must not start with {contract.RESERVED_ENV_PREFIX}: "
                   "the operator owns those names")


class EnvFromSource(SpecModel):
    """Every key of a Secret or ConfigMap as a variable (explicit env and the operator's
    variables win over it)."""

    model_config = ConfigDict(json_schema_extra=validations(cel(
        "has(self.secretRef) != has(self.configMapRef)", ENV_FROM_ONE)))

    prefix: str | None = Field(
        default=None, pattern=ENV_NAME_PATTERN, max_length=256,
        json_schema_extra=validations(cel(
            f"!self.startsWith('{contract.RESERVED_ENV_PREFIX}')", ENV_FROM_PREFIX,
            reason="FieldValueForbidden")),
        description="Prepended to every key (not COGWORK_...).")
    secret_ref: ObjectRef | None = Field(default=None, description="A Secret.")
    config_map_ref: ObjectRef | None = Field(default=None, description="A ConfigMap.")

    @field_validator("prefix")
    @classmethod
    def _prefix_not_reserved(cls, prefix: str | None) -> str | None:
        if prefix is not None and prefix.startswith(contract.RESERVED_ENV_PREFIX):
            raise ValueError(ENV_FROM_PREFIX)
        return prefix

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.secret_ref is None) == (self.config_map_ref is None):
            raise ValueError(ENV_FROM_ONE)
        return self


# Label syntax (apimachinery's IsQualifiedName, IsValidLabelValue): what the apiserver would
# refuse on the pods is refused on the job at `kubectl apply`.
LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
LABEL_KEY_PATTERN = ("^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                     f"{LABEL_NAME}$")
LABEL_VALUE_PATTERN = f"^({LABEL_NAME})?$"
LABEL_KEY_RULES = ("keys must be qualified names: an optional DNS-subdomain prefix and '/', then "
                   "at most 63 alphanumerics, '-', '_' or '.', starting and ending alphanumeric")
LABEL_VALUE_RULES = ("values must be at most 63 alphanumerics, '-', '_' or '.', starting and "
                     "ending alphanumeric, or empty")
TOLERATION_EXISTS_VALUE = "value must be empty when operator is Exists"
TOLERATION_EMPTY_KEY = "operator must be Exists when key is empty (it then matches every taint)"
TOLERATION_SECONDS = "tolerationSeconds needs effect NoExecute"
_TOLERATION = "spec.podTemplate.tolerations[]"  # CEL messages name the field; the path, the item


class Toleration(SpecModel):
    """A pod toleration (core/v1 Toleration), checked as the apiserver checks the pods'."""

    model_config = ConfigDict(json_schema_extra=validations(
        cel("!has(self.operator) || self.operator != 'Exists' || !has(self.value) || "
            "self.value == ''", f"{_TOLERATION}: {TOLERATION_EXISTS_VALUE}"),
        cel("(has(self.key) && self.key != '') || (has(self.operator) && "
            "self.operator == 'Exists')", f"{_TOLERATION}: {TOLERATION_EMPTY_KEY}"),
        cel("!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
            f"{_TOLERATION}: {TOLERATION_SECONDS}")))

    key: str | None = Field(default=None, max_length=317, pattern=f"({LABEL_KEY_PATTERN})|^$",
                            description="Taint key (a label key); empty matches all keys "
                                        "(with operator Exists).")
    operator: Literal["Exists", "Equal"] | None = Field(
        default=None, description="Exists or Equal (Kubernetes default Equal).")
    value: str | None = Field(default=None, max_length=63, pattern=LABEL_VALUE_PATTERN,
                              description="Taint value (a label value; Equal).")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; empty matches all effects.")
    toleration_seconds: int | None = Field(
        default=None, description="How long a NoExecute taint is tolerated.")

    @model_validator(mode="after")
    def _as_the_apiserver_checks(self) -> Self:
        if self.operator == "Exists" and self.value:
            raise ValueError(TOLERATION_EXISTS_VALUE)
        if not self.key and self.operator != "Exists":
            raise ValueError(TOLERATION_EMPTY_KEY)
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError(TOLERATION_SECONDS)
        return self


def _label_keys(what: str) -> dict[str, str]:
    return cel(f"self.all(k, k.size() <= 317 && k.matches('{LABEL_KEY_PATTERN}'))",
               f"spec.podTemplate.{what}: {LABEL_KEY_RULES}")


def _no_reserved_keys(what: str) -> dict[str, Any]:
    prefix = contract.RESERVED_KEY_PREFIX
    return validations(cel(
        f"self.all(k, !k.startsWith('{prefix}'))",
        f"spec.podTemplate.{what}: keys starting with {prefix} are reserved for the operator",
        reason="FieldValueForbidden"), _label_keys(what))


StringMap = dict[str, Annotated[str, Field(max_length=4096)]]
# Labels and node selectors: label keys (checked by the field's CEL) to label values.
LabelMap = dict[str, Annotated[str, Field(max_length=63, pattern=LABEL_VALUE_PATTERN)]]
# Free-form Kubernetes objects kept as written (x-kubernetes-preserve-unknown-fields): only
# where nothing in them can grant privilege (affinity, label selectors), or for fields that
# exist only to be refused (hostPath, projected).
FreeForm = dict[str, Any]

# ---- podTemplate: volumes and mounts -----------------------------------------------------

VOLUME_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"  # DNS-1123 label
VolumeName = Annotated[str, Field(pattern=VOLUME_NAME_PATTERN, max_length=63)]
_NOT_RELATIVE = "!self.startsWith('/') && !('/' + self + '/').contains('/../')"


def _is_relative(path: str) -> bool:
    return not path.startswith("/") and "/../" not in f"/{path}/"


def _cel_list(items: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{item}'" for item in items) + "]"


KEY_PATH = "spec.podTemplate.volumes[]: items[].path must be relative, without '..'"


class KeyToPath(SpecModel):
    """One key of a ConfigMap or Secret as a file of the volume."""

    key: str = Field(pattern=CONFIG_KEY_PATTERN, max_length=253, description="The key.")
    path: str = Field(min_length=1, max_length=1024, description="Relative file path.",
                      json_schema_extra=validations(cel(_NOT_RELATIVE, KEY_PATH)))
    mode: int | None = Field(default=None, ge=0, le=0o777,
                             description="File mode bits (decimal: 0644 is 420).")

    @field_validator("path")
    @classmethod
    def _relative(cls, path: str) -> str:
        if not _is_relative(path):
            raise ValueError(KEY_PATH)
        return path


class ClaimVolumeSource(SpecModel):
    """An existing PersistentVolumeClaim in the job's namespace."""

    claim_name: DnsName = Field(description="Name of the claim.")
    read_only: bool | None = Field(default=None, description="Mount it read-only.")


class ConfigMapVolumeSource(SpecModel):
    """A ConfigMap in the job's namespace, one file per key."""

    name: DnsName = Field(description="Name of the ConfigMap.")
    items: list[KeyToPath] | None = Field(default=None, max_length=64,
                                          description="Only these keys, at these paths.")
    default_mode: int | None = Field(default=None, ge=0, le=0o777,
                                     description="File mode bits (decimal: 0644 is 420).")
    optional: bool | None = Field(default=None, description="Start the pod even when the "
                                                            "ConfigMap is missing.")


class SecretVolumeSource(SpecModel):
    """A Secret in the job's namespace, one file per key."""

    secret_name: DnsName = Field(description="Name of the Secret.")
    items: list[KeyToPath] | None = Field(default=None, max_length=64,
                                          description="Only these keys, at these paths.")
    default_mode: int | None = Field(default=None, ge=0, le=0o777,
                                     description="File mode bits (decimal: 0644 is 420).")
    optional: bool | None = Field(default=None, description="Start the pod even when the "
                                                            "Secret is missing.")


class EmptyDirVolumeSource(SpecModel):
    """Scratch space that lives as long as the pod."""

    medium: Literal["", "Memory"] | None = Field(
        default=None, description="\"\" (node disk) or Memory (tmpfs; counts against the "
                                  "memory limit).")
    size_limit: Quantity | None = Field(default=None, description="Most the volume may hold.")


VOLUME_SOURCES = ("persistentVolumeClaim", "configMap", "secret", "emptyDir")
VOLUME_ONE_SOURCE = ("spec.podTemplate.volumes[] needs exactly one of "
                     f"{', '.join(VOLUME_SOURCES)}")
VOLUME_NAME_TAKEN = (
    "spec.podTemplate.volumes[].name is reserved: the operator's volumes are "
    f"{', '.join(contract.OPERATOR_VOLUME_NAMES)} and {contract.RESERVED_VOLUME_PREFIX}*")
HOST_PATH_FORBIDDEN = ("spec.podTemplate.volumes[].hostPath is forbidden: it would expose the "
                       "node's filesystem to the job")
PROJECTED_FORBIDDEN = ("spec.podTemplate.volumes[].projected is forbidden: it can mount "
                       "ServiceAccount tokens; use configMap or secret volumes")


class Volume(SpecModel):
    """A volume the trainer container may mount (spec.podTemplate.volumeMounts): exactly one of
    persistentVolumeClaim, configMap, secret, emptyDir. hostPath and projected are refused."""

    model_config = ConfigDict(json_schema_extra=validations(
        cel(" + ".join(f"(has(self.{s}) ? 1 : 0)" for s in (*VOLUME_SOURCES, "hostPath",
                                                              "projected")) + " == 1",
            VOLUME_ONE_SOURCE),
        cel(f"!(self.name in {_cel_list(contract.OPERATOR_VOLUME_NAMES)}) && "
            f"!self.name.startsWith('{contract.RESERVED_VOLUME_PREFIX}')", VOLUME_NAME_TAKEN,
            field_path=".name", reason="FieldValueForbidden"),
        cel("!has(self.hostPath)", HOST_PATH_FORBIDDEN, field_path=".hostPath",
            reason="FieldValueForbidden"),
        cel("!has(self.projected)", PROJECTED_FORBIDDEN, field_path=".projected",
            reason="FieldValueForbidden"),
    ))

    name: VolumeName = Field(description="Volume name (a DNS label; not one of the "
                                         "operator's).")
    persistent_volume_claim: ClaimVolumeSource | None = Field(
        default=None, description="An existing PersistentVolumeClaim.")
    config_map: ConfigMapVolumeSource | None = Field(default=None, description="A ConfigMap.")
    secret: SecretVolumeSource | None = Field(default=None, description="A Secret.")
    empty_dir: EmptyDirVolumeSource | None = Field(default=None, description="Scratch space.")
    host_path: FreeForm | None = Field(default=None, description="Refused: the node's "
                                                                 "filesystem.")
    projected: FreeForm | None = Field(default=None, description="Refused: may carry "
                                                                 "ServiceAccount tokens.")

    @field_validator("name")
    @classmethod
    def _not_ours(cls, name: str) -> str:
        if contract.is_operator_volume_name(name):
            raise ValueError(VOLUME_NAME_TAKEN)
        return name

    @field_validator("host_path", "projected")
    @classmethod
    def _refused(cls, value: FreeForm | None, info: ValidationInfo) -> FreeForm | None:
        if value is not None:
            raise ValueError(HOST_PATH_FORBIDDEN if info.field_name == "host_path"
                             else PROJECTED_FORBIDDEN)
        return value

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        sources = (self.persistent_volume_claim, self.config_map, self.secret, self.empty_dir)
        if sum(s is not None for s in sources) != 1:
            raise ValueError(VOLUME_ONE_SOURCE)
        return self


MOUNT_AT_OPERATOR_PATH = (
    "spec.podTemplate.volumeMounts[].mountPath must not be at, above or below the operator's "
    f"mount points ({', '.join(contract.OPERATOR_MOUNT_ROOTS)})")
MOUNT_PATH_DOTS = "spec.podTemplate.volumeMounts[].mountPath must not contain . or .. segments"
SUB_PATH = "spec.podTemplate.volumeMounts[].subPath must be relative, without '..'"


class VolumeMount(SpecModel):
    """Where the trainer container mounts one of spec.podTemplate.volumes."""

    model_config = ConfigDict(json_schema_extra=validations(
        cel(f"{_cel_list(contract.OPERATOR_MOUNT_ROOTS)}.all(p, self.mountPath != p && "
            "!self.mountPath.startsWith(p + '/') && !p.startsWith(self.mountPath + '/'))",
            MOUNT_AT_OPERATOR_PATH, field_path=".mountPath", reason="FieldValueForbidden"),
        cel("!(self.mountPath + '/').contains('/../') && "
            "!(self.mountPath + '/').contains('/./')", MOUNT_PATH_DOTS, field_path=".mountPath"),
    ))

    name: VolumeName = Field(description="A volume of spec.podTemplate.volumes.")
    mount_path: str = Field(pattern=r"^(/[^/]+)+$", max_length=1024,
                            description="Absolute path in the container (not under the "
                                        "operator's mount points).")
    sub_path: str | None = Field(default=None, min_length=1, max_length=1024,
                                 json_schema_extra=validations(cel(_NOT_RELATIVE, SUB_PATH)),
                                 description="Mount this path inside the volume instead of "
                                             "its root.")
    read_only: bool | None = Field(default=None, description="Mount read-only.")

    @field_validator("mount_path")
    @classmethod
    def _not_ours(cls, path: str) -> str:
        if contract.overlaps_operator_mount(path):
            raise ValueError(MOUNT_AT_OPERATOR_PATH)
        if "/../" in f"{path}/" or "/./" in f"{path}/":
            raise ValueError(MOUNT_PATH_DOTS)
        return path

    @field_validator("sub_path")
    @classmethod
    def _relative(cls, path: str | None) -> str | None:
        if path is not None and not _is_relative(path):
            raise ValueError(SUB_PATH)
        return path


# ---- podTemplate: scheduling -----------------------------------------------------------------

class LocalObjectReference(SpecModel):
    """An object in the job's namespace, by name."""

    name: DnsName = Field(description="Name of the object.")


class Affinity(SpecModel):
    """core/v1 Affinity, kept as written (x-kubernetes-preserve-unknown-fields below the three
    keys): scheduling constraints cannot grant privilege, and the apiserver validates them when
    the operator creates the pods."""

    node_affinity: FreeForm | None = Field(default=None, description="core/v1 NodeAffinity.")
    pod_affinity: FreeForm | None = Field(default=None, description="core/v1 PodAffinity.")
    pod_anti_affinity: FreeForm | None = Field(default=None,
                                               description="core/v1 PodAntiAffinity.")


class TopologySpreadConstraint(SpecModel):
    """core/v1 TopologySpreadConstraint: how the worker pods spread over a topology."""

    max_skew: int = Field(ge=1, description="Most the pod counts of two domains may differ.")
    topology_key: str = Field(min_length=1, max_length=316, description="Node label key.")
    when_unsatisfiable: Literal["DoNotSchedule", "ScheduleAnyway"] = Field(
        description="DoNotSchedule or ScheduleAnyway.")
    label_selector: FreeForm | None = Field(
        default=None, description="Pods counted (core/v1 LabelSelector; e.g. "
                                  "matchLabels cogwork.dev/job-name: <job>).")
    match_label_keys: list[Annotated[str, Field(max_length=316)]] | None = Field(
        default=None, max_length=16, description="Label keys whose values the counted pods "
                                                 "share with the new pod.")
    min_domains: int | None = Field(default=None, ge=1, description="Fewest eligible domains.")
    node_affinity_policy: Literal["Honor", "Ignore"] | None = Field(
        default=None, description="Whether nodeAffinity/nodeSelector limit the domains.")
    node_taints_policy: Literal["Honor", "Ignore"] | None = Field(
        default=None, description="Whether node taints limit the domains.")


# ---- podTemplate: security -------------------------------------------------------------------

RUN_AS_ROOT = ("spec.podTemplate.securityContext.runAsUser must not be 0: the pods run as "
               "non-root")
RUN_AS_NON_ROOT = ("spec.podTemplate.securityContext.runAsNonRoot must be true: the pods run "
                   "as non-root")
PRIVILEGED = ("spec.podTemplate.securityContext.privileged is forbidden: the operator creates "
              "no privileged containers")
PRIVILEGE_ESCALATION = ("spec.podTemplate.securityContext.allowPrivilegeEscalation is "
                        "forbidden: the containers run with no_new_privs")
ADD_CAPABILITIES = ("spec.podTemplate.securityContext.capabilities.add is forbidden: the "
                    "containers drop ALL capabilities")


def _refused_flag(message: str, description: str) -> Any:
    """An optional bool that may only be false: a user who writes it true gets `message`."""
    return Field(default=None, description=description, json_schema_extra=validations(
        cel("!self", message, reason="FieldValueForbidden")))


class Capabilities(SpecModel):
    """Linux capabilities: none may be added; every container already drops ALL."""

    add: list[Annotated[str, Field(max_length=64)]] | None = Field(
        default=None, max_length=64, description="Refused when not empty.",
        json_schema_extra=validations(cel("size(self) == 0", ADD_CAPABILITIES,
                                          reason="FieldValueForbidden")))
    drop: list[Annotated[str, Field(max_length=64)]] | None = Field(
        default=None, max_length=64, description="Accepted and redundant: ALL are dropped.")

    @field_validator("add")
    @classmethod
    def _nothing_added(cls, add: list[str] | None) -> list[str] | None:
        if add:
            raise ValueError(ADD_CAPABILITIES)
        return add


class PodSecurityContext(SpecModel):
    """Who the worker processes run as. The rest stays the operator's (PodSecurity
    `restricted`): non-root, no privilege escalation, ALL capabilities dropped, seccomp
    RuntimeDefault; the fields that would loosen it exist only to be refused."""

    run_as_user: int | None = Field(
        default=None, ge=0, le=2**31 - 1,
        json_schema_extra=validations(cel("self != 0", RUN_AS_ROOT,
                                          reason="FieldValueForbidden")),
        description="UID of the worker containers (default 65532; never 0).")
    run_as_group: int | None = Field(default=None, ge=0, le=2**31 - 1,
                                     description="Primary GID (default 65532).")
    fs_group: int | None = Field(default=None, ge=0, le=2**31 - 1,
                                 description="GID owning the volumes (default 65532).")
    fs_group_change_policy: Literal["OnRootMismatch", "Always"] | None = Field(
        default=None, description="When the kubelet changes volume ownership to fsGroup.")
    run_as_non_root: bool | None = Field(
        default=None, json_schema_extra=validations(cel("self", RUN_AS_NON_ROOT,
                                                        reason="FieldValueForbidden")),
        description="Always true; false is refused.")
    privileged: bool | None = _refused_flag(PRIVILEGED, "Refused when true.")
    allow_privilege_escalation: bool | None = _refused_flag(PRIVILEGE_ESCALATION,
                                                            "Refused when true.")
    capabilities: Capabilities | None = Field(default=None,
                                              description="Only drop; add is refused.")

    @field_validator("run_as_user")
    @classmethod
    def _not_root(cls, uid: int | None) -> int | None:
        if uid == 0:
            raise ValueError(RUN_AS_ROOT)
        return uid

    @field_validator("run_as_non_root")
    @classmethod
    def _non_root(cls, value: bool | None) -> bool | None:
        if value is False:
            raise ValueError(RUN_AS_NON_ROOT)
        return value

    @field_validator("privileged", "allow_privilege_escalation")
    @classmethod
    def _refused(cls, value: bool | None, info: ValidationInfo) -> bool | None:
        if value:
            raise ValueError(PRIVILEGED if info.field_name == "privileged"
                             else PRIVILEGE_ESCALATION)
        return value


HOST_FLAGS = {
    "host_network": ("spec.podTemplate.hostNetwork is forbidden: the pods would share the "
                     "node's network namespace"),
    "host_pid": ("spec.podTemplate.hostPID is forbidden: the pods would see the node's "
                 "processes"),
    "host_ipc": "spec.podTemplate.hostIPC is forbidden: the pods would share the node's IPC",
    "automount_service_account_token": (
        "spec.podTemplate.automountServiceAccountToken is forbidden: training pods get no "
        "API token"),
}
UNDECLARED_MOUNT = ("spec.podTemplate.volumeMounts[].name must name a volume of "
                    "spec.podTemplate.volumes")


class PodTemplate(SpecModel):
    """Overrides applied to the pods (workers; the rendezvous pod gets labels, annotations,
    tolerations, priorityClassName and schedulerName, nothing else). A user who may create
    TrainJobs but not privileged pods gets none through the operator: host namespaces,
    hostPath, API tokens, root and added capabilities are refused."""

    model_config = ConfigDict(json_schema_extra=validations(cel(
        "!has(self.volumeMounts) || self.volumeMounts.all(m, has(self.volumes) && "
        "self.volumes.exists(v, v.name == m.name))",
        UNDECLARED_MOUNT, field_path=".volumeMounts")))

    labels: LabelMap | None = Field(
        default=None, max_length=64, json_schema_extra=_no_reserved_keys("labels"),
        description="Extra pod labels. May change only while suspended (Kueue).")
    annotations: StringMap | None = Field(
        default=None, max_length=64, json_schema_extra=_no_reserved_keys("annotations"),
        description="Extra pod annotations. May change only while suspended (Kueue).")
    node_selector: LabelMap | None = Field(
        default=None, max_length=64, json_schema_extra=validations(_label_keys("nodeSelector")),
        description="Worker nodeSelector. May change only while suspended (Kueue).")
    tolerations: list[Toleration] | None = Field(
        default=None, max_length=32, description="Pod tolerations. May change only while "
                                                 "suspended (Kueue).")
    service_account_name: DnsName | None = Field(
        default=None, description="ServiceAccount of the training pods (default: the operator's "
                                  "configured trainer account). Its API token is never mounted.")
    priority_class_name: DnsName | None = Field(default=None,
                                                description="PriorityClass of the pods.")
    scheduler_name: DnsName | None = Field(default=None,
                                           description="Scheduler of the pods (default: the "
                                                       "cluster's default-scheduler).")
    image_pull_secrets: list[LocalObjectReference] | None = Field(
        default=None, max_length=16, description="Secrets the kubelet pulls spec.image with "
                                                 "(worker pods).")
    affinity: Affinity | None = Field(default=None, description="Worker pod affinity (core/v1 "
                                                                "Affinity).")
    topology_spread_constraints: list[TopologySpreadConstraint] | None = Field(
        default=None, max_length=8, description="How the worker pods spread over nodes or "
                                                "zones.")
    volumes: list[Volume] | None = Field(
        default=None, max_length=32,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        description="Extra worker pod volumes: persistentVolumeClaim, configMap, secret or "
                    "emptyDir. Names of the operator's volumes are refused.")
    volume_mounts: list[VolumeMount] | None = Field(
        default=None, max_length=32,
        json_schema_extra={"x-kubernetes-list-type": "map",
                           "x-kubernetes-list-map-keys": ["mountPath"]},
        description="Mounts of spec.podTemplate.volumes in the trainer container (not at the "
                    "operator's mount points).")
    shm_size: Quantity | None = Field(
        default=None, description="Size limit of the worker's memory-backed /dev/shm "
                                  "(DataLoader workers, NCCL); it counts against "
                                  "spec.resources.memory. Default: no limit of its own.")
    security_context: PodSecurityContext | None = Field(
        default=None, description="UID, GID and fsGroup of the worker pods; privilege is "
                                  "refused.")
    read_only_root_filesystem: bool | None = Field(
        default=None, description="Run a user image's trainer container with a read-only root "
                                  f"filesystem, writable {pod_contract.TMP_DIR} and HOME "
                                  f"({pod_contract.HOME_DIR}). Default false; the trainer image "
                                  "always runs this way.")
    host_network: bool | None = _refused_flag(HOST_FLAGS["host_network"], "Refused when true.")
    host_pid: bool | None = Field(
        default=None, alias="hostPID", description="Refused when true.",
        json_schema_extra=validations(cel("!self", HOST_FLAGS["host_pid"],
                                          reason="FieldValueForbidden")))
    host_ipc: bool | None = Field(
        default=None, alias="hostIPC", description="Refused when true.",
        json_schema_extra=validations(cel("!self", HOST_FLAGS["host_ipc"],
                                          reason="FieldValueForbidden")))
    automount_service_account_token: bool | None = _refused_flag(
        HOST_FLAGS["automount_service_account_token"], "Refused when true: the pods never get "
                                                       "an API token.")

    @field_validator(*HOST_FLAGS)
    @classmethod
    def _host_flags(cls, value: bool | None, info: ValidationInfo) -> bool | None:
        if value:
            assert info.field_name is not None
            raise ValueError(HOST_FLAGS[info.field_name])
        return value

    @model_validator(mode="after")
    def _no_reserved(self) -> Self:
        for what, mapping in (("labels", self.labels), ("annotations", self.annotations)):
            bad = sorted(k for k in mapping or {} if k.startswith(contract.RESERVED_KEY_PREFIX))
            if bad:
                raise ValueError(f"spec.podTemplate.{what}: keys starting with "
                                 f"{contract.RESERVED_KEY_PREFIX} are reserved: {bad}")
        for what, mapping in (("labels", self.labels), ("annotations", self.annotations),
                              ("nodeSelector", self.node_selector)):
            bad = sorted(k for k in mapping or {}
                         if len(k) > 317 or not re.match(LABEL_KEY_PATTERN, k))
            if bad:
                raise ValueError(f"spec.podTemplate.{what}: {LABEL_KEY_RULES}: {bad}")
        return self

    @model_validator(mode="after")
    def _mounts_name_volumes(self) -> Self:
        names = [v.name for v in self.volumes or []]
        if len(set(names)) != len(names):
            raise ValueError("spec.podTemplate.volumes: names must be unique")
        paths = [m.mount_path for m in self.volume_mounts or []]
        if len(set(paths)) != len(paths):
            raise ValueError("spec.podTemplate.volumeMounts: mountPaths must be unique")
        for i, mount in enumerate(self.volume_mounts or []):
            if mount.name not in names:
                raise ValueError(f"{UNDECLARED_MOUNT} (spec.podTemplate.volumeMounts[{i}].name "
                                 f"{mount.name!r})")
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
