"""Process-wide pieces the controllers share: operator settings, wake-ups, the reconcile loop
and `apply`, which carries out any kind's planned `Actions` the same way.

The wake-up events are a latency optimisation only. Losing them (operator restart) loses nothing:
every loop also wakes on its own timer and recomputes from the API objects.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import kopf
from pydantic import BaseModel, ValidationError

from cogwork import kube, metrics
from cogwork.api.common import Condition, CustomResource, managed_elsewhere, problem_message
from cogwork.api.crdgen import RESOURCES
from cogwork.controllers.config import OperatorConfig
from cogwork.plan import rejections
from cogwork.plan.lifecycle import (
    REJECTED,
    Actions,
    ChildPatch,
    ChildRef,
    Event,
    Job,
    failed_status,
    waiting_status,
)
from cogwork.plan.rejections import Rejection
from cogwork.plan.settings import RenderSettings
from cogwork.plan.tunejob_katib_names import (
    EXPERIMENT_KIND,
    EXPERIMENT_PLURAL,
    KATIB_API_VERSION,
    KATIB_GROUP,
    KATIB_VERSION,
)

log = logging.getLogger(__name__)
ERROR_RETRY_S = 5.0
INVALID_RECHECK_S = 300.0
INPUT_RECHECK_S = 5.0  # how often a job waiting for an input (data, parameters) looks again
STALE_RETRY_S = 0.3  # the watch delivers our own or a report's write within milliseconds

_wakeups: dict[tuple[str, str, str], asyncio.Event] = {}
# Loops run by `follow` (no Kopf daemon): each one's task and the object's latest body.
_loops: dict[tuple[str, str, str], asyncio.Task[None]] = {}
_bodies: dict[tuple[str, str, str], bytes] = {}
# An object whose last status write (by `apply`) its watch has not delivered yet, with the
# resourceVersion that write was based on and when it was made. A pass on the older body would
# act on a state the job has left (create the store pod of a job it has just failed), so the
# next pass waits for the watch, at most UNSEEN_WRITE_WAIT_S. The write carried that
# resourceVersion as a precondition, so the first event with another one is the write.
_unseen_writes: dict[tuple[str, str, str], tuple[str, float]] = {}
UNSEEN_WRITE_WAIT_S = 5.0


@dataclass(frozen=True)
class _Refusal:
    """A job's last refused create, and when it is due again (unless its spec changes). In
    memory only, as the wake-ups are: a restarted operator retries once at once."""

    rejection: Rejection
    retry_at: float  # time.monotonic()
    generation: int | None


_refusals: dict[tuple[str, str, str], _Refusal] = {}
# Objects whose spec.managedBy names another controller, logged once each (until deleted).
_elsewhere: set[tuple[str, str, str]] = set()
_KOPF_PER_EVENT_VARS = frozenset({"cause_var", "handler_var", "subregistry_var", "subexecuted_var",
                                  "sublifecycle_var", "subsettings_var", "subrefs_var"})


@functools.cache
def config() -> OperatorConfig:
    return OperatorConfig.from_env()


@functools.cache
def render_settings() -> RenderSettings:
    cfg = config()
    store = {k: v for k, v in (("rdzv_cpu", cfg.rdzv_cpu), ("rdzv_memory", cfg.rdzv_memory))
             if v is not None}
    return RenderSettings(
        report_base_url=cfg.report_base_url,
        report_ca_pem=cfg.report_ca_pem,
        service_account_name=cfg.trainer_service_account,
        image=cfg.trainer_image,
        extra_env=cfg.trainer_extra_env,
        **store,
    )


def wake(controller: str, namespace: str, name: str) -> None:
    """Cut a loop's sleep short. Call it on the event loop (from async handlers only):
    asyncio.Event is not thread-safe, and a set() from a worker thread may not wake the loop."""
    key = (controller, namespace, name)
    if key in _loops:  # also during the loop's first pass, before it ever slept: kept for it
        _wakeups.setdefault(key, asyncio.Event()).set()


async def _sleep(key: tuple[str, str, str], seconds: float) -> None:
    """Sleep until woken or `seconds` pass."""
    event = _wakeups.setdefault(key, asyncio.Event())
    try:
        await asyncio.wait_for(event.wait(), timeout=seconds)
    except TimeoutError:
        pass
    finally:
        event.clear()


def spec_changed(body: Any) -> bool:
    """Whether the spec moved past what status last reflected. Our own status writes do not
    bump the generation, so only spec changes need a prompt pass."""
    meta, status = body.get("metadata") or {}, body.get("status") or {}
    return bool(meta.get("generation") != status.get("observedGeneration"))


def status_changed(current: dict[str, Any], patch: dict[str, Any]) -> bool:
    """Skip no-op writes: they would cost an API call and wake every watcher."""
    return any(current.get(key) != value for key, value in patch.items())


async def _run_loop(key: tuple[str, str, str],
                    one_pass: Callable[[], Awaitable[float | None]]) -> None:
    """A per-object reconcile loop: pass, sleep until woken or due, repeat until the pass
    returns None (the object is gone). A pass that raises is retried, never fatal."""
    controller, namespace, name = key
    metrics.ACTIVE_RECONCILERS.labels(controller).inc()
    try:
        while True:
            started = time.monotonic()
            try:
                delay = await one_pass()
            except Exception:
                metrics.RECONCILE_ERRORS.labels(controller).inc()
                metrics.RECONCILE_TOTAL.labels(controller, "error").inc()
                log.exception("reconcile of %s %s/%s failed; retrying", controller, namespace,
                              name)
                delay = ERROR_RETRY_S
            finally:
                metrics.RECONCILE_TIME.labels(controller).observe(time.monotonic() - started)
            if delay is None:
                return
            await _sleep(key, delay)
    finally:
        metrics.ACTIVE_RECONCILERS.labels(controller).dec()


def follow(controller: str, namespace: str, name: str, body: Mapping[str, Any],
           deleted: bool, one_pass: Callable[[Mapping[str, Any]], Awaitable[float | None]]
           ) -> None:
    """Keep one reconcile loop per object, driven by its watch events (call this from an async
    `kopf.on.event` handler with every event). Unlike a Kopf daemon it needs no finalizer: no
    extra write per object, and deleting an object never waits for the operator. Children go
    with their owner through owner references; the loop just stops."""
    key = (controller, namespace, name)
    written = (str(body.get("kind", "")), namespace, name)  # how apply keys what it wrote
    if deleted or (body.get("metadata") or {}).get("deletionTimestamp"):
        _unseen_writes.pop(written, None)
        _refusals.pop(written, None)
        _bodies.pop(key, None)
        task = _loops.pop(key, None)
        if task is not None:
            task.cancel()
        _wakeups.pop(key, None)
        return
    _bodies[key] = _compact(body)  # each pass reads the newest body
    if written in _unseen_writes and \
            (body.get("metadata") or {}).get("resourceVersion") != _unseen_writes[written][0]:
        del _unseen_writes[written]  # the watch caught up with our write
    if key not in _loops:
        _loops[key] = asyncio.create_task(_follow(key, one_pass), name=f"{controller}:{key[1:]}",
                                          context=_loop_context())


def one_at_a_time(children: list[dict[str, Any]]) -> Iterable[list[dict[str, Any]]]:
    """Create children in the planner's order (a claim before the pod that mounts it)."""
    return ([child] for child in children)


