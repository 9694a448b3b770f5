"""Review rounds of a LabelJob (spec.review.maxRounds > 1): the TrainJob that retrains the
model between rounds, and the model it leaves. Pure: dicts in, dicts out.

Round r > 0 scores the pool with TrainJob `<job>-r<r>`: a copy of spec.model.fromTrainJob's
spec trained on `train-r<r>.npz` (seed + human + auto-accepted labels, never validation labels)
that round r-1's collect step wrote into the LabelJob's output claim. The LabelJob owns it, so
deleting the LabelJob deletes it too.

A built-in task's `epochs` counts passes over the data, and the labeled set a retrain sees can
be far smaller than what the source trained on (with nothing certified yet it is only seed and
reviewed labels): the same epochs would be a fraction of the optimizer steps and a worse model
than round 0's. So a retrain keeps the source's step budget (its status.progress.totalSteps)
and gets the epochs that give it about as many steps on its own data, never fewer than the
source's.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

from cogwork.api.common import API_VERSION
from cogwork.api.labeljob import LabelJob
from cogwork.plan import kueue
from cogwork.plan.labeljob_refs import ModelResolution, trainjob_file, trainjob_model
from cogwork.plan.labeljob_render import namespace_of, output_claim_name, output_path
from cogwork.plan.labeljob_steps import training_set_name
from cogwork.plan.settings import RenderSettings

LABEL_LABELJOB = "cogwork.dev/labeljob"  # on retrain TrainJobs: the LabelJob they serve
# What a retrain must not inherit from the TrainJob it copies: its data (replaced), its
# checkpoint claim (each retrain keeps its own model.pt), and lifecycle settings (the LabelJob
# reads the model after the TrainJob finished, so no TTL; the LabelJob decides about suspend).
DROPPED_FIELDS = ("suspend", "ttlSecondsAfterFinished", "managedBy")
MAX_EPOCHS = 100_000  # the TrainJob schema's bound on spec.task.epochs
DEFAULT_EPOCHS, DEFAULT_BATCH, DEFAULT_TEST_PERCENT = 12, 64, 20  # the TrainJob API defaults


def retrain_name(job: LabelJob, round_: int) -> str:
    return f"{job.metadata.name}-r{round_}"


def retrain_round(job: LabelJob, trainjob_name: str) -> int | None:
    """The round a retrain TrainJob's name stands for (the inverse of retrain_name)."""
    suffix = trainjob_name.removeprefix(f"{job.metadata.name}-r")
    return int(suffix) if suffix != trainjob_name and suffix.isdigit() else None


def retrain_epochs(source: Mapping[str, Any], training_items: int | None) -> int | None:
    """Epochs that give a retrain on `training_items` labels about the optimizer steps the
    source ran; None: keep the source's (no built-in task, or nothing to size it by)."""
    task = (source.get("spec") or {}).get("task")
    total = ((source.get("status") or {}).get("progress") or {}).get("totalSteps")
    if not isinstance(task, Mapping) or not training_items or not total:
        return None
    test_percent = int(((source.get("spec") or {}).get("data") or {}).get(
        "testPercent", DEFAULT_TEST_PERCENT))
    train_items = training_items - math.ceil(training_items * test_percent / 100)
    per_epoch = train_items // int(task.get("batchSize", DEFAULT_BATCH))  # last batch dropped
    if per_epoch <= 0:
        return None  # fewer labels than one batch: the trainer says so itself
    epochs = int(task.get("epochs", DEFAULT_EPOCHS))
    return min(MAX_EPOCHS, max(epochs, math.ceil(int(total) / per_epoch)))


def retrain_trainjob(job: LabelJob, round_: int, source: Mapping[str, Any],
                     settings: RenderSettings, training_items: int | None = None
                     ) -> dict[str, Any]:
    """TrainJob `<job>-r<round>`: `source`'s spec on the `training_items` labels gathered
    before this round, with the source's step budget."""
    spec: dict[str, Any] = copy.deepcopy(dict(source.get("spec") or {}))
    epochs = retrain_epochs(source, training_items)
    if epochs is not None:
        spec["task"]["epochs"] = epochs
    for key in DROPPED_FIELDS:
        spec.pop(key, None)
    checkpoint = dict(spec.get("checkpoint") or {})
    checkpoint.pop("claimName", None)
    spec["checkpoint"] = checkpoint
    test_percent = (spec.get("data") or {}).get("testPercent")
    spec["data"] = {"path": output_path(job, training_set_name(round_)),
                    "claimName": output_claim_name(job),
                    **({"testPercent": test_percent} if test_percent is not None else {})}
    return {
        "apiVersion": API_VERSION, "kind": "TrainJob",
        "metadata": {"name": retrain_name(job, round_), "namespace": namespace_of(job, settings),
                     # A retrain queues where its LabelJob does.
                     "labels": {**kueue.inherited_labels(job.metadata.labels),
                                LABEL_LABELJOB: job.metadata.name}},
        "spec": spec,
    }


def retrained_model(job: LabelJob, round_: int, trainjob: Mapping[str, Any] | None
                    ) -> ModelResolution:
    """The model round `round_` scores with, once its retrain TrainJob succeeded: the same
    file spec.model names in the source TrainJob's checkpoints (a copy runs the same code)."""
    name = retrain_name(job, round_)
    generation = ((trainjob or {}).get("metadata") or {}).get("generation")
    version = f"{name}-g{generation}" if generation is not None else name
    return trainjob_model(f"round {round_}: TrainJob {name}", name, trainjob, version,
                          *trainjob_file(job))
