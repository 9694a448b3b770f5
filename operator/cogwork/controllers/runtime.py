"""Process-wide pieces the controllers share: operator settings, wake-ups, status diffing.

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
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import kopf
from pydantic import ValidationError

from cogwork import kube, metrics
from cogwork.api.common import set_condition
from cogwork.controllers.config import OperatorConfig
from cogwork.plan.kstatus import with_kstatus
from cogwork.plan.trainjob import RenderSettings

log = logging.getLogger(__name__)
ERROR_RETRY_S = 5.0
INVALID_RECHECK_S = 300.0
# Kopf's finalizer, set on our objects by operator versions that ran a Kopf daemon per object.
# No handler needs it now, so Kopf removes it from such an object at the first event it sees.
KOPF_FINALIZER = "cogwork.dev/finalizer"

_wakeups: dict[tuple[str, str, str], asyncio.Event] = {}
# Loops run by `follow` (no Kopf daemon): each one's task and the object's latest body.
_loops: dict[tuple[str, str, str], asyncio.Task[None]] = {}
_bodies: dict[tuple[str, str, str], bytes] = {}
_KOPF_PER_EVENT_VARS = frozenset({"cause_var", "handler_var", "subregistry_var", "subexecuted_var",
                                  "sublifecycle_var", "subsettings_var", "subrefs_var"})


@functools.cache
def config() -> OperatorConfig:
    return OperatorConfig.from_env()


@functools.cache
def render_settings() -> RenderSettings:
    cfg = config()
    return RenderSettings(
        report_base_url=cfg.report_base_url,
        report_ca_pem=cfg.report_ca_pem,
        service_account_name=cfg.trainer_service_account,
        image=cfg.trainer_image,
        extra_env=cfg.trainer_extra_env,
    )


def wake(controller: str, namespace: str, name: str) -> None:
    """Cut a loop's sleep short. Call it on the event loop (from async handlers only):
    asyncio.Event is not thread-safe, and a set() from a worker thread may not wake the loop."""
    event = _wakeups.get((controller, namespace, name))
    if event is not None:
        event.set()


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
    if deleted or (body.get("metadata") or {}).get("deletionTimestamp"):
        _bodies.pop(key, None)
        task = _loops.pop(key, None)
        if task is not None:
            task.cancel()
        _wakeups.pop(key, None)
        return
    _bodies[key] = _compact(body)  # each pass reads the newest body
    if key not in _loops:
        _loops[key] = asyncio.create_task(_follow(key, one_pass), name=f"{controller}:{key[1:]}",
                                          context=_loop_context())


async def create_children(namespace: str, owner: Mapping[str, Any],
                          groups: Iterable[list[dict[str, Any]]]) -> None:
    """Create an owner's children: each group at once, the groups in order (a later group may
    depend on an earlier one). Names are deterministic, so a child that exists already (409:
    made before a restart) is skipped. Created pods count in cogwork_pod_actions_total."""
    for group in groups:
        for child in group:
            kopf.adopt(child, owner=owner)  # type: ignore[arg-type]
        created = await asyncio.gather(*(kube.create(namespace, child) for child in group))
        metrics.POD_ACTIONS.labels("create").inc(
            sum(ok for ok, child in zip(created, group, strict=True) if child["kind"] == "Pod"))


def object_event(controller: str, event_type: str | None, namespace: str, name: str,
                 body: Mapping[str, Any],
                 one_pass: Callable[[Mapping[str, Any]], Awaitable[float | None]]) -> None:
    """What each kind's watch-event handler does with every event of its object: keep the
    object's reconcile loop alive (`follow`) and cut its sleep short when the spec changed."""
    deleted = event_type == "DELETED"
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
        return await one_pass(json.loads(latest))

    try:
        await _run_loop(key, pass_on_latest_body)
    finally:
        if _loops.get(key) is asyncio.current_task():  # not replaced after a stop
            del _loops[key]
            _bodies.pop(key, None)
            _wakeups.pop(key, None)


async def report_invalid(plural: str, namespace: str, name: str, body: dict[str, Any],
                         err: ValidationError) -> float:
    """What the schema could not catch becomes a Failed condition that names the field.

    Returns the delay until the object is looked at again (a spec change wakes it sooner)."""
    first = err.errors()[0]
    message = f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    status = body.get("status") or {}
    if any(c.get("reason") == "InvalidSpec" and c.get("message") == message
           for c in status.get("conditions", [])):
        return INVALID_RECHECK_S
    generation = body.get("metadata", {}).get("generation")
    failed = set_condition([], "Failed", "True", "InvalidSpec", message,
                           observed_generation=generation)
    conditions = [c.model_dump(mode="json", by_alias=True, exclude_none=True)
                  for c in with_kstatus(failed, "Failed", generation)]
    await kube.patch_custom_status(plural, namespace, name,
                                   {"phase": "Failed", "conditions": conditions,
                                    "observedGeneration": generation})
    kopf.warn(body, reason="InvalidSpec", message=message)  # type: ignore[arg-type]
    return INVALID_RECHECK_S
