"""Kopf wiring for TuneJob: observe trials, ask the engine, call the planner, apply. Nothing else.

One daemon per TuneJob runs the loop. Trial TrainJobs carry the label cogwork.dev/tunejob; an
index keeps them by (namespace, tunejob) and their events wake the loop, which also wakes on its
own timer. Each pass recomputes everything from the TuneJob and its trials, and trial names are
deterministic (<tunejob>-t<index>), so a restarted operator neither duplicates nor loses trials.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from cogwork import kube, metrics
from cogwork.api.common import GROUP, VERSION, rfc3339
from cogwork.api.tunejob import TuneJob
from cogwork.controllers import runtime
from cogwork.plan.tunejob import Actions, reconcile
from cogwork.plan.tunejob_trials import LABEL_TUNEJOB, observe_trial
from cogwork.tuning import builtin

log = logging.getLogger(__name__)
CONTROLLER = "tunejob"


@kopf.index(GROUP, VERSION, "trainjobs", labels={LABEL_TUNEJOB: kopf.PRESENT})  # type: ignore[arg-type]
def tunejob_trials(namespace: str, labels: dict[str, str], body: kopf.Body,
                   **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
    """Trial TrainJobs by (namespace, tunejob): what each pass observes, without listing."""
    return {(namespace, labels.get(LABEL_TUNEJOB, "")): dict(body)}


@kopf.on.event(GROUP, VERSION, "trainjobs", labels={LABEL_TUNEJOB: kopf.PRESENT})  # type: ignore[arg-type]
def trial_changed(namespace: str, labels: dict[str, str], **_: Any) -> None:
    runtime.wake(CONTROLLER, namespace, labels.get(LABEL_TUNEJOB, ""))


@kopf.on.event(GROUP, VERSION, "tunejobs")  # type: ignore[arg-type]
def tunejob_changed(namespace: str, name: str, body: kopf.Body, **_: Any) -> None:
    # Our own status writes do not bump the generation; only spec changes need a prompt pass.
    if body.get("metadata", {}).get("generation") != body.get("status", {}).get(
        "observedGeneration"
    ):
        runtime.wake(CONTROLLER, namespace, name)


@kopf.daemon(GROUP, VERSION, "tunejobs", cancellation_timeout=10.0)  # type: ignore[arg-type]
async def run_tunejob(namespace: str, name: str, body: kopf.Body, stopped: kopf.DaemonStopped,
                      tunejob_trials: kopf.Index[tuple[str, str], dict[str, Any]],
                      **_: Any) -> None:
    metrics.ACTIVE_RECONCILERS.labels(CONTROLLER).inc()
    try:
        while not stopped:
            delay = await reconcile_once(namespace, name, body, tunejob_trials)
            await runtime.sleep(CONTROLLER, namespace, name, delay, stopped)
    finally:
        metrics.ACTIVE_RECONCILERS.labels(CONTROLLER).dec()


async def reconcile_once(namespace: str, name: str, body: kopf.Body,
                         index: kopf.Index[tuple[str, str], dict[str, Any]]) -> float:
    """One pass; returns seconds until the next one."""
    started = time.monotonic()
    try:
        snapshot = dict(body)
        try:
            job = TuneJob.model_validate(snapshot)
        except ValidationError as err:
            await _report_invalid(namespace, name, snapshot, err)
            return 300.0
        objective, pruner = job.spec.objective, job.spec.pruner
        observed = (observe_trial(b, objective.metric, pruner.resource)
                    for b in index.get((namespace, name), []))
        trials = [t for t in observed if t is not None]
        # Rebuilding the study and asking is CPU work: keep it off the event loop.
        decision = await asyncio.to_thread(builtin.decide, job, trials)
        actions = reconcile(job, trials, decision, datetime.now(UTC))
        await apply(namespace, name, snapshot, actions)
        metrics.RECONCILE_TOTAL.labels(CONTROLLER, "ok").inc()
        return actions.requeue_after
    except Exception:
        metrics.RECONCILE_ERRORS.labels(CONTROLLER).inc()
        metrics.RECONCILE_TOTAL.labels(CONTROLLER, "error").inc()
        log.exception("reconcile of tunejob %s/%s failed; retrying", namespace, name)
        return 5.0
    finally:
        metrics.RECONCILE_TIME.labels(CONTROLLER).observe(time.monotonic() - started)


async def apply(namespace: str, name: str, body: dict[str, Any], actions: Actions) -> None:
    for child in actions.create:
        kopf.adopt(child, owner=body)  # type: ignore[arg-type]
        await asyncio.to_thread(kube.create, namespace, child)  # 409: created before a restart
    for trial, patch in actions.patch_trials.items():
        await asyncio.to_thread(kube.patch_custom, "trainjobs", namespace, trial, patch)
    if runtime.status_changed(body.get("status") or {}, actions.status):
        await asyncio.to_thread(kube.patch_custom_status, "tunejobs", namespace, name,
                                actions.status)
    for kind, reason, message in actions.events:
        kopf.event(body, type=kind, reason=reason, message=message)  # type: ignore[arg-type]


async def _report_invalid(namespace: str, name: str, body: dict[str, Any],
                          err: ValidationError) -> None:
    """What the schema could not catch becomes a Failed condition that names the field."""
    first = err.errors()[0]
    message = f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    status = body.get("status") or {}
    if any(c.get("reason") == "InvalidSpec" and c.get("message") == message
           for c in status.get("conditions", [])):
        return
    condition = {"type": "Failed", "status": "True", "reason": "InvalidSpec", "message": message,
                 "lastTransitionTime": rfc3339(),
                 "observedGeneration": body.get("metadata", {}).get("generation")}
    await asyncio.to_thread(kube.patch_custom_status, "tunejobs", namespace, name,
                            {"phase": "Failed", "conditions": [condition]})
    kopf.warn(body, reason="InvalidSpec", message=message)  # type: ignore[arg-type]
