"""Pieces shared by every Cogwork kind: model bases, conditions, quantities, CEL helpers.

Models here are the single source of the CRD schemas (see `cogwork.api.crdgen`): field
descriptions become `kubectl explain` text, `Field` constraints become OpenAPI constraints and
`cel(...)` rules attached through `json_schema_extra` become `x-kubernetes-validations`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel

GROUP = "cogwork.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "cogwork"


class SpecModel(BaseModel):
    """Base of everything users write: camelCase on the wire, unknown fields rejected.

    Rejecting unknown fields matches `kubectl apply`'s strict field validation, so `cogwork run`
    reports a typo the same way the cluster would.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="forbid",
    )


class StatusModel(BaseModel):
    """Base of everything the operator writes: camelCase, unknown fields ignored.

    Ignoring unknown fields lets an older operator read a status a newer one wrote.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="ignore",
    )


def problem_message(problem: Mapping[str, Any]) -> str:
    """One pydantic error as the user wrote the manifest: the field path (`spec.env[0].name`)
    and the rule, without pydantic's prefixes ("Value error, ...") or the model names it adds
    to a union member's path. A rule that names its field itself is not prefixed twice."""
    path = ""
    for part in problem["loc"]:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not _is_model_name(part):
            path += f".{part}" if path else str(part)
    text = str(problem["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        text = text.removeprefix(prefix)
    if not path or text.startswith(("spec.", "metadata.")):
        return text
    return f"{path}: {text}"


def _is_model_name(part: object) -> bool:
    # Unions and validators add a location part per member ("function-after[...]", "int").
    return isinstance(part, str) and ("[" in part or part in ("int", "str", "float", "bool"))


def to_wire(model: BaseModel) -> dict[str, Any]:
    """Dump a model as the JSON a Kubernetes object holds (camelCase, no nulls)."""
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


# ---------------------------------------------------------------------------------------------
# CEL validation rules (x-kubernetes-validations)
# ---------------------------------------------------------------------------------------------

CelReason = Literal["FieldValueInvalid", "FieldValueForbidden", "FieldValueRequired",
                    "FieldValueDuplicate"]


def cel(
    rule: str,
    message: str,
    *,
    field_path: str | None = None,
    reason: CelReason | None = None,
    message_expression: str | None = None,
) -> dict[str, str]:
    """One `x-kubernetes-validations` entry. `message` stays as the fallback of an expression."""
    entry = {"rule": rule, "message": message}
    if message_expression is not None:
        entry["messageExpression"] = message_expression
    if field_path is not None:
        entry["fieldPath"] = field_path
    if reason is not None:
        entry["reason"] = reason
    return entry


def validations(*rules: dict[str, str], **extra: Any) -> dict[str, Any]:
    """`json_schema_extra` carrying CEL rules (and any other schema keys) for a model or field."""
    return {"x-kubernetes-validations": list(rules), **extra}


def defaults_of(model: type[BaseModel]) -> dict[str, Any]:
    """Schema `default` of an object field: its materialised defaults, not `{}`, so `kubectl
    explain` shows them and CEL never sees a bare `{}` (the apiserver validates a default with
    CEL before nested defaults apply: rules such as `self.min <= self.max` would fail). Empty
    lists and objects are left out: objects stored before such a field existed must still
    equal their defaulted update (the immutability rules compare whole blocks)."""
    return {"default": {k: v for k, v in to_wire(model()).items() if v not in ([], {})}}


# A DNS-1035 label (what Service names need): children are named after the job.
DNS_1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"


def name_rules(max_length: int, pattern_message: str, length_message: str
               ) -> tuple[dict[str, str], dict[str, str]]:
    """The CEL rules on metadata.name every kind has (children are named after it), reported
    at metadata.name rather than at the object's root (which kubectl prints as `<nil>`)."""
    return (cel(f"self.metadata.name.matches('{DNS_1035_LABEL}')", pattern_message,
                field_path=".metadata.name"),
            cel(f"size(self.metadata.name) <= {max_length}", length_message,
                field_path=".metadata.name"))


def cel_present(base: str, path: str) -> str:
    """CEL that is true when `base.path` exists; safe when an intermediate object is absent.

    CEL's `&&` absorbs the error of `has(x.a.b)` when `x.a` is absent because `has(x.a)` is
    already false, so no ternaries are needed.
    """
    parts = path.split(".")
    return " && ".join(f"has({base}.{'.'.join(parts[: i + 1])})" for i in range(len(parts)))


def cel_unchanged(path: str, new: str = "self", old: str = "oldSelf") -> str:
    """CEL that is true when `path` is equally absent or equal in the new and the old object.

    A per-field `self == oldSelf` rule only runs when the field exists on both sides, so adding
    or removing an optional field would slip through; comparing presence closes that gap.
    """
    present_new, present_old = cel_present(new, path), cel_present(old, path)
    if "." in path:  # a chain of has() needs parentheses to be compared or negated
        present_new, present_old = f"({present_new})", f"({present_old})"
    return (f"({present_new} == {present_old} && "
            f"(!{present_new} || {new}.{path} == {old}.{path}))")


# ---------------------------------------------------------------------------------------------
# Quantities (resource.Quantity on the wire: integer or string)
# ---------------------------------------------------------------------------------------------

# The apiserver's own quantity grammar (k8s.io/apimachinery/pkg/api/resource).
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
_QUANTITY_RE = re.compile(QUANTITY_PATTERN)
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
            "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
            "P": Decimal("1e15"), "E": Decimal("1e18")}


def parse_quantity(value: str | int) -> Decimal:
    """Exact value of a Kubernetes quantity ("500m" -> 0.5, "2Gi" -> 2147483648)."""
    text = str(value).strip()
    if not _QUANTITY_RE.match(text):
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    for suffix, factor in _BINARY.items():
        if text.endswith(suffix):
            return Decimal(text[: -len(suffix)]) * factor
    if text[-1] in _DECIMAL and not text[-1].isdigit():
        return Decimal(text[:-1]) * _DECIMAL[text[-1]]
    return Decimal(text)  # plain number or exponent form ("1e3")


def _quantity_text(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected a quantity (integer or string such as '500m'), got {value!r}")
    text = str(value)
    if parse_quantity(text) <= 0:
        raise ValueError(f"quantity must be positive, got {text!r}")
    return text


# Stored as text; the CRD accepts integers too (x-kubernetes-int-or-string), like core resources.
Quantity = Annotated[
    str,
    BeforeValidator(_quantity_text),
    WithJsonSchema({
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "pattern": QUANTITY_PATTERN,
        "x-kubernetes-int-or-string": True,
    }),
]

# A decimal number carried as a string (the API has no floats), e.g. "0.01" or "3e-4".
DECIMAL_PATTERN = r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?$"
DecimalString = Annotated[str, Field(pattern=DECIMAL_PATTERN, max_length=32)]

# DNS-1123 names (object names, claim names, service accounts).
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DnsName = Annotated[str, Field(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253)]


# ---------------------------------------------------------------------------------------------
# spec.managedBy: which controller reconciles a job (batch/v1 Job, JobSet, Kubeflow Trainer)
# ---------------------------------------------------------------------------------------------

# The value that means "Cogwork's operator", as unset does.
MANAGED_BY_COGWORK = f"{GROUP}/operator"
MANAGED_BY_MAX_LENGTH = 63  # as batch/v1 Job's
# A domain-prefixed path, as the apiserver checks a Job's (IsDomainPrefixedPath): a DNS-1123
# subdomain, "/", then HTTP path characters (RFC 3986). No backslash, no double quote: the
# pattern goes verbatim into a CEL string.
MANAGED_BY_PATTERN = (r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
                      r"/[-A-Za-z0-9/._~%!$&'()*+,;=:]+$")
MANAGED_BY_MESSAGE = ("spec.managedBy must be a domain-prefixed path such as "
                      "kueue.x-k8s.io/multikueue: a DNS subdomain, '/', then a path")
_MANAGED_BY_RE = re.compile(MANAGED_BY_PATTERN)
MANAGED_BY_DESCRIPTION = (
    "The controller that reconciles this job. Unset or cogwork.dev/operator: Cogwork's "
    "operator. Anything else (MultiKueue: kueue.x-k8s.io/multikueue) and the operator leaves "
    "the job alone: no children, no status. A domain-prefixed path of at most 63 characters; "
    "immutable.")


def _domain_prefixed_path(value: str) -> str:
    if not _MANAGED_BY_RE.match(value):
        raise ValueError(MANAGED_BY_MESSAGE)
    return value


ManagedBy = Annotated[
    str,
    Field(max_length=MANAGED_BY_MAX_LENGTH, json_schema_extra=validations(
        cel(f'self.matches("{MANAGED_BY_PATTERN}")', MANAGED_BY_MESSAGE))),
    AfterValidator(_domain_prefixed_path),
]


def managed_elsewhere(body: Mapping[str, Any]) -> bool:
    """Whether a job's spec.managedBy hands it to another controller, so that Cogwork's
    operator must leave it alone (as the Job controller does with a Job whose managedBy is
    not its own). Reads the raw object: it is decided before the spec is parsed."""
    managed_by = (body.get("spec") or {}).get("managedBy")
    return managed_by is not None and managed_by != MANAGED_BY_COGWORK


# ---------------------------------------------------------------------------------------------
# Conditions
# ---------------------------------------------------------------------------------------------

ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(StatusModel):
    """One observation of the object's state (metav1.Condition)."""

    type: str = Field(description="Type of the condition, e.g. Running or Succeeded.",
                      max_length=316)
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(default="", max_length=1024,
                        description="CamelCase machine-readable reason of the last transition.")
    message: str = Field(default="", max_length=32768,
                         description="Human-readable details of the last transition.")
    last_transition_time: str | None = Field(
        default=None, description="When the status last changed (RFC 3339).",
        json_schema_extra={"format": "date-time"})
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation the condition was computed from.")


ConditionList = Annotated[
    list[Condition],
    Field(json_schema_extra={"x-kubernetes-list-type": "map",
                             "x-kubernetes-list-map-keys": ["type"]}),
]


class TunedValue(StatusModel):
    """One parameter of a TuneJob's best trial and where it goes: a spec field or an env
    variable, exactly as the TuneJob wrote it into its trials."""

    name: str = Field(description="The TuneJob's parameter name.")
    field: str | None = Field(default=None, description="The spec field it sets "
                                                        "(task.learningRate, ...).")
    env: str | None = Field(default=None, description="The env variable it sets.")
    value: str = Field(description="Its value, as text.")


class TunedFrom(StatusModel):
    """The parameters a `fromTuneJob` reference resolved to, kept once the job started so the
    job no longer needs the TuneJob (it may be deleted) and never changes under a run."""

    tune_job: str = Field(description="The TuneJob.")
    trial: str = Field(description="Its best trial (a TrainJob).")
    values: list[TunedValue] = Field(default_factory=list, description="The parameters.")


class ResolvedInput(StatusModel):
    """The file a reference to another job (spec.data.fromLabelJob, spec.model.fromTrainJob)
    resolved to, kept once the job started: its pods read this, whatever later happens to the
    job it came from (a deletion while in use shows as InputAvailable=False)."""

    kind: str = Field(description="The referenced job's kind.")
    name: str = Field(description="The referenced job.")
    uid: str | None = Field(default=None, description="Its uid (a job of that name created "
                                                      "later is another one).")
    path: str = Field(description="The file, relative to the claim's mount (or in the image).")
    claim_name: str | None = Field(default=None, description="The claim that holds it.")
    format: str | None = Field(default=None, description="A model file's format.")
    version: str | None = Field(default=None, description="A model's version.")


class JobStatus(StatusModel):
    """What the shared lifecycle (plan/lifecycle.py) writes on every kind."""

    observed_generation: int | None = Field(default=None,
                                            description="Generation the status describes.")
    start_time: str | None = Field(default=None, json_schema_extra={"format": "date-time"},
                                   description="When the job last became active (suspend "
                                               "resets it: activeDeadlineSeconds counts from "
                                               "here).")
    completion_time: str | None = Field(default=None, json_schema_extra={"format": "date-time"},
                                        description="When the job succeeded or failed.")


def rfc3339(moment: datetime | None = None) -> str:
    """Kubernetes' timestamp format (second precision, UTC, `Z`)."""
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str | None) -> datetime | None:
    """A Kubernetes timestamp (or None) as an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def find_condition(conditions: Sequence[Condition], condition_type: str) -> Condition | None:
    return next((c for c in conditions if c.type == condition_type), None)


def is_condition_true(conditions: Sequence[Condition], condition_type: str) -> bool:
    found = find_condition(conditions, condition_type)
    return found is not None and found.status == "True"


def set_condition(
    conditions: Sequence[Condition],
    condition_type: str,
    status: ConditionStatus,
    reason: str,
    message: str = "",
    *,
    observed_generation: int | None = None,
    now: datetime | None = None,
) -> list[Condition]:
    """Return a new list with the condition set; other conditions keep their order.

    lastTransitionTime changes only when the status changes, so `kubectl wait` and humans see
    when the state really flipped, not when it was last re-asserted.
    """
    previous = find_condition(conditions, condition_type)
    transition = (previous.last_transition_time
                  if previous is not None and previous.status == status else None)
    updated = Condition(
        type=condition_type,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=transition or rfc3339(now),
        observed_generation=observed_generation,
    )
    if previous is None:
        return [*conditions, updated]
    return [updated if c.type == condition_type else c for c in conditions]


# ---------------------------------------------------------------------------------------------
# What a kind needs to become a CustomResourceDefinition (rendered by cogwork.api.crdgen)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    json_path: str
    type: Literal["string", "integer", "number", "boolean", "date"]
    description: str = ""
    priority: int = 0


@dataclass(frozen=True)
class ScaleSubresource:
    spec_replicas_path: str
    status_replicas_path: str
    label_selector_path: str | None = None


@dataclass(frozen=True)
class CustomResource:
    """Everything the CRD generator needs to know about one kind."""

    kind: str
    plural: str
    singular: str
    spec_model: type[BaseModel]
    status_model: type[BaseModel]
    description: str
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = (CATEGORY,)
    printer_columns: tuple[PrinterColumn, ...] = ()
    scale: ScaleSubresource | None = None
    # Rules on the whole object (they may read metadata.name).
    root_validations: tuple[dict[str, str], ...] = field(default=())
