"""Process-wide pieces the controllers share: operator settings, wake-ups, status diffing.

The wake-up events are a latency optimisation only. Losing them (operator restart) loses nothing:
every loop also wakes on its own timer and recomputes from the API objects.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import kopf

from cogwork.controllers.config import OperatorConfig
from cogwork.plan.trainjob import RenderSettings

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


def status_changed(current: dict[str, Any], patch: dict[str, Any]) -> bool:
    """Skip no-op writes: they would cost an API call and wake every watcher."""
    return any(current.get(key) != value for key, value in patch.items())