async def create_children(namespace: str, owner: Mapping[str, Any],
                          groups: Iterable[list[dict[str, Any]]]) -> Rejection | None:
    """Create an owner's children: each group at once, the groups in order (a later group may
    depend on an earlier one). Names are deterministic, so a child that exists already (409:
    made before a restart) is skipped. Stops after a group with a child the apiserver refused
    and returns that refusal. Created pods count in cogwork_pod_actions_total."""
    for group in groups:
        for child in group:
            kopf.adopt(child, owner=owner)  # type: ignore[arg-type]
        results = await asyncio.gather(*(_create(namespace, child) for child in group),
                                       return_exceptions=True)
        refused: Rejection | None = None
        for child, result in zip(group, results, strict=True):
            if isinstance(result, kube.Rejected):
                refused = refused or Rejection(child["kind"], child["metadata"]["name"],
                                               result.status, str(result), result.fields)
            elif isinstance(result, BaseException):
                raise result
        metrics.POD_ACTIONS.labels("create").inc(
            sum(ok is True for ok, child in zip(results, group, strict=True)
                if child["kind"] == "Pod"))
        if refused is not None:
            return refused
    return None


async def _create(namespace: str, child: dict[str, Any]) -> bool:
    if child["apiVersion"] == KATIB_API_VERSION and child["kind"] == EXPERIMENT_KIND:
        return await kube.create_namespaced_object(KATIB_GROUP, KATIB_VERSION,
                                                   EXPERIMENT_PLURAL, namespace, child)
    return await kube.create(namespace, child)


