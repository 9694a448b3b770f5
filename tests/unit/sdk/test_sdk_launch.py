"""The launcher as the init container installs it: torchrun from a copied directory, workers
that import the copy, stdout metrics reported, exit codes kept (no cluster)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cogwork_sdk import install
from cogwork_sdk.contract import EXIT_COMMAND_NOT_FOUND, LAUNCHER_FILE, PROGRESS_PREFIX
from cogwork_sdk.stdout_metrics import DEFAULT_FORMATS

WORKER = """
import os, sys, cogwork_sdk
print("sdk from", os.path.dirname(os.path.dirname(cogwork_sdk.__file__)))
print("epoch=1 loss=0.5 val_accuracy=0.75")
print("epoch=2 loss=0.25 val_accuracy=0.875")
sys.exit(int(os.environ.get("EXIT", "0")))
"""


def launch(directory: Path, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("COGWORK_")}
    full_env.pop("PYTHONPATH", None)
    full_env.update(env)
    # -I: no PYTHONPATH of the test run; the bootstrap must put the copy first by itself.
    return subprocess.run(
        [sys.executable, "-I", str(directory / LAUNCHER_FILE), "--standalone",
         "--nnodes=1", "--nproc-per-node=1", "--monitor-interval=0.2", "--no-python",
         sys.executable, str(worker)],
        env=full_env, capture_output=True, text=True, timeout=120, check=False)


def test_install_copies_the_package_and_a_bootstrap(tmp_path: Path) -> None:
    target = install.install(tmp_path / "launcher")
    assert target == tmp_path / "launcher" / "launch.py"
    copied = {p.name for p in (tmp_path / "launcher" / "cogwork_sdk").iterdir()}
    assert {"__init__.py", "launch.py", "session.py", "report.py"} <= copied
    assert "__pycache__" not in copied


def test_installed_launcher_reports_stdout_metrics_and_workers_import_the_copy(
        tmp_path: Path) -> None:
    directory = tmp_path / "launcher"
    install.install(directory)
    done = launch(directory, tmp_path,
                  COGWORK_METRICS_FORMAT=json.dumps(list(DEFAULT_FORMATS)))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert f"sdk from {directory}" in lines  # the workers' PYTHONPATH starts with the copy
    assert "epoch=2 loss=0.25 val_accuracy=0.875" in lines  # passed through unchanged
    reports = [json.loads(line[len(PROGRESS_PREFIX):]) for line in lines
               if line.startswith(PROGRESS_PREFIX)]
    assert [r["epoch"] for r in reports] == [1, 2]  # each new epoch goes out
    assert {m["name"]: m["value"] for m in reports[-1]["metrics"]} == {
        "loss": "0.25", "val_accuracy": "0.875"}


def test_launcher_without_metrics_format_reports_nothing_and_keeps_the_exit_code(
        tmp_path: Path) -> None:
    directory = tmp_path / "launcher"
    install.install(directory)
    done = launch(directory, tmp_path, EXIT="7")
    assert done.returncode == 7
    assert "epoch=1 loss=0.5 val_accuracy=0.75" in done.stdout
    assert PROGRESS_PREFIX not in done.stdout


def test_a_command_that_is_not_in_the_image_exits_127_and_says_which(tmp_path: Path) -> None:
    directory = tmp_path / "launcher"
    install.install(directory)
    message = tmp_path / "termination-log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("COGWORK_")}
    env["COGWORK_TERMINATION_MESSAGE_FILE"] = str(message)
    for command in ("no-such-trainer", str(tmp_path / "bin" / "train.sh")):
        done = subprocess.run(
            [sys.executable, "-I", str(directory / LAUNCHER_FILE), "--standalone",
             "--nnodes=1", "--nproc-per-node=1", "--no-python", command, "--epochs", "1"],
            env=env, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == EXIT_COMMAND_NOT_FOUND, done.stderr
        assert message.read_text().strip() == \
            f"command not found: {command} (spec.script.command)"
        assert "Traceback" not in done.stderr
    # A command that exists is started as before (its own exit code kept).
    assert launch(directory, tmp_path, EXIT="3").returncode == 3
