"""`cogwork render -f job.yaml`: what the operator would create for a manifest, offline."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cogwork.api.trainjob import TrainJob
from cogwork.plan.settings import RenderSettings
from cogwork.plan.trainjob_render import UNSET_UID, job_namespace, render_children


def render_manifests(doc: Mapping[str, Any], settings: RenderSettings | None = None
                     ) -> list[dict[str, Any]]:
    """Parse and default one TrainJob manifest, then render all its children with the node
    count at its desired value. Raises pydantic.ValidationError for an invalid manifest and
    ValueError for a kind this command does not render."""
    settings = settings or RenderSettings()
    kind = doc.get("kind")
    if kind != "TrainJob":
        raise ValueError(f"cannot render kind {kind!r}; supported: TrainJob")
    job = TrainJob.model_validate(doc)
    return render_children(job, job.metadata.uid or UNSET_UID, job_namespace(job, settings),
                           settings)


# The name `cogwork.cli` imports.
render_document = render_manifests
