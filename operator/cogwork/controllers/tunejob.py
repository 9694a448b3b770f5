"""Kopf wiring for TuneJob: observe trials, ask the engine, call the planner, apply. Nothing else.

One loop per TuneJob (`runtime.follow`: no Kopf daemon, so no finalizer) runs the passes.
Trial TrainJobs carry the label cogwork.dev/tunejob; each pass lists them, their events wake the
loop, and it also wakes on its own timer. Each pass recomputes everything from the TuneJob and
its trials, and trial names are deterministic (<tunejob>-t<index>), so a restarted operator
neither duplicates nor loses trials.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import kopf

from cogwork import kube
from cogwork.api.common import GROUP, VERSION
from cogwork.api.trainjob import TRAINJOB_RESOURCE
from cogwork.api.tunejob import TUNEJOB_RESOURCE, TuneJob
from cogwork.controllers import runtime, tunejob_katib
from cogwork.plan.tunejob_observe import LABEL_TUNEJOB, observe_trial
from cogwork.plan.tunejob_reconcile import reconcile

log = logging.getLogger(__name__)
CONTROLLER = "tunejob"


@kopf.on.event(GROUP, VERSION, TRAINJOB_RESOURCE.plural,  # type: ignore[arg-type]
               labels={LABEL_TUNEJOB: kopf.PRESENT})
async def trial_changed(namespace: str, labels: dict[str, str], **_: Any) -> None:
    runtime.wake(CONTROLLER, namespace, labels.get(LABEL_TUNEJOB, ""))


@kopf.on.event(GROUP, VERSION, TUNEJOB_RESOURCE.plural)  # type: ignore[arg-type]
async def tunejob_changed(type: str | None, namespace: str, name: str, body: kopf.Body,
                          **kwargs: Any) -> None:
    # Katib Experiments by TuneJob; Kopf fills it only if their CRD was served at start-up.
    experiments = kwargs.get("tunejob_experiments")
    runtime.object_event(CONTROLLER, type, namespace, name, body,
                         lambda latest: runtime.validated_pass(
                             TUNEJOB_RESOURCE, TuneJob, namespace, name, latest,
                             lambda snapshot, job: reconcile_once(namespace, name, snapshot, job,
                                                                  experiments)))


async def reconcile_once(namespace: str, name: str, snapshot: dict[str, Any], job: TuneJob,
                         experiments: tunejob_katib.ExperimentIndex | None = None
                         ) -> float | None:
    """One pass; returns seconds until the next one, or None when the job is gone."""
    if job.spec.engine == "katib":
        return await tunejob_katib.reconcile_once(namespace, name, snapshot, job, experiments)
    objective, pruner = job.spec.objective, job.spec.pruner
    # Listed, not cached: a consistent read, so a pass never asks for a trial index that a
    # trial not yet seen by a watch already has.
    listed = await kube.list_custom(TRAINJOB_RESOURCE.plural, namespace,
                                    f"{LABEL_TUNEJOB}={name}")
    observed = (observe_trial(b, objective.metric, pruner.resource) for b in listed)
    trials = [t for t in observed if t is not None]
    # Imported on first use: Optuna and SciPy cost ~65 MB that an operator running no builtin
    # TuneJob should not carry.
    from cogwork.tuning import builtin

    # Rebuilding the study and asking is CPU work: keep it off the event loop.
    decision = await asyncio.to_thread(builtin.decide, job, trials)
    actions = reconcile(job, trials, decision, datetime.now(UTC))
    applied = await runtime.apply(TUNEJOB_RESOURCE, namespace, name, snapshot, actions)
    return runtime.pass_result(CONTROLLER, actions, applied)

