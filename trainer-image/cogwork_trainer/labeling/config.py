"""The labeling pods' configuration: `COGWORK_LABELJOB`, JSON in the LabelJob spec's shape.

    {"pool": {"dataset": "digits"} | {"path": "pool.npz", "idField": "id"},
     "model": {"path": "/models/model.pt"},          # absent: fit one on the seed labels
            | {"path": "m.pt2", "format": "export", "outputs": "logits", "classes": ["a", "b"]}
            | {"entrypoint": "pkg.mod:predict", "outputs": "probabilities"},
     "modelVersion": "digits-v1",
     "seed": {"path": "seed.csv"} | {"count": 100},   # count: bundled datasets only (demo)
     "autoAccept": {"targetPrecision": "0.95", "confidence": "0.95", "perClass": false,
                    "validation": {"path": "val.csv"} | {"humanBudget": 200}},
     "review": {"strategy": "margin", "batchSize": 100,
                "maxHumanLabels": 500, "maxRounds": 3},   # both optional (unlimited, 1)
     "labelErrors": {"enabled": true, "folds": 5},
     "inference": {"batchSize": 1024},
     "output": "/cogwork/labels", "round": 0, "randomSeed": 0}

`model.format` is cogwork (a TrainJob's model.pt, the default), torchscript or export; those
two and an entrypoint are the user's own models (user_model.py), for which `outputs` (logits,
the default, or probabilities) and `classes` say what the model returns.
`round` is the 0-based review round this step belongs to (see review.py): shards live under
`shards/r<round>/`, and `maxHumanLabels` caps what all review rounds together send to people.
Decimals travel as strings (the CRD has no floats). `count` and `humanBudget` on a bundled
dataset are answered from its hidden labels: the "humans" of a demo.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cogwork_sdk import contract

from .active import STRATEGIES, Strategy

MODEL_FORMATS = ("cogwork", "torchscript", "export")
MODEL_OUTPUTS = ("logits", "probabilities")


class LabelConfigError(ValueError):
    """The configuration is unusable; the step cannot start."""


@dataclass(frozen=True)
class LabelConfig:
    output: str
    pool_dataset: str | None = None
    pool_path: str | None = None
    id_field: str = "id"
    model_path: str | None = None
    model_format: str = "cogwork"  # of model_path: cogwork, torchscript or export
    model_entrypoint: str | None = None  # `package.module:function` (the user's code)
    model_outputs: str = "logits"  # what a user's model returns: logits or probabilities
    model_classes: tuple[str, ...] | None = None  # a user's model's class names
    model_version: str = "unversioned"
    seed_path: str | None = None
    seed_count: int = 0
    validation_path: str | None = None
    validation_budget: int = 0
    target_precision: float = 0.95
    confidence: float = 0.95
    per_class: bool = False
    strategy: Strategy = "margin"
    review_batch: int = 100
    max_human_labels: int | None = None  # None: no cap on review labels
    max_rounds: int = 1
    label_errors: bool = True
    folds: int = 5
    fold_workers: int = 1
    inference_batch: int = 1024
    round: int = 0
    random_seed: int = 0

    @property
    def out(self) -> Path:
        return Path(self.output)

    @property
    def user_model(self) -> bool:
        """The model is the user's own (a torchscript/export file or an entrypoint), not a
        cogwork model.pt: no class names or normalization in it (user_model.py)."""
        return self.model_entrypoint is not None or self.model_format != "cogwork"

    @property
    def scoring_model(self) -> Path:
        """The model the shards are scored with: the given one, else the one fitted on seeds."""
        return Path(self.model_path) if self.model_path else self.out / "model.pt"

    def human_budget_left(self, review_labels: int) -> int | None:
        """Review labels people may still be asked for (None: unlimited). Seed and validation
        labels do not count: the cap is on the review rounds' work."""
        if self.max_human_labels is None:
            return None
        return max(0, self.max_human_labels - review_labels)


def _fraction(raw: Any, key: str) -> float:
    try:
        value = float(str(raw))
    except ValueError as e:
        raise LabelConfigError(f"{key}: expected a decimal string, got {raw!r}") from e
    if not 0 < value < 1:
        raise LabelConfigError(f"{key}: must be in (0, 1), got {raw!r}")
    return value


def _int(raw: Any, key: str, minimum: int) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise LabelConfigError(f"{key}: expected an integer, got {raw!r}")
    try:
        value = int(raw)
    except ValueError as e:
        raise LabelConfigError(f"{key}: expected an integer, got {raw!r}") from e
    if value < minimum:
        raise LabelConfigError(f"{key}: must be >= {minimum}, got {value}")
    return value


