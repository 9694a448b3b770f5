"""References between kinds, resolved purely from the referenced object as the controller read it:
LabelJob `spec.model.fromTrainJob` -> that TrainJob's model.pt (with a torchscript or export
`spec.model.format`: the file `spec.model.path` its script wrote into the checkpoint dir), and
TrainJob `spec.data.fromLabelJob` -> that LabelJob's dataset.npz. Each either resolves or says
what it waits for, in words that name the field."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from cogwork.api.common import ResolvedInput
from cogwork.api.labeljob import LabelJob
from cogwork.api.trainjob import TrainJob
from cogwork.plan.labeljob_render import output_claim_name, output_path, pod_model
from cogwork.plan.labeljob_steps import ModelRef, model_version
from cogwork.plan.lifecycle import referenced_outcome
from cogwork.plan.torchx_app import DataLocation

MODEL_FILE = "model.pt"  # what a TrainJob leaves at the root of its checkpoint claim
DATASET_FILE = "dataset.npz"  # what a LabelJob leaves in its output directory
WAITING_FOR_DATA = "WaitingForData"


@dataclass(frozen=True)
class ModelResolution:
    """Exactly one of: the model, what the job waits for, why it cannot ever be had. With a
    model from another job: what to keep in status (`kept`) and, once that job is deleted while
    this one uses its model, what that means (`gone`)."""

    model: ModelRef | None = None
    waiting: str | None = None
    failed: str | None = None
    kept: ResolvedInput | None = None
    gone: str | None = None


@dataclass(frozen=True)
class DataResolution:
    """At most one of: where the data is, what the job waits for, why it can never have it;
    `kept` and `gone` as for a model."""

    location: DataLocation | None = None
    waiting: str | None = None
    failed: str | None = None
    kept: ResolvedInput | None = None
    gone: str | None = None


def source_gone(field: str, kept: ResolvedInput, source: Mapping[str, Any] | None,
                what: str) -> str | None:
    """None while the job `kept` came from exists; else what its deletion means for a job that
    reads `what` from it (the reference named by `field`)."""
    uid = ((source or {}).get("metadata") or {}).get("uid")
    if source is not None and (kept.uid is None or uid == kept.uid):
        return None
    how = "deleted" if source is None else "deleted and created again"
    where = f"{kept.path} on claim {kept.claim_name}" if kept.claim_name else kept.path
    return (f"{field}: the {kept.kind} was {how} while this job used its {what} ({where}); "
            f"running pods keep reading it, but a pod started from now on cannot mount the "
            f"claim if it went with the {kept.kind}")


def _uid(doc: Mapping[str, Any]) -> str | None:
    uid = (doc.get("metadata") or {}).get("uid")
    return str(uid) if uid else None


def _phase(doc: Mapping[str, Any]) -> str:
    return str((doc.get("status") or {}).get("phase") or "Pending")


def resolve_model(job: LabelJob, trainjob: Mapping[str, Any] | None) -> ModelResolution:
    """spec.model as the pods see it; `trainjob` is the object fromTrainJob names (None: absent).
    """
    model = job.spec.model
    if model.entrypoint is not None:
        return ModelResolution(ModelRef(None, model_version(job), entrypoint=model.entrypoint,
                                        image=model.image))
    if model.from_train_job is None:
        return ModelResolution(pod_model(str(model.path), model.claim_name, model_version(job),
                                         model.format or "cogwork"))
    field = f"spec.model.fromTrainJob={model.from_train_job}"
    kept = job.status.model_from
    if kept is not None:
        return ModelResolution(pod_model(kept.path, kept.claim_name, kept.version or "",
                                         kept.format or "cogwork"),
                               kept=kept, gone=source_gone(field, kept, trainjob, "model"))
    generation = ((trainjob or {}).get("metadata") or {}).get("generation")
    path, model_format = trainjob_file(job)
    resolution = trainjob_model(field, str(model.from_train_job), trainjob,
                                model_version(job, generation), path, model_format,
                                referrer=job.metadata.name)
    if resolution.model is None or trainjob is None:
        return resolution
    ref = resolution.model
    return ModelResolution(ref, kept=ResolvedInput(
        kind="TrainJob", name=str(model.from_train_job), uid=_uid(trainjob), path=path,
        claim_name=ref.claim_name, format=model_format, version=ref.version))


def trainjob_file(job: LabelJob) -> tuple[str, str]:
    """(path in the checkpoint claim, format) of the model a TrainJob leaves for this LabelJob:
    the built-in task's model.pt, or the torchscript/export file spec.model.path names."""
    model = job.spec.model
    if model.format in (None, "cogwork"):
        return MODEL_FILE, "cogwork"
    return str(model.path), model.format


