"""Kopf wiring for TuneJob: observe trials, ask the engine, call the planner, apply. Nothing else.

One daemon per TuneJob runs the loop. Trial TrainJobs carry the label cogwork.dev/tunejob; an
index keeps them by (namespace, tunejob) and their events wake the loop, which also wakes on its
own timer. Each pass recomputes everything from the TuneJob and its trials, and trial names are
deterministic (<tunejob>-t<index>), so a restarted operator neither duplicates nor loses trials.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from cogwork import kube, metrics
from cogwork.api.common import GROUP, VERSION
from cogwork.api.tunejob import TuneJob
from cogwork.controllers import runtime, tunejob_katib
from cogwork.plan.tunejob import Actions, reconcile
from cogwork.plan.tunejob_trials import LABEL_TUNEJOB, observe_trial

log = logging.getLogger(__name__)
CONTROLLER = "tunejob"


@kopf.index(GROUP, VERSION, "trainjobs", labels={LABEL_TUNEJOB: kopf.PRESENT})  # type: ignore[arg-type]
def tunejob_trials(namespace: str, labels: dict[str, str], body: kopf.Body,
                   **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
    """Trial TrainJobs by (namespace, tunejob): what each pass observes, without listing."""
    return {(namespace, labels.get(LABEL_TUNEJOB, "")): dict(body)}


@kopf.on.event(GROUP, VERSION, "trainjobs", labels={LABEL_TUNEJOB: kopf.PRESENT})  # type: ignore[arg-type]
async def trial_changed(namespace: str, labels: dict[str, str], **_: Any) -> None:
    runtime.wake(CONTROLLER, namespace, labels.get(LABEL_TUNEJOB, ""))


@kopf.on.event(GROUP, VERSION, "tunejobs")  # type: ignore[arg-type]
async def tunejob_changed(namespace: str, name: str, body: kopf.Body, **_: Any) -> None:
    if runtime.spec_changed(body):
        runtime.wake(CONTROLLER, namespace, name)


@kopf.daemon(GROUP, VERSION, "tunejobs", cancellation_timeout=10.0)  # type: ignore[arg-type]
async def run_tunejob(namespace: str, name: str, body: kopf.Body, stopped: kopf.DaemonStopped,
                      tunejob_trials: kopf.Index[tuple[str, str], dict[str, Any]],
                      **kwargs: Any) -> None:
    # Katib Experiments by TuneJob; Kopf fills it only if their CRD was served at start-up.
    experiments = kwargs.get("tunejob_experiments")
    await runtime.run_daemon(CONTROLLER, namespace, name, stopped,
                             lambda: reconcile_once(namespace, name, body, tunejob_trials,
                                                    experiments))


async def reconcile_once(namespace: str, name: str, body: kopf.Body,
                         index: kopf.Index[tuple[str, str], dict[str, Any]],
                         experiments: tunejob_katib.ExperimentIndex | None = None) -> float:
    """One pass; returns seconds until the next one."""
    snapshot = dict(body)
    try:
        job = TuneJob.model_validate(snapshot)
    except ValidationError as err:
        return await runtime.report_invalid("tunejobs", namespace, name, snapshot, err)
    if job.spec.engine == "katib":
        return await tunejob_katib.reconcile_once(namespace, name, snapshot, job, experiments)
    objective, pruner = job.spec.objective, job.spec.pruner
    observed = (observe_trial(b, objective.metric, pruner.resource)
                for b in index.get((namespace, name), []))
    trials = [t for t in observed if t is not None]
    # Imported on first use: Optuna and SciPy cost ~65 MB that an operator running no builtin
    # TuneJob should not carry.
    from cogwork.tuning import builtin

    # Rebuilding the study and asking is CPU work: keep it off the event loop.
    decision = await asyncio.to_thread(builtin.decide, job, trials)
    actions = reconcile(job, trials, decision, datetime.now(UTC))
    await apply(namespace, name, snapshot, actions)
    metrics.RECONCILE_TOTAL.labels(CONTROLLER, "ok").inc()
    return actions.requeue_after


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
