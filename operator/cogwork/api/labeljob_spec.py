"""Building blocks of the LabelJob spec (see cogwork.api.labeljob for the whole object).

As for TrainJob, every create-time rule lives twice: as CEL in the CRD and as a pydantic
validator, so `cogwork run` rejects what the apiserver rejects, with the same field named.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Self

from pydantic import ConfigDict, Field, model_validator

from cogwork.api.common import DnsName, Quantity, SpecModel, cel, validations

# A decimal strictly between 0 and 1 ("0.95", ".999"): precision and confidence levels.
FRACTION_PATTERN = r"^0?[.][0-9]*[1-9][0-9]*$"
NPZ_PATH_PATTERN = r"\.npz$"
CSV_PATH_PATTERN = r"\.csv$"
ReviewStrategy = Literal["margin", "entropy", "leastConfidence", "coreset", "random"]


def _fraction(path: str) -> dict[str, Any]:
    return validations(cel(f"self.matches('{FRACTION_PATTERN}')",
                           f"{path} must be a decimal strictly between 0 and 1, e.g. \"0.95\""))


def check_fraction(value: str, path: str) -> None:
    if not re.fullmatch(FRACTION_PATTERN, value):
        raise ValueError(f"{path} must be a decimal strictly between 0 and 1, e.g. \"0.95\"")


def _exactly_one(a: str, b: str, where: str) -> dict[str, str]:
    return cel(f"has(self.{a}) != has(self.{b})",
               f"exactly one of {where}.{a} or {where}.{b} must be set")


ModelFormat = Literal["cogwork", "torchscript", "export"]
ModelOutputs = Literal["logits", "probabilities"]
# `package.module:function`, imported in spec.model.image.
ENTRYPOINT_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*([.][A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"
# True when the model is the user's own (a TorchScript or torch.export file, or a function):
# only those take spec.model.outputs and spec.model.classes.
_CEL_USER_MODEL = "(has(self.entrypoint) || (has(self.format) && self.format != 'cogwork'))"
MODEL_NEEDS_SOURCE = ("spec.model needs one of spec.model.fromTrainJob, spec.model.path or "
                      "spec.model.entrypoint")
ENTRYPOINT_ALONE = ("spec.model.entrypoint cannot be combined with spec.model.fromTrainJob or "
                    "spec.model.path: the function is the model")
ENTRYPOINT_IMAGE = ("spec.model.entrypoint and spec.model.image must be set together: the "
                    "function is imported and run in that image")
ENTRYPOINT_FORMAT = ("spec.model.format describes a model file: leave it out with "
                     "spec.model.entrypoint")
TRAINJOB_PATH_FORMAT = ("spec.model.path with spec.model.fromTrainJob needs spec.model.format "
                        "torchscript or export: a TrainJob's cogwork model is always its model.pt")
TRAINJOB_FILE_PATH = ("spec.model.format torchscript or export with spec.model.fromTrainJob "
                      "needs spec.model.path: the file the TrainJob wrote, relative to its "
                      "checkpoint claim")
CLAIM_NEEDS_PATH = ("spec.model.claimName requires spec.model.path, and not "
                    "spec.model.fromTrainJob (whose file is on the TrainJob's checkpoint claim)")
USER_MODEL_ONLY = ("is for torchscript, export and entrypoint models: a cogwork model.pt "
                   "carries its class names and gives logits")


class ModelSource(SpecModel):
    """The model that pre-labels the pool: a TrainJob's output, a model file, or a function in
    the user's image (docs/labeljob.md, "Your own model")."""

    model_config = ConfigDict(json_schema_extra=validations(
        cel("has(self.fromTrainJob) || has(self.path) || has(self.entrypoint)",
            MODEL_NEEDS_SOURCE),
        cel("!has(self.entrypoint) || (!has(self.fromTrainJob) && !has(self.path))",
            ENTRYPOINT_ALONE, field_path=".entrypoint"),
        cel("has(self.entrypoint) == has(self.image)", ENTRYPOINT_IMAGE, field_path=".image"),
        cel("!has(self.entrypoint) || !has(self.format)", ENTRYPOINT_FORMAT,
            field_path=".format"),
        cel("!has(self.fromTrainJob) || !has(self.path) || "
            "(has(self.format) && self.format != 'cogwork')", TRAINJOB_PATH_FORMAT,
            field_path=".path"),
        cel("!has(self.fromTrainJob) || !has(self.format) || self.format == 'cogwork' || "
            "has(self.path)", TRAINJOB_FILE_PATH, field_path=".path"),
        cel("!has(self.claimName) || (has(self.path) && !has(self.fromTrainJob))",
            CLAIM_NEEDS_PATH, field_path=".claimName"),
        cel(f"!has(self.outputs) || {_CEL_USER_MODEL}", f"spec.model.outputs {USER_MODEL_ONLY}",
            field_path=".outputs"),
        cel(f"!has(self.classes) || {_CEL_USER_MODEL}", f"spec.model.classes {USER_MODEL_ONLY}",
            field_path=".classes")))

    from_train_job: DnsName | None = Field(
        default=None, description="Name of a Succeeded TrainJob in the same namespace; its "
                                  "model.pt is used (resolved by the operator), or with format "
                                  "torchscript/export the file `path` on its checkpoint claim.")
    path: str | None = Field(
        default=None, min_length=1, max_length=4096,
        description="The model file (see format); relative to the claim's mount when claimName "
                    "is set, to the TrainJob's checkpoint claim with fromTrainJob.")
    claim_name: DnsName | None = Field(default=None,
                                       description="PersistentVolumeClaim holding `path`.")
    format: ModelFormat | None = Field(
        default=None, description="Format of the model file (default cogwork): cogwork (a "
                                  "TrainJob's model.pt), torchscript (torch.jit.save) or export "
                                  "(torch.export.save, .pt2). The last two take the pool's "
                                  "samples as stored, float32, and return one row per item.")
    entrypoint: str | None = Field(
        default=None, max_length=512, pattern=ENTRYPOINT_PATTERN,
        description="`package.module:function` in `image`, called with a float32 numpy batch "
                    "of the pool's samples; returns an (n, classes) array (numpy or torch).")
    image: str | None = Field(
        default=None, min_length=1, max_length=1024,
        description="The user's image the score pods run `entrypoint` in (Cogwork's scorer "
                    "is copied in by an init container; the image needs python, numpy, torch).")
    outputs: ModelOutputs | None = Field(
        default=None, description="What a torchscript, export or entrypoint model returns "
                                  "(default logits: softmax is applied; probabilities: rows "
                                  "must sum to 1).")
    classes: list[Annotated[str, Field(min_length=1, max_length=256)]] | None = Field(
        default=None, min_length=1, max_length=10_000,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Class names of a torchscript, export or entrypoint model, in output order "
                    "(when the pool file has no `classes` array; default \"0\"..\"k-1\").")
    version: str | None = Field(
        default=None, max_length=128, description="model_version recorded with every label and "
                                                  "prediction (default: the TrainJob's name and "
                                                  "generation, or the file or entrypoint name).")

    @property
    def user_model(self) -> bool:
        """A model of the user's own: a torchscript/export file or an entrypoint."""
        return self.entrypoint is not None or self.format not in (None, "cogwork")

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        trainjob, path = self.from_train_job is not None, self.path is not None
        file_format = self.format not in (None, "cogwork")
        checks = [
            (trainjob or path or self.entrypoint is not None, MODEL_NEEDS_SOURCE),
            (self.entrypoint is None or not (trainjob or path), ENTRYPOINT_ALONE),
            ((self.entrypoint is None) == (self.image is None), ENTRYPOINT_IMAGE),
            (self.entrypoint is None or self.format is None, ENTRYPOINT_FORMAT),
            (not (trainjob and path) or file_format, TRAINJOB_PATH_FORMAT),
            (not trainjob or not file_format or path, TRAINJOB_FILE_PATH),
            (self.claim_name is None or (path and not trainjob), CLAIM_NEEDS_PATH),
            (self.outputs is None or self.user_model, f"spec.model.outputs {USER_MODEL_ONLY}"),
            (self.classes is None or self.user_model, f"spec.model.classes {USER_MODEL_ONLY}"),
            (self.classes is None or len(set(self.classes)) == len(self.classes),
             "spec.model.classes must be unique"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        return self


class PoolSpec(SpecModel):
    """The unlabeled items: a bundled demo dataset or a file of samples with ids."""

    model_config = ConfigDict(json_schema_extra=validations(
        _exactly_one("dataset", "path", "spec.pool")))

    dataset: Literal["digits"] | None = Field(
        default=None, description="A dataset bundled in the trainer image, labels hidden: a "
                                  "demo whose hidden labels answer for the annotators.")
    path: str | None = Field(
        default=None, min_length=1, max_length=4096, pattern=NPZ_PATH_PATTERN,
        description="An .npz with array x (samples), the id array and optionally classes.")
    format: Literal["npz"] = Field(default="npz", description="File format of `path`.")
    id_field: str = Field(default="id", min_length=1, max_length=128,
                          description="Name of the array of unique item ids in the file "
                                      "(row numbers when absent).")
    claim_name: DnsName | None = Field(default=None,
                                       description="PersistentVolumeClaim holding `path`.")

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.dataset is None) == (self.path is None):
            raise ValueError("exactly one of spec.pool.dataset or spec.pool.path must be set")
        return self


class SeedSpec(SpecModel):
    """Items already labeled (they may train the model and are checked for label errors)."""

    model_config = ConfigDict(json_schema_extra=validations(
        _exactly_one("path", "count", "spec.seed")))

    path: str | None = Field(default=None, min_length=1, max_length=4096,
                             pattern=CSV_PATH_PATTERN,
                             description="CSV with columns item_id,label.")
    count: int | None = Field(default=None, ge=1, le=10_000_000,
                              description="Demo only (spec.pool.dataset): reveal this many "
                                          "hidden labels as seed labels.")

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.path is None) == (self.count is None):
            raise ValueError("exactly one of spec.seed.path or spec.seed.count must be set")
        return self


