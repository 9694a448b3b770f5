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
from pydantic import ValidationError

from cogwork import kube
from cogwork.api.common import GROUP, VERSION, to_wire
from cogwork.api.trainjob import TRAINJOB_RESOURCE, TrainJobSpec
from cogwork.api.tunejob import TUNEJOB_RESOURCE, TuneJob
from cogwork.controllers import runtime, tunejob_katib
from cogwork.plan.lifecycle import is_finished
from cogwork.plan.tunejob_observe import LABEL_TUNEJOB, observe_trial
from cogwork.plan.tunejob_reconcile import reconcile
from cogwork.plan.tunejob_refs import (
    REFERENCE_FAILED,
    WAITING_FOR_PARAMETERS,
    describe,
    resolve_tuned,
    tuned_spec,
)

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
    if job.spec.trial_template.from_tune_job is not None:
        resolved = await with_tuned_template(namespace, name, snapshot, job)
        if not isinstance(resolved, TuneJob):
            return resolved
        job = resolved
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


async def with_tuned_template(namespace: str, name: str, body: dict[str, Any], job: TuneJob
                              ) -> TuneJob | float:
    """spec.trialTemplate.fromTuneJob (a narrowing second search): the job with its template
    starting from the referenced TuneJob's best parameters, or, while that is not there, the
    delay until the next pass (the status says why; a reference that can never resolve fails
    the job). Kept in status.tunedFrom once resolved; trials never carry the reference."""
    field = f"spec.trialTemplate.fromTuneJob={job.spec.trial_template.from_tune_job}"
    tuned = job.status.tuned_from
    if tuned is None and not is_finished(job.status.conditions):
        source = await kube.get_custom(TUNEJOB_RESOURCE.plural, namespace,
                                       str(job.spec.trial_template.from_tune_job))
        resolution = resolve_tuned(field, ("TuneJob", name), source)
        if resolution.failed is not None:
            return await _fail(namespace, name, body, job, resolution.failed)
        if resolution.waiting is not None:
            return await runtime.report_waiting(TUNEJOB_RESOURCE, namespace, name, body, job,
                                                WAITING_FOR_PARAMETERS, resolution.waiting)
        tuned = resolution.tuned
        assert tuned is not None
        await kube.patch_custom_status(TUNEJOB_RESOURCE.plural, namespace, name,
                                       {"tunedFrom": to_wire(tuned)})
        kopf.info(body, reason="ParametersResolved", message=describe(tuned))  # type: ignore[arg-type]
    if tuned is None:  # finished before it ever resolved: nothing starts again
        return job
    template = tuned_spec(to_wire(job.spec.trial_template), tuned)
    template.pop("fromTuneJob", None)  # trials start from these values; they search the rest
    try:
        spec = job.spec.model_copy(update={
            "trial_template": TrainJobSpec.model_validate(template)})
    except ValidationError as err:
        return await _fail(namespace, name, body, job, f"{field}: {runtime.invalid_message(err)}")
    return job.model_copy(update={"spec": spec})


async def _fail(namespace: str, name: str, body: dict[str, Any], job: TuneJob, message: str
                ) -> float:
    return await runtime.report_failed(TUNEJOB_RESOURCE, namespace, name, body,
                                       REFERENCE_FAILED, message, job.status.conditions)
