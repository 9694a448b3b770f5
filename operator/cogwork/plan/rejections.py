"""A child the apiserver refused, the same for every kind. Pure, no I/O.

A 400/403/422 on a create (an admission plugin, a quota, a LimitRange, our own CRD's schema for
a trial) cannot be fixed by sending the same object again, and only the user can change it: so
the job says why in its `Created` condition (False, reason ChildRejected: Kubeflow Trainer's
TrainJob has the same condition), quoting the apiserver's message and naming the spec field
that made the child, kstatus reports it Stalled, and the create is retried with a backoff
that grows with the time it has been refused (a quota may be raised later; a spec change
retries at once). Nothing else of the job changes: children made earlier stay.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cogwork.api.common import (
    Condition,
    ConditionStatus,
    find_condition,
    parse_rfc3339,
    set_condition,
    to_wire,
)
from cogwork.plan.lifecycle import CREATED, REJECTED, TERMINAL, derive_phase, with_kstatus

CREATED_REASON = "ChildrenCreated"
RETRY_MIN_S = 5.0
RETRY_MAX_S = 300.0
MESSAGE_LIMIT = 1000


@dataclass(frozen=True)
class Rejection:
    """What the apiserver said about one child: its kind and name, the HTTP code, its message
    and the child's fields its Status named (details.causes[].field)."""

    kind: str
    name: str
    code: int
    message: str
    fields: tuple[str, ...] = ()


# The child's field -> the job's spec field that sets it, per kind of job and child. The
# first match wins; admission plugins that name no field are matched by their message below.
_POD_TEMPLATE_FIELDS = (
    ("metadata.labels", "spec.podTemplate.labels"),
    ("metadata.annotations", "spec.podTemplate.annotations"),
    ("spec.tolerations", "spec.podTemplate.tolerations"),
    ("spec.nodeSelector", "spec.podTemplate.nodeSelector"),
    ("spec.affinity", "spec.podTemplate.affinity"),
    ("spec.topologySpreadConstraints", "spec.podTemplate.topologySpreadConstraints"),
    ("spec.priorityClassName", "spec.podTemplate.priorityClassName"),
    ("spec.serviceAccountName", "spec.podTemplate.serviceAccountName"),
    ("spec.schedulerName", "spec.podTemplate.schedulerName"),
    ("spec.imagePullSecrets", "spec.podTemplate.imagePullSecrets"),
    ("spec.volumes", "spec.podTemplate.volumes"),
    ("spec.containers[0].resources", "spec.resources"),
    ("spec.containers[0].image", "spec.image"),
    ("spec.containers[0].env", "spec.env"),
    ("spec.containers[0].volumeMounts", "spec.podTemplate.volumeMounts"),
)
# Admission plugins without causes: (words in the message, the spec field), per kind of job.
_QUOTA_WORDS = ("exceeded quota", "must specify", "maximum", "minimum", "limit to request ratio")
_MESSAGE_FIELDS: dict[tuple[str, str], tuple[tuple[tuple[str, ...], str], ...]] = {
    ("TrainJob", "Pod"): (
        (("PriorityClass",), "spec.podTemplate.priorityClassName"),
        (("service account", "serviceaccount"), "spec.podTemplate.serviceAccountName"),
        (_QUOTA_WORDS, "spec.resources"),
    ),
    ("TrainJob", "PersistentVolumeClaim"): ((_QUOTA_WORDS, "spec.checkpoint.size"),
                                            (("storageclass",), "spec.checkpoint")),
    ("LabelJob", "Pod"): ((_QUOTA_WORDS, "spec.inference"),),
    ("LabelJob", "PersistentVolumeClaim"): ((_QUOTA_WORDS, "spec.output.size"),),
    ("TuneJob", "TrainJob"): ((("exceeded quota",), "spec.budget.parallelTrials"),),
}


def spec_field(job_kind: str, rejection: Rejection) -> str | None:
    """The job's spec field the refused child came from, when one can be told."""
    if job_kind == "TuneJob" and rejection.kind == "TrainJob":
        for field in rejection.fields:  # a trial's own field: the template's
            if field.startswith("spec."):
                return f"spec.trialTemplate.{field.removeprefix('spec.')}"
    if job_kind == "TrainJob" and rejection.kind == "Pod":
        for field in rejection.fields:
            for prefix, spec in _POD_TEMPLATE_FIELDS:
                if field == prefix or field.startswith((f"{prefix}.", f"{prefix}[")):
                    return spec
    text = rejection.message.lower()
    for words, spec in _MESSAGE_FIELDS.get((job_kind, rejection.kind), ()):
        if any(word.lower() in text for word in words):
            return spec
    return None


def describe(job_kind: str, rejection: Rejection) -> str:
    """The condition's message: which child, the apiserver's words, the spec field."""
    field = spec_field(job_kind, rejection)
    where = f" (check {field})" if field else ""
    text = (f"{rejection.kind} {rejection.name} refused by the apiserver ({rejection.code}): "
            f"{rejection.message}")
    return f"{text[:MESSAGE_LIMIT - len(where)]}{where}"


def created_status(status: dict[str, Any], current: list[Condition],
                   rejection: Rejection | None, job_kind: str, generation: int | None,
                   now: datetime, unconfirmed: tuple[str, ...] = ()) -> dict[str, Any]:
    """The pass's status patch with the Created condition after its creates: False quoting
    `rejection` (without the `unconfirmed` fields, which assumed the refused child was made:
    a worker counted active would read as lost on the next pass), or True again on the first
    pass of an unfinished job that the apiserver refused nothing (what it refused was
    accepted, or is needed no more: the pass that made it may have lost its status write).
    Untouched otherwise: the kind's own Created (a wait for an input, the first creation) is
    the planner's."""
    conditions = [Condition.model_validate(c) for c in status.get("conditions") or []] \
        if "conditions" in status else list(current)
    before = find_condition(conditions, CREATED)
    if rejection is not None:
        status = {k: v for k, v in status.items() if k not in unconfirmed}
        conditions = _set(conditions, "False", REJECTED, describe(job_kind, rejection),
                          generation, now)
    elif before is not None and before.status == "False" and before.reason == REJECTED \
            and status.get("phase") not in TERMINAL:
        conditions = _set(conditions, "True", CREATED_REASON, "every child was accepted",
                          generation, now)
    else:
        return status
    phase = derive_phase(conditions)
    wired = [to_wire(c) for c in with_kstatus(conditions, phase, generation, now)]
    return {**status, "phase": phase, "conditions": wired}


def _set(conditions: list[Condition], status: ConditionStatus, reason: str, message: str,
         generation: int | None, now: datetime) -> list[Condition]:
    return set_condition(conditions, CREATED, status, reason, message,
                         observed_generation=generation, now=now)


def is_new(current: list[Condition], rejection: Rejection, job_kind: str) -> bool:
    """Whether this refusal is news (an Event then): not the one the condition already says."""
    before = find_condition(current, CREATED)
    return before is None or before.status != "False" or \
        before.message != describe(job_kind, rejection)


def retry_after(current: list[Condition], now: datetime) -> float:
    """Seconds until the refused create is tried again: as long as it has been refused so far
    (5 s, 5 s, 10 s, 20 s, ... at most 5 min), so a refusal that lasts costs a handful of
    attempts an hour, not one every few seconds."""
    before = find_condition(current, CREATED)
    since = parse_rfc3339(before.last_transition_time) \
        if before is not None and before.status == "False" else None
    elapsed = (now - since).total_seconds() if since is not None else 0.0
    return max(RETRY_MIN_S, min(RETRY_MAX_S, elapsed))
