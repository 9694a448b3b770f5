"""`cogwork run -f labeljob.yaml` with review rounds: the steps run as local processes, round 0's
batch is answered (a bundled dataset's hidden labels), round 1 relabels with a refitted model."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import yaml
from cogwork.local.dispatch import run_document

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "labeljob-digits.yaml"


def test_two_rounds_locally(tmp_path: Path) -> None:
    doc = yaml.safe_load(EXAMPLE.read_text())
    spec = doc["spec"]
    spec["inference"]["replicas"] = 2
    spec["labelErrors"] = {"enabled": False}
    spec["review"].update({"batchSize": 60, "maxRounds": 2, "maxHumanLabels": 100})
    out = io.StringIO()
    assert run_document(doc, workdir=tmp_path, out=out) == 0, out.getvalue()
    text = out.getvalue()
    assert "round 1 of 2" in text and "round 2 of 2" in text
    assert "collect: labels for 60 reviewed item(s)" in text

    labels = tmp_path / "labels"
    summary = json.loads((labels / "summary.json").read_text())
    assert summary["round"] == 1 and summary["modelVersion"].endswith("-local-r1")
    assert summary["humanLabeled"] == 400 + 60
    assert summary["routedToReview"] <= 100 - 60  # the budget left after round 0
    with open(labels / "human-labels.csv", newline="") as f:
        human = list(csv.DictReader(f))
    assert len(human) == 60 and {row["round"] for row in human} == {"0"}
    for round_ in (0, 1):
        assert sorted(p.name for p in (labels / "shards" / f"r{round_}").iterdir()) == [
            "probs-00000-of-00002.npz", "probs-00001-of-00002.npz"]
    assert (labels / "train-r1.npz").is_file()


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # TorchScript is deprecated
def test_entrypoint_runs_locally_in_this_python(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """`model.entrypoint` locally: imported from PYTHONPATH in this Python (no image)."""
    import numpy as np
    import torch
    from sklearn.datasets import load_digits

    user_code = EXAMPLE.parent / "user-code"
    monkeypatch.syspath_prepend(str(user_code))
    import label_model

    digits = load_digits()
    x, y = digits.images.astype(np.float32), digits.target
    order = np.random.default_rng(3).permutation(len(x))
    seed, val = order[:300], order[300:700]
    label_model.save(label_model.train(x[seed], y[seed]), tmp_path, torch.from_numpy(x[:2]))
    np.savez(tmp_path / "pool.npz", x=x, id=np.asarray([f"d{i}" for i in range(len(x))]))
    for name, rows in (("seed.csv", seed), ("val.csv", val)):
        with open(tmp_path / name, "w", newline="") as f:
            csv.writer(f).writerows([("item_id", "label"), *((f"d{i}", str(y[i])) for i in rows)])
    monkeypatch.setenv("PYTHONPATH", str(user_code))
    monkeypatch.setenv("LABEL_MODEL_WEIGHTS", str(tmp_path / "label_model.pt"))
    doc = {"apiVersion": "cogwork.dev/v1alpha1", "kind": "LabelJob", "metadata": {"name": "fn"},
           "spec": {"model": {"entrypoint": "label_model:predict", "image": "team:1"},
                    "pool": {"path": str(tmp_path / "pool.npz")},
                    "seed": {"path": str(tmp_path / "seed.csv")},
                    "autoAccept": {"validation": {"path": str(tmp_path / "val.csv")}},
                    "labelErrors": {"enabled": False}}}
    out = io.StringIO()
    assert run_document(doc, workdir=tmp_path / "run", out=out) == 0, out.getvalue()
    assert "note: spec.model.entrypoint label_model:predict runs in this Python" in out.getvalue()
    summary = json.loads((tmp_path / "run" / "labels" / "summary.json").read_text())
    assert summary["certified"] is True and summary["autoAccepted"] > 0
    assert summary["modelVersion"] == "label_model:predict"
