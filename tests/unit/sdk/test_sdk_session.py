"""The SDK's calls as a user script makes them, with the pod contract's env pointing at files
in tmp_path (no cluster): checkpoint records, the operator's requests, what rank 0 reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from cogwork_sdk.contract import PROGRESS_PREFIX
from cogwork_sdk.progress import ProgressClock
from cogwork_sdk.session import LATEST_FILE, Session
from cogwork_sdk.stdout_metrics import DEFAULT_FORMATS, MetricLines, formats_from_env


def reports(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[len(PROGRESS_PREFIX):]) for line in text.splitlines()
            if line.startswith(PROGRESS_PREFIX)]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "control").mkdir()
    return {"COGWORK_CHECKPOINT_DIR": str(tmp_path / "ckpt"), "COGWORK_CHECKPOINT_EVERY": "5",
            "COGWORK_CHECKPOINT_KEEP": "2", "COGWORK_CONTROL_DIR": str(tmp_path / "control")}


def annotate(env: dict[str, str], text: str) -> None:
    (Path(env["COGWORK_CONTROL_DIR"]) / "annotations").write_text(text)


def test_checkpoints_roundtrip_keep_the_newest_and_report_the_resume(
        env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    first = Session(env)
    assert first.resume_step() is None and first.load_checkpoint() is None
    for step in (5, 10, 15):
        first.save_checkpoint({"w": torch.full((2,), float(step)), "step": step}, step)
    ckpt = Path(env["COGWORK_CHECKPOINT_DIR"])
    assert sorted(p.name for p in ckpt.glob("step-*.pt")) == ["step-10.pt", "step-15.pt"]
    assert json.loads((ckpt / LATEST_FILE).read_text())["step"] == 15

    restarted = Session(env)  # a replaced pod
    loaded = restarted.load_checkpoint()
    assert loaded is not None
    state, step = loaded
    assert step == 15 and state["step"] == 15 and torch.equal(state["w"], torch.full((2,), 15.0))
    events = reports(capsys.readouterr().out)
    assert [e["event"] for e in events] == ["checkpoint"] * 3 + ["resumed"]
    assert events[-1]["resumedFromStep"] == 15 and events[2]["checkpointStep"] == 15


def test_should_checkpoint_every_n_steps_and_on_the_operators_request(
        env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    s = Session(env)
    assert [step for step in range(1, 12) if s.should_checkpoint(step)] == [5, 10]
    annotate(env, 'cogwork.dev/checkpoint-request="scale-down-1"\n')
    assert s.should_checkpoint(12)
    s.checkpoint_saved(12, "/somewhere/step-12")
    assert not s.should_checkpoint(13)  # answered: the same token asks nothing more
    (ack,) = [e for e in reports(capsys.readouterr().out) if e["event"] == "checkpoint"]
    assert ack["checkpointRequest"] == "scale-down-1" and ack["checkpointStep"] == 12
    annotate(env, 'cogwork.dev/checkpoint-request="scale-down-2"\n')
    assert s.should_checkpoint(14)


def test_should_stop_follows_the_stop_annotation_and_reports_once(
        env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    s = Session(env)
    assert not s.should_stop(1)
    annotate(env, 'cogwork.dev/stop="true"\n')
    assert s.should_checkpoint(2) and s.should_stop(2) and s.should_stop(3)
    events = reports(capsys.readouterr().out)
    assert [e["event"] for e in events] == ["stopped"]


def test_report_sends_progress_eta_and_every_new_epoch(
        env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    s = Session(env)
    s.report(step=0, total_steps=100)
    s.report(step=10, epoch=1, metrics={"loss": 0.5, "acc": "0.75", "note": "text"})
    s.report(step=20, epoch=2, metrics={"loss": 0.25})
    s.report(step=21, epoch=2)  # rate-limited: same epoch, within a second
    events = reports(capsys.readouterr().out)
    assert [e.get("epoch") for e in events] == [None, 1, 2]
    last = events[-1]
    assert last["progressPercentage"] == 20 and last["totalSteps"] == 100
    assert "estimatedRemainingSeconds" in last
    assert {m["name"]: m["value"] for m in last["metrics"]} == {"loss": "0.25", "acc": "0.75"}


def test_outside_a_trainjob_checkpoints_go_to_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = Session({})
    assert s.checkpoint_dir == Path("checkpoints") and not s.should_checkpoint(5)
    assert not s.should_stop(5)


def test_progress_clock_counts_only_this_runs_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr("cogwork_sdk.progress.time.monotonic", lambda: now[0])
    clock = ProgressClock()
    assert clock.fields(400, 1000) == {"step": 400, "totalSteps": 1000, "progressPercentage": 40}
    now[0] += 10  # 100 steps in 10 s after resuming at 400
    f = clock.fields(500, 1000, samples_per_step=32)
    assert f["estimatedRemainingSeconds"] == 50 and f["samplesPerSecond"] == 320.0


def test_stdout_metric_lines_katib_format() -> None:
    lines = MetricLines(formats_from_env(json.dumps(list(DEFAULT_FORMATS))))
    assert not lines.feed("starting up, world size 2")
    assert lines.feed("epoch=3 loss=0.21 val_accuracy=0.93")
    assert lines.feed("step=120 lr=3e-4 grad-norm = 1.5")
    assert lines.epoch == 3 and lines.step == 120
    assert lines.metrics == {"loss": "0.21", "val_accuracy": "0.93", "lr": "0.0003",
                             "grad-norm": "1.5"}
    assert not lines.feed("epoch=-1 note=nan")  # neither a count nor a number


def test_stdout_metric_lines_custom_format() -> None:
    lines = MetricLines(formats_from_env(json.dumps([r"^(\w+): ([\d.]+)$"])))
    assert lines.feed("accuracy: 0.5") and not lines.feed("accuracy=0.7")
    assert lines.report_fields() == {"step": None, "epoch": None,
                                     "metrics": [{"name": "accuracy", "value": "0.5"}]}


def test_a_restarted_process_does_not_answer_the_same_request_again(
        env: dict[str, str]) -> None:
    """After a scale-down the group restarts while the request annotation is still there."""
    annotate(env, 'cogwork.dev/checkpoint-request="scale-down-1"\n')
    first = Session(env)
    assert first.should_checkpoint(12)
    first.checkpoint_saved(12, "/somewhere/step-12")
    restarted = Session(env)
    assert not restarted.should_checkpoint(13)