class InferenceSpec(SpecModel):
    """The sharded pre-labeling job: one pod per shard, TrainJob's pod contract."""

    replicas: int = Field(default=1, ge=1, le=256, description="Inference pods (pool shards).")
    gpus_per_pod: int = Field(default=0, ge=0, le=16, description="nvidia.com/gpu per pod.")
    batch_size: int = Field(default=1024, ge=1, le=1_048_576,
                            description="Items scored per forward pass.")
    cpu: Quantity = Field(default="1", description="CPU per pod.")
    memory: Quantity = Field(default="2Gi", description="Memory per pod.")


class ValidationLabels(SpecModel):
    """Held-out human labels the threshold is certified on (never used for training)."""

    model_config = ConfigDict(json_schema_extra=validations(
        _exactly_one("path", "humanBudget", "spec.autoAccept.validation")))

    path: str | None = Field(default=None, min_length=1, max_length=4096,
                             pattern=CSV_PATH_PATTERN,
                             description="CSV with columns item_id,label.")
    human_budget: int | None = Field(
        default=None, ge=1, le=1_000_000,
        description="Demo only (spec.pool.dataset): reveal this many hidden labels, drawn at "
                    "random from the pool, as validation labels.")

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.path is None) == (self.human_budget is None):
            raise ValueError("exactly one of spec.autoAccept.validation.path or "
                             "spec.autoAccept.validation.humanBudget must be set")
        return self