async def _patch(namespace: str, child: ChildPatch) -> None:
    if child.kind == "Pod":
        await kube.patch_pod(namespace, child.name, child.patch)
    elif child.kind == EXPERIMENT_KIND:
        await kube.patch_namespaced_object(KATIB_GROUP, KATIB_VERSION, EXPERIMENT_PLURAL,
                                           namespace, child.name, child.patch)
    else:  # one of our kinds (a trial TrainJob)
        await kube.patch_custom(_plural(child.kind), namespace, child.name, child.patch)


async def _delete(namespace: str, child: ChildRef) -> None:
    if child.kind == "Pod":
        if await kube.delete_pod(namespace, child.name):
            metrics.POD_ACTIONS.labels("delete").inc()
    elif child.kind == EXPERIMENT_KIND:
        await kube.delete_namespaced_object(KATIB_GROUP, KATIB_VERSION, EXPERIMENT_PLURAL,
                                            namespace, child.name)
    else:
        await kube.delete_custom(_plural(child.kind), namespace, child.name)


def _plural(kind: str) -> str:
    return next(r.plural for r in RESOURCES if r.kind == kind)


async def apply(resource: CustomResource, namespace: str, name: str, body: Mapping[str, Any],
                actions: Actions,
                groups: Callable[[list[dict[str, Any]]], Iterable[list[dict[str, Any]]]]
                = one_at_a_time) -> bool:
    """Carry out one pass's decisions for a job of any kind: create, patch and delete
    children, write the status, post events, delete the job after its TTL. False when the
    status write found this pass's view stale (then nothing after it happened: redo the pass).

    Optimistic concurrency: counters (restarts, activeNodes, trial counts) are computed from
    the status the pass read, so a write based on a stale view (our previous write or a
    progress report not yet in the watch cache) is refused and the pass is redone on a fresh
    view. Children first: a repeated create after a refused write gets 409 and changes nothing.
    """
    key = (resource.kind, namespace, name)
    generation = (body.get("metadata") or {}).get("generation")
    held = _refusals.get(key)
    if held is not None and not (actions.create and held.generation == generation
                                 and time.monotonic() < held.retry_at):
        held = None  # due again, the spec changed, or nothing left to create
    if held is not None:  # not due yet: the refusal stands, nothing is sent
        refused: Rejection | None = held.rejection
        actions.create.clear()
        actions.requeue_after = max(STALE_RETRY_S, held.retry_at - time.monotonic())
    else:
        refused = await create_children(namespace, body, groups(actions.create))
    for patch in actions.patch:
        await _patch(namespace, patch)
    for child in actions.delete:
        await _delete(namespace, child)
    status = _with_created(resource, namespace, name, body, actions, refused,
                           retried=held is None)
    if status_changed(body.get("status") or {}, status):
        version = (body.get("metadata") or {}).get("resourceVersion")
        try:
            await kube.patch_custom_status(resource.plural, namespace, name, status, version)
            _unseen_writes[(resource.kind, namespace, name)] = (str(version), time.monotonic())
        except kube.Conflict:
            log.debug("%s %s/%s changed under this pass; redoing it", resource.kind, namespace,
                      name)
            return False
    for event in actions.events:
        kopf.event(body, type=event.type, reason=event.reason,  # type: ignore[arg-type]
                   message=event.message)
    if actions.delete_job:
        kopf.info(body, reason="TTLExpired",  # type: ignore[arg-type]
                  message="spec.ttlSecondsAfterFinished passed")
        await kube.delete_custom(resource.plural, namespace, name)
    return True


