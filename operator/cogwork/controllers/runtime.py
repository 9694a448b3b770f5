"""Process-wide pieces the controllers share: operator settings, wake-ups, status diffing.

The wake-up events are a latency optimisation only. Losing them (operator restart) loses nothing:
every loop also wakes on its own timer and recomputes from the API objects.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
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

_wakeups: dict[tuple[str, str, str], asyncio.Event] = {}


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
    """Cut a daemon's sleep short. Call it on the event loop (from async handlers only):
    asyncio.Event is not thread-safe, and a set() from a worker thread may not wake the loop."""
    event = _wakeups.get((controller, namespace, name))
    if event is not None:
        event.set()


async def sleep(controller: str, namespace: str, name: str, seconds: float,
                stopped: kopf.DaemonStopped) -> None:
    """Sleep until woken, stopped, or `seconds` pass."""
    key = (controller, namespace, name)
    event = _wakeups.setdefault(key, asyncio.Event())
    try:
        await asyncio.wait_for(event.wait(), timeout=seconds)
    except TimeoutError:
        pass
    finally:
        event.clear()
        if stopped:
            _wakeups.pop(key, None)


def spec_changed(body: Any) -> bool:
    """Whether the spec moved past what status last reflected. Our own status writes do not
    bump the generation, so only spec changes need a prompt pass."""
    meta, status = body.get("metadata") or {}, body.get("status") or {}
    return bool(meta.get("generation") != status.get("observedGeneration"))


def status_changed(current: dict[str, Any], patch: dict[str, Any]) -> bool:
    """Skip no-op writes: they would cost an API call and wake every watcher."""
    return any(current.get(key) != value for key, value in patch.items())


async def run_daemon(controller: str, namespace: str, name: str, stopped: kopf.DaemonStopped,
                     one_pass: Callable[[], Awaitable[float | None]]) -> None:
    """A per-object reconcile loop: pass, sleep until woken or due, repeat until stopped or the
    pass returns None (the object is gone). A pass that raises is retried, never fatal."""
    metrics.ACTIVE_RECONCILERS.labels(controller).inc()
    try:
        while not stopped:
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
            await sleep(controller, namespace, name, delay, stopped)
    finally:
        metrics.ACTIVE_RECONCILERS.labels(controller).dec()


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
    await asyncio.to_thread(kube.patch_custom_status, plural, namespace, name,
                            {"phase": "Failed", "conditions": conditions,
                             "observedGeneration": generation})
    kopf.warn(body, reason="InvalidSpec", message=message)  # type: ignore[arg-type]
    return INVALID_RECHECK_S
