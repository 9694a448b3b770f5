"""`cogwork run` of the example TuneJob runs its trials side by side in one process, with real
trainer processes: no trial's cleanup may touch another's processes. The two trials' lengths
differ by far more than a trial's cleanup takes (1 and 40 epochs: ~10 s of training apart, with
startup about equal), so the short one always cleans up while the long one still trains: before
each run tracked only its own processes, the long one was SIGKILLed there and counted FAIL, on
every run. (With 1 and 4 epochs both trials finish within a second of each other, before the
first one's cleanup, and the test passed on the broken code too.)"""

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
    """The example's trials and parallelism, two trials of very unequal length (1 and 40
    epochs) side by side."""
    doc: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    spec = doc["spec"]
    spec["objective"].pop("goal", None)
    spec["parameters"] = [
        {"name": "epochs", "field": "task.epochs", "categorical": {"values": ["1", "40"]}}]
    spec["search"] = {"algorithm": "grid"}
    spec["pruner"] = {"algorithm": "none"}
    spec["budget"].update({"maxTrials": 2, "maxFailedTrials": 2})
    assert spec["budget"]["parallelTrials"] == 2
    return doc


@pytest.mark.timeout(180)
def test_parallel_trials_all_complete(tmp_path: Path) -> None:
    out = io.StringIO()
    code = run_tunejob(shrunk_example(), tmp_path, out=out)
    text = out.getvalue()
    summary = json.loads(text[text.index("{\n \"phase\""):])
    assert summary["trials"]["failed"] == 0, text
    assert summary["trials"]["completed"] == 2, text
    assert code == 0 and summary["phase"] == "Succeeded"
    for trial in sorted(tmp_path.glob("digits-tune-t*/run.log")):  # each trained to the end
        assert "succeeded" in trial.read_text(), trial