def _with_created(resource: CustomResource, namespace: str, name: str, body: Mapping[str, Any],
                  actions: Actions, refused: Rejection | None, retried: bool) -> dict[str, Any]:
    """The pass's status with the Created condition its creates earned (plan/rejections.py);
    a refused attempt is one log line and, when it is news, one Warning event, and the next
    attempt backs off (a pass before it is due, woken by a child's event, sends nothing)."""
    current = [Condition.model_validate(c)
               for c in (body.get("status") or {}).get("conditions") or []]
    generation = (body.get("metadata") or {}).get("generation")
    now = datetime.now(UTC)
    key = (resource.kind, namespace, name)
    if refused is None:
        _refusals.pop(key, None)
    else:
        # What the planner announced as made was not: its Created event would mislead.
        actions.events[:] = [e for e in actions.events if e.reason != "Created"]
    if refused is not None and retried:
        message = rejections.describe(resource.kind, refused)
        retry = rejections.retry_after(current, now)
        log.warning("%s %s/%s: %s; retrying in %.0fs", resource.kind, namespace, name, message,
                    retry)
        if rejections.is_new(current, refused, resource.kind):
            actions.events.append(Event("Warning", REJECTED, message))
        actions.requeue_after = retry
        _refusals[key] = _Refusal(refused, time.monotonic() + retry, generation)
    return rejections.created_status(actions.status.wire(), current, refused, resource.kind,
                                     generation, now, actions.unconfirmed)


def pass_result(controller: str, actions: Actions, applied: bool) -> float | None:
    """Count the pass; seconds until the next one (None once the job deleted itself)."""
    if not applied:
        metrics.RECONCILE_TOTAL.labels(controller, "conflict").inc()
        return STALE_RETRY_S
    metrics.RECONCILE_TOTAL.labels(controller, "ok").inc()
    return None if actions.delete_job else actions.requeue_after


def object_event(controller: str, event_type: str | None, namespace: str, name: str,
                 body: Mapping[str, Any],
                 one_pass: Callable[[Mapping[str, Any]], Awaitable[float | None]]) -> None:
    """What each kind's watch-event handler does with every event of its object: keep the
    object's reconcile loop alive (`follow`) and cut its sleep short when the spec changed.
    An object whose spec.managedBy names another controller (MultiKueue) gets no loop: no
    pass, so no child and no status write, as if it were deleted (managedBy is immutable)."""
    deleted = event_type == "DELETED"
    if managed_elsewhere(body):
        key = (controller, namespace, name)
        if deleted:
            _elsewhere.discard(key)
        elif key not in _elsewhere:
            _elsewhere.add(key)
            log.debug("%s %s/%s is managed by %s: left alone", controller, namespace, name,
                      (body.get("spec") or {}).get("managedBy"))
        follow(controller, namespace, name, body, True, one_pass)
        return
    follow(controller, namespace, name, body, deleted, one_pass)
    if not deleted and spec_changed(body):
        wake(controller, namespace, name)


def _loop_context() -> contextvars.Context:
    """The current context minus Kopf's per-event variables: a task keeps the context it
    starts with, and the event's cause (its whole body, patch, loggers) would live as long as
    the loop. What Kopf needs later (its event-posting queue, settings, credentials) stays."""
    context = contextvars.Context()
    for var, value in contextvars.copy_context().items():
        if var.name not in _KOPF_PER_EVENT_VARS:
            context.run(var.set, value)
    return context


def _compact(body: Mapping[str, Any]) -> bytes:
    """The body as JSON text, minus metadata.managedFields (which no pass reads): kept for
    every live object, a parsed body costs ~6x its text, and a pass parses it in microseconds."""
    metadata = {k: v for k, v in (body.get("metadata") or {}).items() if k != "managedFields"}
    return json.dumps({**body, "metadata": metadata}, separators=(",", ":")).encode()