class AutoAcceptSpec(SpecModel):
    """Accept model labels above the lowest threshold whose precision is certified."""

    target_precision: str = Field(
        default="0.95", max_length=32, json_schema_extra=_fraction(
            "spec.autoAccept.targetPrecision"),
        description="Precision the auto-accepted labels must have, as a decimal string.")
    confidence: str = Field(
        default="0.95", max_length=32, json_schema_extra=_fraction("spec.autoAccept.confidence"),
        description="Confidence of the Clopper-Pearson lower bound on that precision.")
    per_class: bool = Field(default=False, description="One threshold per predicted class "
                                                       "(Bonferroni over classes).")
    validation: ValidationLabels = Field(description="Where the held-out labels come from.")

    @model_validator(mode="after")
    def _fractions(self) -> Self:
        check_fraction(self.target_precision, "spec.autoAccept.targetPrecision")
        check_fraction(self.confidence, "spec.autoAccept.confidence")
        return self


class ReviewSpec(SpecModel):
    """What goes to people: the review batch, chosen by an active-learning strategy."""

    model_config = ConfigDict(json_schema_extra=validations(cel(
        "!has(self.maxHumanLabels) || self.maxHumanLabels >= self.batchSize",
        "spec.review.maxHumanLabels must be at least spec.review.batchSize",
        field_path=".maxHumanLabels")))

    strategy: ReviewStrategy = Field(
        default="margin", description="margin, entropy, leastConfidence (uncertainty), "
                                      "coreset (diverse: greedy k-center) or random.")
    batch_size: int = Field(default=100, ge=1, le=100_000, description="Items per review round.")
    max_human_labels: int | None = Field(default=None, ge=1, le=10_000_000,
                                         description="Stop routing items after this many.")
    max_rounds: int = Field(default=1, ge=1, le=100,
                            description="Review rounds (retrain and relabel between rounds).")

    @model_validator(mode="after")
    def _budget(self) -> Self:
        if self.max_human_labels is not None and self.max_human_labels < self.batch_size:
            raise ValueError("spec.review.maxHumanLabels must be at least spec.review.batchSize")
        return self


class LabelErrorsSpec(SpecModel):
    """cleanlab over out-of-sample (K-fold) probabilities of seed and human labels."""

    enabled: bool = Field(default=True, description="Look for wrong seed/human labels.")
    folds: int = Field(default=5, ge=2, le=20, description="Cross-validation folds.")


class SecretKeyRef(SpecModel):
    name: DnsName = Field(description="Secret in the LabelJob's namespace.")
    key: str = Field(default="api-key", min_length=1, max_length=253,
                     description="Key holding the Label Studio API token.")


class LabelStudioSink(SpecModel):
    """Review tasks go to this Label Studio project; annotations come back from it."""

    url: str = Field(pattern=r"^https?://[^\s/]+", max_length=2048,
                     description="Base URL, e.g. http://label-studio.tools.svc:8080.")
    secret_ref: SecretKeyRef = Field(description="Secret with the API token.")
    project: int = Field(ge=1, description="Label Studio project id.")


class SinkSpec(SpecModel):
    label_studio: LabelStudioSink | None = Field(default=None,
                                                 description="Label Studio hand-off.")


class OutputSpec(SpecModel):
    """Where the outputs (labels table, dataset, review tasks, issues, calibration) go."""

    claim_name: DnsName | None = Field(
        default=None, description="Existing PersistentVolumeClaim; when unset the operator "
                                  "creates <job>-labels.")
    path: str = Field(default="labels", min_length=1, max_length=1024,
                      pattern=r"^[^/].*$", description="Directory inside the claim.")
    size: Quantity = Field(default="1Gi", description="Size of the created claim.")
