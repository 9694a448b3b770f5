"""A LabelJob under Kueue (plan/kueue.py): its Workload's PodSet (pure).

Its steps run one after another (fit, the score shards side by side, merge, push), none wider
or larger than the score shards: one PodSet of `inference.replicas` score pods is what the job
holds while it runs, admitted whole."""

from __future__ import annotations

from cogwork.api.labeljob import LabelJob
from cogwork.plan import kueue
from cogwork.plan.labeljob_render import pod_layout, step_pod
from cogwork.plan.labeljob_steps import ModelRef, steps
from cogwork.plan.settings import RenderSettings

STEPS_POD_SET = "steps"


def pod_sets(job: LabelJob, model: ModelRef, settings: RenderSettings) -> list[kueue.PodSet]:
    score = next(s for s in steps(job, pod_layout(job), model) if s.role == "score")
    return [kueue.PodSet(STEPS_POD_SET, job.spec.inference.replicas,
                         step_pod(job, score, model, settings))]
