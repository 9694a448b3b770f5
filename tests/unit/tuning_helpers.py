"""Builders shared by the tuning tests: TuneJobs and trial observations without a cluster."""

from __future__ import annotations

import copy
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cogwork.api.tunejob import TuneJob
from cogwork.plan.tunejob_observe import TrialObservation, TrialState

LR = {"name": "lr", "field": "task.learningRate", "logUniform": {"min": "1e-3", "max": "0.5"}}
WIDTH = {"name": "width", "field": "task.hiddenSize", "int": {"min": 16, "max": 128,
                                                              "step": 16}}
BATCH = {"name": "batch", "field": "task.batchSize", "categorical": {"values": ["32", "64",
                                                                               "128"]}}


def tunejob(*parameters: dict[str, Any], name: str = "search", generation: int = 1,
            status: dict[str, Any] | None = None, **spec: Any) -> TuneJob:
    doc: dict[str, Any] = {
        "parameters": list(parameters) if parameters else [LR, WIDTH, BATCH],
        "search": {"algorithm": "tpe", "seed": 11, "startupTrials": 2},
        "budget": {"maxTrials": 8, "parallelTrials": 2},
        "trialTemplate": {"task": {"name": "image-classification", "epochs": 9},
                          "data": {"dataset": "digits"}},
    }
    doc.update(copy.deepcopy(spec))
    return TuneJob.model_validate({
        "metadata": {"name": name, "namespace": "ml", "uid": "u-1", "generation": generation},
        "spec": doc, "status": status or {}})


def trial(index: int, state: TrialState = "COMPLETE", value: float | None = None,
          curve: dict[int, float] | None = None, params: dict[str, Any] | None = None,
          rungs: list[float] | None = None, stop_requested: bool = False,
          name: str = "search") -> TrialObservation:
    finished = state in ("COMPLETE", "FAIL") or (state == "PRUNED" and not stop_requested)
    return TrialObservation(
        name=f"{name}-t{index}", index=index, state=state,
        params=params if params is not None else {"lr": 0.01 * (index + 1), "width": 32,
                                                  "batch": "64"},
        value=value if state == "COMPLETE" else None, curve=curve or {},
        rungs=rungs or [], finished=finished, stop_requested=stop_requested)


def run_locally(doc: dict[str, Any], workdir: Path, monkeypatch: pytest.MonkeyPatch,
                run_trial: Callable[[dict[str, Any], Path], int]) -> str:
    """`cogwork run` of a TuneJob with `run_trial` standing in for each trial's processes;
    asserts it succeeded and returns what it printed."""
    from cogwork.local import tunejob as local

    monkeypatch.setattr(local, "_run_trial", run_trial)
    monkeypatch.setattr(local, "POLL_SECONDS", 0.01)
    out = io.StringIO()
    assert local.run_tunejob(doc, workdir, out=out) == 0, out.getvalue()
    return out.getvalue()
