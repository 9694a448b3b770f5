"""A diverging built-in task (learning rate 1e6) ends with the contract's exit code and a
termination message naming the step and the loss; with failOnNonFiniteLoss false it trains on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cogwork_sdk.contract import EXIT_NON_FINITE_LOSS
from cogwork_trainer import train
from cogwork_trainer.config import ConfigError, parse_task


@pytest.fixture
def diverging(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "COGWORK_CONTROL_DIR", "COGWORK_REPORT_URL"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("COGWORK_CHECKPOINT_DIR", str(tmp_path / "ckpt"))
    monkeypatch.setenv("COGWORK_CHECKPOINT_EVERY", "10")
    monkeypatch.setenv("COGWORK_HEARTBEAT_FILE", str(tmp_path / "heartbeat"))
    monkeypatch.setenv("COGWORK_TERMINATION_MESSAGE_FILE", str(tmp_path / "termination-log"))
    return monkeypatch


def task(**fields: object) -> str:
    return json.dumps({"epochs": 1, "hiddenSize": 32, "learningRate": "1e6", **fields})


def test_non_finite_loss_exits_with_the_divergence_code(
        diverging: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    diverging.setenv("COGWORK_TASK", task())
    assert train.main() == EXIT_NON_FINITE_LOSS
    message = (tmp_path / "termination-log").read_text().strip()
    assert message.startswith("non-finite loss ") and " at step " in message, message
    step = int(message.split(" at step ")[1].split()[0])
    assert 1 <= step < 10  # it stopped at once, long before the epoch's 22 steps
    assert message.split()[2] in ("nan", "inf", "-inf")
    ckpt = tmp_path / "ckpt"
    assert not list(ckpt.glob("step-*"))  # no checkpoint of the diverged weights
    assert not (ckpt / "model.pt").exists() and not (ckpt / "evaluation.json").exists()
    events = [json.loads(x.split(" ", 1)[1]) for x in capsys.readouterr().out.splitlines()
              if x.startswith("COGWORK_PROGRESS ")]
    assert "completed" not in [e["event"] for e in events]


def test_fail_on_non_finite_loss_false_trains_on(
        diverging: pytest.MonkeyPatch, tmp_path: Path) -> None:
    diverging.setenv("COGWORK_TASK", task(failOnNonFiniteLoss=False))
    assert train.main() == 0
    assert not (tmp_path / "termination-log").exists()
    assert (tmp_path / "ckpt" / "latest").read_text().strip() == "22"


def test_a_finite_run_is_not_stopped(diverging: pytest.MonkeyPatch, tmp_path: Path) -> None:
    diverging.setenv("COGWORK_TASK", task(learningRate="0.05"))
    assert train.main() == 0
    assert not (tmp_path / "termination-log").exists()


def test_non_finite_learning_rate_is_a_configuration_error() -> None:
    for lr in ("1e999", "inf", "nan"):
        with pytest.raises(ConfigError, match="learningRate"):
            parse_task({"learningRate": lr})
    assert parse_task({"failOnNonFiniteLoss": False}).fail_on_non_finite_loss is False
    assert parse_task({}).fail_on_non_finite_loss is True
