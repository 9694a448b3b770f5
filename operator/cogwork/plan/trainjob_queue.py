"""A TrainJob under Kueue (plan/kueue.py): its Workload's PodSets, and the job as it runs once
admitted (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cogwork.api.common import to_wire
from cogwork.api.trainjob import TrainJob, TrainJobSpec
from cogwork.plan import kueue
from cogwork.plan.settings import RenderSettings
from cogwork.plan.torchx_app import DataLocation
from cogwork.plan.trainjob_render import rendezvous_pod, worker_pod

RDZV_POD_SET = "rendezvous"
WORKERS_POD_SET = "workers"


def pod_sets(job: TrainJob, settings: RenderSettings,
             resolved_data: DataLocation | None = None) -> list[kueue.PodSet]:
    """Every pod the job runs, so Kueue admits the gang whole: the store, and `nodes.max`
    workers of which `nodes.min` are enough (partial admission for an elastic job)."""
    nodes = job.spec.nodes
    return [kueue.PodSet(RDZV_POD_SET, 1, rendezvous_pod(job, settings,
                                                          resolved_data=resolved_data)),
            kueue.PodSet(WORKERS_POD_SET, nodes.max,
                         worker_pod(job, 0, settings, resolved_data=resolved_data),
                         min_count=nodes.min)]


def admitted_job(job: TrainJob, admission: kueue.Admission, node_selector: Mapping[str, str],
                 tolerations: Sequence[Mapping[str, Any]]) -> TrainJob:
    """The job as it runs on what Kueue admitted: at most the admitted worker count (its
    nodes.max too, so scaling stays within the quota), its workers on the admitted flavors'
    nodes. The stored spec is not changed: GitOps tools see no drift."""
    wire = to_wire(job.spec)
    nodes = wire.setdefault("nodes", {})
    admitted = admission.counts.get(WORKERS_POD_SET, job.spec.nodes.max)
    nodes["max"] = min(job.spec.nodes.max, admitted)
    nodes["min"] = min(job.spec.nodes.min, nodes["max"])
    if nodes.get("count") is not None:
        nodes["count"] = min(int(nodes["count"]), nodes["max"])
    if node_selector or tolerations:
        template = wire.setdefault("podTemplate", {})
        template["nodeSelector"] = {**(template.get("nodeSelector") or {}), **node_selector}
        own = list(template.get("tolerations") or [])
        template["tolerations"] = own + [dict(t) for t in tolerations if t not in own]
    return job.model_copy(update={"spec": TrainJobSpec.model_validate(wire)})
