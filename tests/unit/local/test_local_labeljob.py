"""`cogwork run -f labeljob.yaml` with review rounds: the steps run as local processes, round 0's
batch is answered (a bundled dataset's hidden labels), round 1 relabels with a refitted model."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import yaml
from cogwork.local.runner import run_document

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
