"""A script that reports a NaN or infinite loss through the SDK ends with the contract's exit
code and a termination message; the launcher does not restart a diverged worker group."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cogwork_sdk import divergence, install
from cogwork_sdk.contract import EXIT_NON_FINITE_LOSS, LAUNCHER_FILE
from cogwork_sdk.session import Session


@pytest.mark.parametrize(("name", "loss"), [
    ("loss", "loss"), ("train_loss", "loss"), ("eval/loss", "loss"), ("val-loss", "loss"),
    ("Loss", "loss"), ("lossy", None), ("val_accuracy", None), ("closs", None)])
def test_loss_names(name: str, loss: str | None) -> None:
    assert divergence.is_loss_name(name) is (loss is not None)


def test_enabled_reads_the_task_or_the_script_in_cogwork_task() -> None:
    assert divergence.enabled({})
    assert divergence.enabled({"COGWORK_TASK": json.dumps({"script": {"module": "m"}})})
    assert not divergence.enabled({"COGWORK_TASK": json.dumps(
        {"script": {"command": ["x"], "failOnNonFiniteLoss": False}})})
    assert not divergence.enabled({"COGWORK_TASK": json.dumps({"failOnNonFiniteLoss": False})})
    assert divergence.enabled({"COGWORK_TASK": json.dumps({"failOnNonFiniteLoss": True})})


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"COGWORK_CHECKPOINT_DIR": str(tmp_path / "ckpt"),
            "COGWORK_TERMINATION_MESSAGE_FILE": str(tmp_path / "termination-log")}


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "-inf", "NaN"])
def test_reporting_a_non_finite_loss_ends_the_run(env: dict[str, str], tmp_path: Path,
                                                  bad: object) -> None:
    s = Session(env)
    s.report(step=1, epoch=0, metrics={"loss": 0.5})
    with pytest.raises(SystemExit) as raised:
        s.report(step=7, epoch=1, metrics={"train_loss": bad, "val_accuracy": 0.1})
    assert raised.value.code == EXIT_NON_FINITE_LOSS
    text = (tmp_path / "termination-log").read_text().strip()
    assert text.startswith("non-finite train_loss ") and text.endswith("at step 7 (epoch 1)")


def test_finite_losses_other_metrics_and_a_disabled_check_train_on(
        env: dict[str, str], tmp_path: Path) -> None:
    s = Session(env)
    s.report(step=1, metrics={"loss": "0.25", "val_accuracy": float("nan"), "note": "x"})
    off = Session({**env, "COGWORK_TASK": json.dumps(
        {"script": {"module": "m", "failOnNonFiniteLoss": False}})})
    off.report(step=2, metrics={"loss": float("nan")})
    assert not (tmp_path / "termination-log").exists()


DIVERGING_SCRIPT = """
import os, cogwork_sdk
with open(os.environ["STARTS"], "a") as f:
    f.write("start\\n")
cogwork_sdk.report(step=1, metrics={"loss": 2.3})
cogwork_sdk.report(step=2, metrics={"loss": float("nan")})
raise SystemExit("not reached: report ends the run")
"""


def run_launcher(tmp_path: Path, script: str, **env: str) -> subprocess.CompletedProcess[str]:
    directory = tmp_path / "launcher"
    install.install(directory)
    worker = tmp_path / "worker.py"
    worker.write_text(script)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("COGWORK_")}
    full_env.pop("PYTHONPATH", None)
    full_env.update(STARTS=str(tmp_path / "starts"),
                    COGWORK_TERMINATION_MESSAGE_FILE=str(tmp_path / "termination-log"),
                    COGWORK_CHECKPOINT_DIR=str(tmp_path / "ckpt"), **env)
    return subprocess.run(
        [sys.executable, "-I", str(directory / LAUNCHER_FILE), "--standalone",
         "--nnodes=1", "--nproc-per-node=1", "--monitor-interval=0.2", "--max-restarts=2",
         "--no-python", sys.executable, str(worker)],
        env=full_env, capture_output=True, text=True, timeout=180, check=False)


def test_launcher_ends_a_diverged_script_without_restarting_it(tmp_path: Path) -> None:
    done = run_launcher(tmp_path, DIVERGING_SCRIPT)
    assert done.returncode == EXIT_NON_FINITE_LOSS, done.stderr[-3000:]
    assert (tmp_path / "starts").read_text().count("start") == 1  # --max-restarts=2 unused
    assert (tmp_path / "termination-log").read_text().strip() == \
        "non-finite loss nan at step 2"


def test_launcher_still_restarts_other_failures(tmp_path: Path) -> None:
    failing = DIVERGING_SCRIPT.replace('float("nan")', "0.1").replace(
        'raise SystemExit("not reached: report ends the run")', "raise SystemExit(3)")
    done = run_launcher(tmp_path, failing)
    assert done.returncode == 3
    assert (tmp_path / "starts").read_text().count("start") == 3  # 1 + --max-restarts=2