async def _follow(key: tuple[str, str, str],
                  one_pass: Callable[[Mapping[str, Any]], Awaitable[float | None]]) -> None:
    async def pass_on_latest_body() -> float | None:
        # A stop is a cancel, and Python 3.11's wait_for can swallow a cancel that races a
        # wake-up: so a loop that is no longer the object's loop ends here by itself.
        latest = _bodies.get(key)
        if _loops.get(key) is not asyncio.current_task() or latest is None:
            return None
        body = json.loads(latest)
        if behind_our_write(str(body.get("kind", "")), key[1], key[2]):
            return STALE_RETRY_S
        return await one_pass(body)

    try:
        await _run_loop(key, pass_on_latest_body)
    finally:
        if _loops.get(key) is asyncio.current_task():  # not replaced after a stop
            del _loops[key]
            _bodies.pop(key, None)
            _wakeups.pop(key, None)


def behind_our_write(kind: str, namespace: str, name: str) -> bool:
    """Whether the newest body of the object is older than our last status write of it."""
    unseen = _unseen_writes.get((kind, namespace, name))
    if unseen is None:
        return False
    if time.monotonic() - unseen[1] < UNSEEN_WRITE_WAIT_S:
        return True
    del _unseen_writes[(kind, namespace, name)]  # a missed event: go on with what we have
    return False


def invalid_message(err: ValidationError) -> str:
    """The first problem, in the user's words (api.common.problem_message)."""
    return problem_message(err.errors()[0])


JobT = TypeVar("JobT", bound=BaseModel)


async def validated_pass(resource: CustomResource, model: type[JobT], namespace: str, name: str,
                         body: Mapping[str, Any],
                         one_pass: Callable[[dict[str, Any], JobT], Awaitable[float | None]]
                         ) -> float | None:
    """Parse the newest body as `model` and run `one_pass(snapshot, job)` on it; a spec only
    the operator can tell is invalid becomes the InvalidSpec condition instead."""
    snapshot = dict(body)
    try:
        job = model.model_validate(snapshot)
    except ValidationError as err:
        return await report_invalid(resource, namespace, name, snapshot, err)
    return await one_pass(snapshot, job)


async def report_invalid(resource: CustomResource, namespace: str, name: str,
                         body: dict[str, Any], err: ValidationError) -> float:
    """What the schema could not catch becomes a Failed condition that names the field."""
    return await report_failed(resource, namespace, name, body, "InvalidSpec",
                               invalid_message(err))


async def report_failed(resource: CustomResource, namespace: str, name: str,
                        body: Mapping[str, Any], reason: str, message: str,
                        conditions: Sequence[Condition] = ()) -> float:
    """A failure found before a planner could run (an invalid spec, a reference that can never
    resolve) becomes the Failed condition naming it, beside `conditions`: written once, with
    one Warning event. Returns the delay until the object is looked at again (a spec change
    wakes it sooner)."""
    status = body.get("status") or {}
    if any(c.get("reason") == reason and c.get("message") == message
           for c in status.get("conditions", [])):
        return INVALID_RECHECK_S
    generation = (body.get("metadata") or {}).get("generation")
    await kube.patch_custom_status(resource.plural, namespace, name,
                                   failed_status(conditions, reason, message, generation))
    kopf.warn(body, reason=reason, message=message)  # type: ignore[arg-type]
    return INVALID_RECHECK_S


async def report_waiting(resource: CustomResource, namespace: str, name: str,
                         body: Mapping[str, Any], job: Job, reason: str, message: str) -> float:
    """Nothing starts before a job's inputs (its data, model or parameters) exist: say so in
    its Created condition and look again soon."""
    status = waiting_status(job, reason, message, datetime.now(UTC))
    if status_changed(body.get("status") or {}, status):
        await kube.patch_custom_status(resource.plural, namespace, name, status)
    return INPUT_RECHECK_S