def _choice(raw: Any, key: str, choices: tuple[str, ...]) -> str:
    if raw not in choices:
        raise LabelConfigError(f"{key}: one of {', '.join(choices)}, got {raw!r}")
    return str(raw)


def _model(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The `model` object's fields of LabelConfig (absent: fit one on the seed labels)."""
    model = doc.get("model") or {}
    if "path" in model and "entrypoint" in model:
        raise LabelConfigError("model: a path or an entrypoint, not both")
    entrypoint = model.get("entrypoint")
    if entrypoint is not None and (not isinstance(entrypoint, str) or
                                   len(entrypoint.split(":")) != 2):
        raise LabelConfigError(f"model.entrypoint: expected package.module:function, got "
                               f"{entrypoint!r}")
    classes = model.get("classes")
    if classes is not None and (not isinstance(classes, list) or not classes):
        raise LabelConfigError(f"model.classes: expected a list of names, got {classes!r}")
    return {
        "model_path": model.get("path"),
        "model_format": _choice(model.get("format", "cogwork"), "model.format", MODEL_FORMATS),
        "model_entrypoint": entrypoint,
        "model_outputs": _choice(model.get("outputs", "logits"), "model.outputs",
                                 MODEL_OUTPUTS),
        "model_classes": tuple(str(c) for c in classes) if classes else None,
    }


def parse(doc: Mapping[str, Any]) -> LabelConfig:
    pool = doc.get("pool") or {}
    if ("dataset" in pool) == ("path" in pool):
        raise LabelConfigError("pool: exactly one of dataset or path")
    seed = doc.get("seed") or {}
    accept = doc.get("autoAccept") or {}
    validation = accept.get("validation") or {}
    review = doc.get("review") or {}
    errors = doc.get("labelErrors") or {}
    strategy = review.get("strategy", "margin")
    if strategy not in STRATEGIES:
        raise LabelConfigError(f"review.strategy: one of {', '.join(STRATEGIES)}, "
                               f"got {strategy!r}")
    if not doc.get("output"):
        raise LabelConfigError("output: required")
    if "dataset" not in pool and ("count" in seed or "humanBudget" in validation):
        raise LabelConfigError("seed.count and autoAccept.validation.humanBudget are answered "
                               "from a bundled dataset's labels; give label files for a path pool")
    return LabelConfig(
        output=str(doc["output"]),
        pool_dataset=pool.get("dataset"),
        pool_path=pool.get("path"),
        id_field=str(pool.get("idField", "id")),
        **_model(doc),
        model_version=str(doc.get("modelVersion", "unversioned")),
        seed_path=seed.get("path"),
        seed_count=_int(seed.get("count", 0), "seed.count", 0),
        validation_path=validation.get("path"),
        validation_budget=_int(validation.get("humanBudget", 0), "validation.humanBudget", 0),
        target_precision=_fraction(accept.get("targetPrecision", "0.95"),
                                   "autoAccept.targetPrecision"),
        confidence=_fraction(accept.get("confidence", "0.95"), "autoAccept.confidence"),
        per_class=bool(accept.get("perClass", False)),
        strategy=strategy,
        review_batch=_int(review.get("batchSize", 100), "review.batchSize", 0),
        max_human_labels=(None if review.get("maxHumanLabels") is None else
                          _int(review["maxHumanLabels"], "review.maxHumanLabels", 0)),
        max_rounds=_int(review.get("maxRounds", 1), "review.maxRounds", 1),
        label_errors=bool(errors.get("enabled", True)),
        folds=_int(errors.get("folds", 5), "labelErrors.folds", 2),
        fold_workers=_int(errors.get("workers", 1), "labelErrors.workers", 1),
        inference_batch=_int((doc.get("inference") or {}).get("batchSize", 1024),
                             "inference.batchSize", 1),
        round=_int(doc.get("round", 0), "round", 0),
        random_seed=_int(doc.get("randomSeed", 0), "randomSeed", 0),
    )


def from_env(env: Mapping[str, str] | None = None) -> LabelConfig:
    env = os.environ if env is None else env
    raw = env.get(contract.ENV_LABELJOB, "").strip()
    if not raw:
        raise LabelConfigError(f"{contract.ENV_LABELJOB} is not set")
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as e:
        raise LabelConfigError(f"{contract.ENV_LABELJOB} is not JSON: {e}") from e
    if not isinstance(doc, dict):
        raise LabelConfigError(f"{contract.ENV_LABELJOB} must be a JSON object")
    return parse(doc)
