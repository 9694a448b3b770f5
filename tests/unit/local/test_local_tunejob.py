"""`cogwork run` of a TuneJob, with the trial runs replaced by fake trainer logs (no torch)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from cogwork.local import tunejob as local
from cogwork.local.console import PROGRESS_PREFIX
from tuning_helpers import run_locally

DOC = {
    "apiVersion": "cogwork.dev/v1alpha1", "kind": "TuneJob", "metadata": {"name": "local"},
    "spec": {
        "parameters": [{"name": "lr", "field": "task.learningRate",
                        "logUniform": {"min": "0.001", "max": "1"}}],
        "search": {"algorithm": "random", "seed": 4},
        "pruner": {"algorithm": "asha"},
        "budget": {"maxTrials": 4, "parallelTrials": 2},
        "promote": {"enabled": True},
        "trialTemplate": {"task": {"name": "image-classification", "epochs": 2},
                          "data": {"dataset": "digits"}},
    },
}


def fake_trial(manifest: dict[str, Any], trial_dir: Path) -> int:
    """Writes the reports a trainer would print: accuracy peaks at lr = 0.1."""
    lr = float(manifest["spec"]["task"]["learningRate"])
    if lr > 0.5:
        return 1  # a failing trial
    log = trial_dir / "logs" / "app" / "worker" / "0" / "stdout.log"
    log.parent.mkdir(parents=True)
    lines = []
    for epoch in (1, 2):
        value = round(0.9 - abs(lr - 0.1) - (0.1 if epoch == 1 else 0.0), 4)
        report = {"event": "progress", "step": 10 * epoch, "totalSteps": 20, "epoch": epoch,
                  "metrics": [{"name": "val_accuracy", "value": str(value)}]}
        lines.append(PROGRESS_PREFIX + json.dumps(report))
    log.write_text("\n".join(lines) + "\n")
    return 0


def test_local_search_runs_every_trial_and_writes_the_best(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = run_locally(DOC, tmp_path, monkeypatch, fake_trial)
    assert "not applied locally" in text
    summary = json.loads(text[text.index("{\n \"phase\""):])
    assert summary["phase"] == "Succeeded" and summary["trials"]["created"] == 4
    best = yaml.safe_load((tmp_path / "local-best.yaml").read_text())
    assert best["spec"]["task"]["learningRate"] == summary["bestTrial"]["params"]["lr"]
    lrs = [float(line.split("lr=")[1]) for line in text.splitlines() if "COMPLETE" in line]
    assert abs(float(summary["bestTrial"]["params"]["lr"]) - 0.1) == pytest.approx(
        min(abs(lr - 0.1) for lr in lrs if lr <= 0.5), rel=1e-6)


def test_invalid_manifest_names_the_field(tmp_path: Path) -> None:
    bad = json.loads(json.dumps(DOC))
    bad["spec"]["budget"] = {"maxTrials": 1, "parallelTrials": 2}
    out = io.StringIO()
    assert local.run_tunejob(bad, tmp_path, out=out) == local.EXIT_INVALID
    assert "parallelTrials" in out.getvalue()
