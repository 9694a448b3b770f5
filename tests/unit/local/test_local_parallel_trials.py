"""`cogwork run` of the example TuneJob runs its trials side by side in one process, with real
trainer processes: no trial's cleanup may touch another's processes. Trials of unequal length
run in parallel, so one always finishes (and cleans up) while the other still trains: before
each run tracked only its own processes, the longer one was killed and counted FAIL."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from cogwork.local.tunejob import run_tunejob

EXAMPLE = Path(__file__).parents[3] / "examples" / "tunejob-digits.yaml"


def shrunk_example() -> dict[str, Any]:
    """The example's trials and parallelism, two short trials of unequal length (1 and 4
    epochs) side by side."""
    doc = yaml.safe_load(EXAMPLE.read_text())
    spec = doc["spec"]
    spec["objective"].pop("goal", None)
    spec["parameters"] = [
        {"name": "epochs", "field": "task.epochs", "categorical": {"values": ["1", "4"]}}]
    spec["search"] = {"algorithm": "grid"}
    spec["pruner"] = {"algorithm": "none"}
    spec["budget"].update({"maxTrials": 2, "maxFailedTrials": 2})
    assert spec["budget"]["parallelTrials"] == 2
    return doc


@pytest.mark.parametrize("attempt", [1, 2])
def test_parallel_trials_all_complete(tmp_path: Path, attempt: int) -> None:
    out = io.StringIO()
    code = run_tunejob(shrunk_example(), tmp_path, out=out)
    text = out.getvalue()
    summary = json.loads(text[text.index("{\n \"phase\""):])
    assert summary["trials"]["failed"] == 0, text
    assert summary["trials"]["completed"] == 2, text
    assert code == 0 and summary["phase"] == "Succeeded"
    for trial in sorted(tmp_path.glob("digits-tune-t*/run.log")):  # each trained to the end
        assert "succeeded" in trial.read_text(), trial
