"""Where Katib's Experiments live in the API. Kept apart from plan/tunejob_katib_render.py,
which loads Katib's API models: the operator registers its Experiment watch at start-up and
should not pay for those models (and numpy) unless a TuneJob uses the Katib engine."""

from __future__ import annotations

from cogwork.api.tunejob import TuneJob

KATIB_GROUP = "kubeflow.org"
KATIB_VERSION = "v1beta1"
EXPERIMENT_KIND = "Experiment"
EXPERIMENT_PLURAL = "experiments"
KATIB_API_VERSION = f"{KATIB_GROUP}/{KATIB_VERSION}"


def experiment_name(job: TuneJob) -> str:
    return job.metadata.name
