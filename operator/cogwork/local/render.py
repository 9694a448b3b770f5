"""`cogwork render -f job.yaml`: what the operator would create first for a manifest, offline.

- TrainJob: its Service, checkpoint claim, rendezvous store and worker pods at the desired node
  count.
- TuneJob: the first trials the operator's first pass starts (the builtin engine's first
  proposals, the same seeds), or with `engine: katib` the Experiment (and trial template).
- LabelJob: its output claim and first score pods; with spec.model.fromTrainJob, as they are
  once that TrainJob succeeded (its checkpoint claim holds the model).

Lives in `local/` because a TuneJob's proposals come from the tuning layer, above `plan/`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from cogwork.api.labeljob import LabelJob
from cogwork.api.trainjob import TrainJob
from cogwork.api.tunejob import TuneJob
from cogwork.plan import labeljob_reconcile, tunejob_reconcile
from cogwork.plan.labeljob_refs import resolve_model
from cogwork.plan.settings import RenderSettings
from cogwork.plan.trainjob_render import UNSET_UID, job_namespace, render_children

RENDERED_KINDS = ("TrainJob", "TuneJob", "LabelJob")


def render_document(doc: Mapping[str, Any], settings: RenderSettings | None = None
                    ) -> list[dict[str, Any]]:
    """The objects the operator's first passes create for one manifest. Raises
    pydantic.ValidationError for an invalid manifest, ValueError for another kind."""
    settings = settings or RenderSettings()
    kind = doc.get("kind")
    if kind == "TrainJob":
        job = TrainJob.model_validate(doc)
        return render_children(job, job.metadata.uid or UNSET_UID, job_namespace(job, settings),
                               settings)
    if kind == "TuneJob":
        return _tunejob(TuneJob.model_validate(doc))
    if kind == "LabelJob":
        return _labeljob(LabelJob.model_validate(doc), settings)
    raise ValueError(f"cannot render kind {kind!r}; supported: {', '.join(RENDERED_KINDS)}")


def _tunejob(job: TuneJob) -> list[dict[str, Any]]:
    if job.spec.engine == "katib":
        from cogwork.plan.tunejob_katib_render import build  # Katib's models, only for Katib

        objects = build(job)
        return [o for o in (objects.config_map, objects.experiment) if o is not None]
    from cogwork.tuning.builtin import decide  # Optuna, only for a TuneJob

    actions = tunejob_reconcile.reconcile(job, [], decide(job, []), datetime.now(UTC))
    return actions.create


def _labeljob(job: LabelJob, settings: RenderSettings) -> list[dict[str, Any]]:
    source = job.spec.model.from_train_job
    succeeded = None if source is None else {  # the TrainJob as it is once it succeeded
        "metadata": {"name": source, "generation": 1},
        "status": {"conditions": [{"type": "Succeeded", "status": "True"}]}}
    model = resolve_model(job, succeeded)
    actions = labeljob_reconcile.reconcile(job, [], model, datetime.now(UTC), settings)
    return actions.create
