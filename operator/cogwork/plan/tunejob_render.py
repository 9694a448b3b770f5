"""What a builtin-engine TuneJob creates: trial TrainJobs and the promoted one. Pure."""

from __future__ import annotations

import json
from typing import Any

from cogwork.api.common import API_VERSION, to_wire
from cogwork.api.tunejob import TuneJob
from cogwork.plan import kueue
from cogwork.plan.tunejob_observe import (
    ANNOTATION_PARAMS,
    LABEL_PROMOTED_FROM,
    LABEL_TRIAL_INDEX,
    LABEL_TUNEJOB,
    ParamValue,
    TrialObservation,
    apply_params,
    trial_name,
)


def trial_manifest(job: TuneJob, index: int, params: dict[str, ParamValue]
                   ) -> dict[str, Any]:
    """Trial `index` of the search: the template with `params` applied."""
    name = job.metadata.name
    template = to_wire(job.spec.trial_template)
    return {
        "apiVersion": API_VERSION,
        "kind": "TrainJob",
        "metadata": {
            "name": trial_name(name, index),
            "namespace": job.metadata.namespace,
            # Trials queue where the search does (Kueue admits each, parallelTrials at most).
            "labels": {**kueue.inherited_labels(job.metadata.labels), LABEL_TUNEJOB: name,
                       LABEL_TRIAL_INDEX: str(index)},
            "annotations": {ANNOTATION_PARAMS: json.dumps(params, sort_keys=True)},
        },
        "spec": apply_params(template, job.spec.parameters, params),
    }


def promoted_name(job: TuneJob) -> str:
    return job.spec.promote.name or f"{job.metadata.name}-best"


def promoted_manifest(job: TuneJob, best: TrialObservation) -> dict[str, Any]:
    """The final TrainJob: the template with the best parameters, not labelled as a trial."""
    template = to_wire(job.spec.trial_template)
    return {
        "apiVersion": API_VERSION,
        "kind": "TrainJob",
        "metadata": {
            "name": promoted_name(job),
            "namespace": job.metadata.namespace,
            "labels": {LABEL_PROMOTED_FROM: job.metadata.name},
            "annotations": {ANNOTATION_PARAMS: json.dumps(best.params, sort_keys=True)},
        },
        "spec": apply_params(template, job.spec.parameters, best.params),
    }
