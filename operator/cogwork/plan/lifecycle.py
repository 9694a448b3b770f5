"""The lifecycle every kind shares: phases, conditions, suspend, deadlines, TTL. Pure, no I/O.

A kind's planner subclasses `Lifecycle` and keeps only what is its own: what "active" means,
how its children stop, suspend and resume, and its own status fields. What users expect to
behave the same on a TrainJob, a TuneJob and a LabelJob is written here once:

- Succeeded and Failed are sticky: a finished job never starts children again; it stops what
  still runs and, with spec.ttlSecondsAfterFinished, deletes itself once that passed.
- spec.suspend stops the children (the kind says how), keeps outputs, and resets startTime, as
  batch/v1 Job does: spec.activeDeadlineSeconds counts from the (re)start.
- spec.activeDeadlineSeconds ends an active job Failed (DeadlineExceeded).
- status.phase is derived from the conditions; Ready/Reconciling/Stalled (kstatus, read by Flux,
  Argo CD and `kubectl wait`) are derived from the phase.
- One `Actions` shape: children to create, delete and patch, a status patch written by the
  kind's typed status model field names, events; `runtime.apply` carries it out the same way
  for every kind, with optimistic concurrency on the status write.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, Literal, NamedTuple, Protocol, TypeVar

from pydantic import BaseModel

from cogwork.api.common import (
    Condition,
    find_condition,
    is_condition_true,
    parse_rfc3339,
    rfc3339,
    set_condition,
    to_wire,
)

Phase = Literal["Pending", "Suspended", "Running", "Restarting", "Succeeded", "Failed"]
TERMINAL: tuple[Phase, ...] = ("Succeeded", "Failed")
# Condition type -> phase, first true one wins: terminal states above everything.
_PHASE_PRECEDENCE: tuple[Phase, ...] = ("Failed", "Succeeded", "Suspended", "Restarting",
                                        "Running")
# How often a finished job without a TTL, and a suspended one, is looked at again.
FINISHED_RECHECK_S = 300.0
SUSPENDED_RECHECK_S = 30.0
TTL_RECHECK_MAX_S = 60.0
# Created: True once the job's children exist; False with REJECTED while the apiserver refuses
# one of them (plan/rejections.py), with a kind's own reason while it waits for an input.
CREATED = "Created"
REJECTED = "ChildRejected"
# Scheduled: False, quoting the scheduler, while a pod of the job cannot be placed.
SCHEDULED = "Scheduled"
# InputAvailable: False once a job an input was read from (a dataset, a model) is deleted while
# this job still uses it.
INPUT_AVAILABLE = "InputAvailable"
# Evicted: True while a queue (Kueue) took the job's quota back; False once it runs again (the
# message keeps what evicted it).
EVICTED = "Evicted"
SOURCE_DELETED = "SourceDeleted"


def derive_phase(conditions: Sequence[Condition]) -> Phase:
    """status.phase for people and printer columns; terminal conditions win."""
    for phase in _PHASE_PRECEDENCE:
        if is_condition_true(conditions, phase):
            return phase
    return "Pending"


def is_finished(conditions: Sequence[Condition]) -> bool:
    return any(is_condition_true(conditions, t) for t in TERMINAL)


def referenced_outcome(doc: Mapping[str, Any]) -> tuple[str | None, str]:
    """("Succeeded" | "Failed" | None, that condition's message) of another of our objects as
    read from the API (what a reference to it waits for)."""
    for condition in (doc.get("status") or {}).get("conditions") or []:
        if condition.get("type") in TERMINAL and condition.get("status") == "True":
            return condition["type"], str(condition.get("message") or "")
    return None, ""


def with_kstatus(conditions: Sequence[Condition], phase: str, generation: int | None,
                 now: datetime | None = None) -> list[Condition]:
    """`conditions` plus Ready/Reconciling/Stalled (sigs.k8s.io/cli-utils kstatus) for a job
    in `phase`: Reconciling=True is "in progress", Stalled=True "failed", Ready=True "current".
    A job is current only once it succeeded, so a GitOps pipeline waiting on it waits for the
    work, and a failure stops it. Our own conditions stay the source of truth."""
    failed = find_condition(conditions, "Failed")
    reason = failed.reason if phase == "Failed" and failed and failed.reason else phase
    message = failed.message if phase == "Failed" and failed else f"phase is {phase}"
    # A child the apiserver refuses (plan/rejections.py) stalls a job that has not finished:
    # only a change to its spec, or to the namespace's quota, lets it go on.
    created = find_condition(conditions, CREATED)
    stalled = phase == "Failed" or (phase not in TERMINAL and created is not None
                                    and created.status == "False" and created.reason == REJECTED)
    if stalled and phase != "Failed" and created is not None:
        reason, message = created.reason or CREATED, created.message or ""
    out = list(conditions)
    for kind, status in (
        ("Ready", "True" if phase == "Succeeded" else "False"),
        ("Reconciling", "False" if phase in TERMINAL or stalled else "True"),
        ("Stalled", "True" if stalled else "False"),
    ):
        out = set_condition(out, kind, status, reason, message,  # type: ignore[arg-type]
                            observed_generation=generation, now=now)
    return out


def failed_status(conditions: Sequence[Condition], reason: str, message: str,
                  generation: int | None, now: datetime | None = None) -> dict[str, Any]:
    """The status patch of a job that failed before any planner could run (an invalid spec)."""
    failed = set_condition(conditions, "Failed", "True", reason, message,
                           observed_generation=generation, now=now)
    return {"phase": "Failed", "observedGeneration": generation,
            "conditions": [to_wire(c) for c in with_kstatus(failed, "Failed", generation, now)]}


def waiting_status(job: Job, reason: str, message: str, now: datetime) -> dict[str, Any]:
    """The status patch of a job that waits for an input (its data, its model, its
    parameters) before any child exists: Created=False with `reason`, phase Pending."""
    generation = job.metadata.generation
    conditions = set_condition(job.status.conditions, CREATED, "False", reason, message,
                               observed_generation=generation, now=now)
    return {"observedGeneration": generation, "phase": "Pending",
            "conditions": [to_wire(c) for c in with_kstatus(conditions, "Pending", generation,
                                                           now)]}


class Event(NamedTuple):
    """A Kubernetes Event on the job (a tuple too: (type, reason, message))."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class ChildRef:
    """One child of the job by kind and name (what to delete)."""

    kind: str
    name: str


@dataclass(frozen=True)
class ChildPatch:
    """A JSON merge patch on one child: a pod's annotations, a trial's spec, an Experiment."""

    kind: str
    name: str
    patch: dict[str, Any]


class StatusPatch(Mapping[str, Any]):
    """A merge patch of a kind's status, written by the field names of its typed status model
    (a typo is a KeyError in tests, not a silently ignored key on the wire) and read, like the
    wire object, by camelCase key. None clears a field."""

    def __init__(self, model: type[BaseModel]) -> None:
        self._model = model
        self._values: dict[str, Any] = {}

    def set(self, **fields: Any) -> None:
        for name, value in fields.items():
            info = self._model.model_fields[name]
            self._values[info.alias or name] = _wire(value)

    def wire(self) -> dict[str, Any]:
        return dict(self._values)

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def _wire(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return to_wire(value)
    if isinstance(value, list):
        return [_wire(v) for v in value]
    if isinstance(value, dict):
        return {k: _wire(v) for k, v in value.items()}
    return value


@dataclass
class Actions:
    """Everything one pass decided, for `runtime.apply`: creates first (in order), then child
    patches and deletes, then the status write, then events; `delete_job` after a TTL."""

    status: StatusPatch
    create: list[dict[str, Any]] = field(default_factory=list)
    delete: list[ChildRef] = field(default_factory=list)
    patch: list[ChildPatch] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    delete_job: bool = False
    requeue_after: float = 5.0
    # Status fields that assume this pass's creates happen (TrainJob: the workers it counts
    # active); not written when the apiserver refuses one (plan/rejections.py).
    unconfirmed: tuple[str, ...] = ()

    @property
    def delete_pods(self) -> list[str]:
        return [ref.name for ref in self.delete if ref.kind == "Pod"]

    def patches(self, kind: str) -> dict[str, dict[str, Any]]:
        """The merge patches of children of `kind`, by name."""
        return {p.name: p.patch for p in self.patch if p.kind == kind}


class _Spec(Protocol):
    suspend: bool
    active_deadline_seconds: int | None
    ttl_seconds_after_finished: int | None


class _Meta(Protocol):
    generation: int | None


class _Status(Protocol):
    conditions: list[Condition]
    start_time: str | None
    completion_time: str | None


class Placed(Protocol):
    """What report_scheduling reads of a kind's pod observation."""

    @property
    def name(self) -> str: ...
    @property
    def unschedulable(self) -> str | None: ...  # the scheduler's message, while unplaced
    @property
    def deleting(self) -> bool: ...


@dataclass(frozen=True)
class Hold:
    """What keeps a job suspended besides its spec.suspend (Kueue has not admitted it, or took
    its quota back): the reason and message of its Suspended condition."""

    reason: str
    message: str
    evicted: bool = False  # an eviction: a Warning event and an Evicted condition that stays


class Job(Protocol):
    """What the lifecycle reads of any of our kinds."""

    @property
    def metadata(self) -> _Meta: ...
    @property
    def spec(self) -> _Spec: ...
    @property
    def status(self) -> _Status: ...


JobT = TypeVar("JobT", bound=Job)


class Lifecycle(Generic[JobT]):
    """One reconcile pass of a job of any kind. Subclasses implement `active` and the hooks."""

    # Conditions set False together with a terminal one (TrainJob adds Restarting).
    ENDS_WITH_JOB: tuple[str, ...] = ("Running",)
    SUSPEND_MESSAGE = "job suspended"

    def __init__(self, job: JobT, now: datetime, status_model: type[BaseModel],
                 hold: Hold | None = None) -> None:
        self.job, self.now, self.hold = job, now, hold
        self.generation = job.metadata.generation
        self.conditions: list[Condition] = list(job.status.conditions)
        self.out = Actions(status=StatusPatch(status_model))

    # -- what a kind implements -----------------------------------------------------------
    def active(self) -> None:
        """The kind's own work while the job runs."""
        raise NotImplementedError

    def stop_children(self) -> None:
        """Finished (or past its deadline): nothing of this job keeps running."""

    def suspend_children(self) -> None:
        self.stop_children()

    def resume_children(self) -> None:
        """Undo suspend_children where the kind kept something suspended."""

    def fails_now(self) -> bool:
        """A failure the kind sees even while suspended (it calls `finish`); True if so."""
        return False

    def on_finished(self) -> None:
        """Every pass of a finished job, after its children were stopped."""

    def own_status(self) -> None:
        """The kind's own status fields, every pass."""

    # -- shared helpers -------------------------------------------------------------------
    def cond(self, kind: str, status: str, reason: str, message: str = "") -> None:
        self.conditions = set_condition(
            self.conditions, kind, status, reason, message,  # type: ignore[arg-type]
            observed_generation=self.generation, now=self.now)

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        self.out.events.append(Event("Warning" if warning else "Normal", reason, message))

    def patch_child(self, kind: str, name: str, patch: dict[str, Any]) -> None:
        """Merge `patch` into what this pass already patches on that child."""
        for i, existing in enumerate(self.out.patch):
            if existing.kind == kind and existing.name == name:
                self.out.patch[i] = ChildPatch(kind, name, _merge(existing.patch, patch))
                return
        self.out.patch.append(ChildPatch(kind, name, patch))

    def delete_child(self, kind: str, name: str) -> None:
        if ChildRef(kind, name) not in self.out.delete:
            self.out.delete.append(ChildRef(kind, name))

    def finish(self, kind: Literal["Succeeded", "Failed"], reason: str, message: str) -> None:
        self.cond(kind, "True", reason, message)
        for other in self.ENDS_WITH_JOB:
            self.cond(other, "False", reason, message)
        self.out.status.set(completion_time=rfc3339(self.now))
        self.stop_children()
        self.event(reason, message, warning=kind == "Failed")

    def mark_created(self, reason: str, message: str, event: str) -> None:
        """Created=True (and one event) when the job first makes its children. A refusal's
        Created=False is left alone: runtime.apply clears it once the apiserver accepts."""
        created = find_condition(self.conditions, CREATED)
        if created is None or (created.status != "True" and created.reason != REJECTED):
            self.cond(CREATED, "True", reason, message)
            self.event("Created", event)

    def report_scheduling(self, pods: Iterable[Placed]) -> None:
        """Scheduled=False with the scheduler's message while one of the job's `pods` waits
        for a node, and a Warning event when that starts; True again once none does. Jobs
        whose pods always fit never carry the condition. A wait that lasts is the deadlines'
        to end (spec.preRunningDeadlineSeconds, activeDeadlineSeconds)."""
        unschedulable = [(p.name, p.unschedulable) for p in pods
                         if p.unschedulable and not p.deleting]
        current = find_condition(self.conditions, SCHEDULED)
        if unschedulable:
            name, why = unschedulable[0]
            more = f" (and {len(unschedulable) - 1} more pod(s))" if len(unschedulable) > 1 else ""
            message = f"pod {name} cannot be scheduled: {why}"[:900] + more
            if current is None or current.status != "False":
                self.event("Unschedulable", message, warning=True)
            self.cond(SCHEDULED, "False", "Unschedulable", message)
        elif current is not None and current.status == "False":
            self.cond(SCHEDULED, "True", "PodsScheduled", "every pod was placed on a node")

    def report_input(self, gone: str | None) -> None:
        """InputAvailable=False, with one Warning event, once the job an input came from was
        deleted while this job uses it (`gone` says which and what it means). The job goes on
        with the input it kept; jobs whose sources stay never carry the condition."""
        if gone is None:
            return
        current = find_condition(self.conditions, INPUT_AVAILABLE)
        if current is None or current.status != "False" or current.message != gone:
            self.event(SOURCE_DELETED, gone, warning=True)
        self.cond(INPUT_AVAILABLE, "False", SOURCE_DELETED, gone)

    def finished(self) -> bool:
        return is_finished(self.conditions)

    # -- the pass -------------------------------------------------------------------------
    def run(self) -> Actions:
        if self.finished():
            self.after_finish()
        elif self.fails_now():
            pass
        elif self.job.spec.suspend or self.hold is not None:
            self.suspend()
        elif not self.deadline_exceeded():
            self.resume()
            self.active()
        self.write_status()
        return self.out

    def after_finish(self) -> None:
        """Sticky: stop what runs, never start anything, honour the TTL."""
        self.stop_children()
        self.on_finished()
        self.out.requeue_after = FINISHED_RECHECK_S
        ttl = self.job.spec.ttl_seconds_after_finished
        done = parse_rfc3339(self.job.status.completion_time)
        if ttl is not None and done is not None:
            expires = done + timedelta(seconds=ttl)
            self.out.delete_job = self.now >= expires
            self.out.requeue_after = max(1.0, min(TTL_RECHECK_MAX_S,
                                                  (expires - self.now).total_seconds()))

    def suspend(self) -> None:
        self.suspend_children()
        reason, message = ("Suspended", "spec.suspend is true")
        if self.hold is not None and not self.job.spec.suspend:
            reason, message = self.hold.reason, self.hold.message
        current = find_condition(self.conditions, "Suspended")
        if current is None or current.status != "True" or current.reason != reason:
            self.event(reason, self.SUSPEND_MESSAGE if reason == "Suspended" else message,
                       warning=self.hold is not None and self.hold.evicted)
        self.cond("Suspended", "True", reason, message)
        self.cond("Running", "False", reason, message)
        if self.hold is not None and self.hold.evicted:
            self.cond(EVICTED, "True", reason, message)  # by what, until it runs again
        # Like batch/v1 Job: the active deadline counts from the (re)start.
        if self.job.status.start_time:
            self.out.status.set(start_time=None)
        self.out.requeue_after = SUSPENDED_RECHECK_S

    def resume(self) -> None:
        evicted = find_condition(self.conditions, EVICTED)
        if evicted is not None and evicted.status == "True":
            self.cond(EVICTED, "False", "Readmitted", f"running again after: {evicted.message}")
        if is_condition_true(self.conditions, "Suspended"):
            self.event("Resumed", "job resumed")
            self.resume_children()
            reason = "Resumed"
        else:  # keep the reason it has: a flip on the second pass would cost a status write
            current = find_condition(self.conditions, "Suspended")
            reason = current.reason if current is not None else "NotSuspended"
        self.cond("Suspended", "False", reason)
        self.mark_started()

    def mark_started(self) -> None:
        if not self.job.status.start_time and "startTime" not in self.out.status:
            self.out.status.set(start_time=rfc3339(self.now))

    def started_at(self) -> datetime | None:
        return parse_rfc3339(self.job.status.start_time)

    def deadline_exceeded(self) -> bool:
        start, limit = self.started_at(), self.job.spec.active_deadline_seconds
        if limit is not None and start is not None and self.now - start > timedelta(seconds=limit):
            self.finish("Failed", "DeadlineExceeded",
                        f"spec.activeDeadlineSeconds ({limit}s) exceeded")
            return True
        return False

    def write_status(self) -> None:
        self.own_status()
        phase = derive_phase(self.conditions)
        conditions = with_kstatus(self.conditions, phase, self.generation, self.now)
        self.out.status.set(observed_generation=self.generation, phase=phase,
                            conditions=conditions)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out