def trainjob_model(field: str, name: str, trainjob: Mapping[str, Any] | None, version: str,
                   path: str = MODEL_FILE, model_format: str = "cogwork",
                   referrer: str | None = None) -> ModelResolution:
    """The model file (`path`, default model.pt) a TrainJob left on its checkpoint claim, once
    it Succeeded; `field` names the reference in what the job waits for."""
    if trainjob is None:
        return ModelResolution(waiting=f"{field}: TrainJob not found (yet)")
    if referrer is not None and \
            ((trainjob.get("spec") or {}).get("data") or {}).get("fromLabelJob") == referrer:
        return ModelResolution(failed=f"{field}: reference cycle: TrainJob {name}'s "
                                      f"spec.data.fromLabelJob names this LabelJob")
    state, message = referenced_outcome(trainjob)
    if state == "Failed":
        return ModelResolution(failed=f"{field}: the TrainJob failed: {message}")
    if state != "Succeeded":
        return ModelResolution(waiting=f"{field}: waiting for the TrainJob to succeed "
                                       f"(phase {_phase(trainjob)})")
    checkpoint = (trainjob.get("spec") or {}).get("checkpoint") or {}
    claim = checkpoint.get("claimName") or f"{name}-ckpt"
    return ModelResolution(pod_model(path, str(claim), version, model_format))


def resolve_dataset(train_job: TrainJob, labeljob: Mapping[str, Any] | None) -> DataResolution:
    """The dataset.npz of the LabelJob spec.data.fromLabelJob names, once it Succeeded."""
    data = train_job.spec.data
    if data is None or data.from_label_job is None:
        return DataResolution()
    field = f"spec.data.fromLabelJob={data.from_label_job}"
    kept = train_job.status.data_from
    if kept is not None:
        return DataResolution(DataLocation(kept.path, kept.claim_name), kept=kept,
                              gone=source_gone(field, kept, labeljob, "dataset"))
    if labeljob is None:
        return DataResolution(waiting=f"{field}: LabelJob not found (yet)")
    state, message = referenced_outcome(labeljob)
    if state == "Failed":
        return DataResolution(failed=f"{field}: the LabelJob failed: {message}")
    spec = labeljob.get("spec") or {}
    if (spec.get("model") or {}).get("fromTrainJob") == train_job.metadata.name:
        return DataResolution(failed=f"{field}: reference cycle: LabelJob {data.from_label_job}'s "
                                     f"spec.model.fromTrainJob names this TrainJob")
    if state != "Succeeded":
        return DataResolution(waiting=f"{field}: waiting for the LabelJob to succeed "
                                      f"(phase {_phase(labeljob)})")
    try:
        source = LabelJob.model_validate(labeljob)
    except ValidationError as err:
        return DataResolution(waiting=f"{field}: the LabelJob is invalid: {err.errors()[0]['msg']}")
    location = DataLocation(output_path(source, DATASET_FILE), output_claim_name(source))
    return DataResolution(location, kept=ResolvedInput(
        kind="LabelJob", name=str(data.from_label_job), uid=_uid(labeljob), path=location.path,
        claim_name=location.claim_name))
