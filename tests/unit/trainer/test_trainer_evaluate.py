from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cogwork_trainer.evaluate import classification_report, evaluate
from torch import nn


def test_known_example() -> None:
    # class c is never predicted: its precision must be 0, not NaN.
    r = classification_report([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], ["a", "b", "c"])
    assert r["accuracy"] == pytest.approx(0.6)
    assert r["precision"] == pytest.approx([0.5, 2 / 3, 0.0])
    assert r["recall"] == pytest.approx([0.5, 1.0, 0.0])
    assert r["f1"] == pytest.approx([0.5, 0.8, 0.0])
    assert r["macroF1"] == pytest.approx((0.5 + 0.8) / 3)
    assert r["confusionMatrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert r["classes"] == ["a", "b", "c"] and r["samples"] == 5
    assert json.loads(json.dumps(r)) == r  # plain JSON types only
    assert all(type(v) is float for v in r["precision"] + r["recall"] + r["f1"])


def test_evaluate_runs_the_model() -> None:
    model = nn.Flatten()  # logits = the input itself: argmax of a one-hot row is its class
    x = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 3, 2]]
    y = np.array([0, 1, 2, 3, 0, 2])
    r = evaluate(model, x, y, ["0", "1", "2", "3"], torch.device("cpu"))
    assert r["accuracy"] == pytest.approx(5 / 6)
    assert r["confusionMatrix"][0] == [1, 0, 0, 1]
    assert r["samples"] == 6
