"""Held-out evaluation in the report's `evaluation` shape (plain JSON types only)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support
from torch import nn


def classification_report(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, classes: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1, macro F1 and the confusion matrix.

    Rows of the confusion matrix are true classes, columns predictions, both in `classes` order.
    A class never predicted (or absent) scores 0 rather than NaN, so the result is valid JSON.
    """
    labels = list(range(len(classes)))
    yt, yp = np.asarray(y_true), np.asarray(y_pred)
    precision, recall, f1, _ = precision_recall_fscore_support(
        yt, yp, labels=labels, average=None, zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(yt, yp)),
        "macroF1": float(np.mean(f1)),
        "precision": [float(v) for v in precision],
        "recall": [float(v) for v in recall],
        "f1": [float(v) for v in f1],
        "confusionMatrix": confusion_matrix(yt, yp, labels=labels).astype(int).tolist(),
        "classes": [str(c) for c in classes],
        "samples": len(yt),
    }


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray, device: torch.device, batch: int = 1024) -> np.ndarray:
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(x), batch):
        logits = model(torch.from_numpy(x[i : i + batch]).to(device))
        out.append(logits.argmax(dim=1).cpu().numpy())
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def evaluate(
    model: nn.Module, x: np.ndarray, y: np.ndarray, classes: Sequence[str], device: torch.device
) -> dict[str, Any]:
    return classification_report(y, predict(model, x, device), classes)
