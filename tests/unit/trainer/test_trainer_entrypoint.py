from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from cogwork_trainer import train

USER_MODULE = '''
import json, os, sys
with open(os.environ["OUT_FILE"], "w") as f:
    json.dump({"name": __name__, "argv": sys.argv,
               "ckpt": os.environ["COGWORK_CHECKPOINT_DIR"]}, f)
'''


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "COGWORK_CONTROL_DIR", "COGWORK_REPORT_URL"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("COGWORK_CHECKPOINT_DIR", str(tmp_path / "ckpt"))
    monkeypatch.setenv("COGWORK_HEARTBEAT_FILE", str(tmp_path / "heartbeat"))
    return monkeypatch


def test_script_mode_runs_the_user_module_as_main(
        clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "user_train_mod.py").write_text(USER_MODULE)
    clean_env.syspath_prepend(str(tmp_path))
    clean_env.setattr(sys, "argv", list(sys.argv))  # run_script rewrites it
    clean_env.setenv("OUT_FILE", str(tmp_path / "out.json"))
    clean_env.setenv("COGWORK_TASK", json.dumps(
        {"script": {"module": "user_train_mod", "args": ["--epochs", "2"]}}))
    assert train.main() == 0
    out = json.loads((tmp_path / "out.json").read_text())
    # As under `python -m user_train_mod --epochs 2`: argv[0] is the module's file.
    assert out["argv"] == [str(tmp_path / "user_train_mod.py"), "--epochs", "2"]
    assert out["name"] == "__main__" and out["ckpt"] == str(tmp_path / "ckpt")


def test_bad_task_exits_2_without_training(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("COGWORK_TASK", json.dumps({"model": "transformer"}))
    assert train.main() == 2
    clean_env.setenv("COGWORK_TASK", json.dumps({"dataset": str(tmp_path / "missing.npz")}))
    assert train.main() == 2
    assert not (tmp_path / "ckpt").exists()


def test_single_process_run_writes_the_contract_outputs(
        clean_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clean_env.setenv("COGWORK_TASK", json.dumps({"epochs": 1, "hiddenSize": 32}))
    clean_env.setenv("COGWORK_CHECKPOINT_EVERY", "10")
    clean_env.setenv("COGWORK_CHECKPOINT_KEEP", "2")
    assert train.main() == 0
    ckpt = tmp_path / "ckpt"
    assert (ckpt / "latest").read_text().strip() == "22"  # 1437 // 64 steps
    assert sorted(p.name for p in ckpt.glob("step-*")) == ["step-20", "step-22"]
    assert (tmp_path / "heartbeat").read_text().split()[0] == "22"
    evaluation = json.loads((ckpt / "evaluation.json").read_text())
    assert evaluation["samples"] == 360 and len(evaluation["confusionMatrix"]) == 10
    assert (ckpt / "model.pt").is_file()
    lines = [json.loads(x.split(" ", 1)[1]) for x in capsys.readouterr().out.splitlines()
             if x.startswith("COGWORK_PROGRESS ")]
    assert lines[-1]["event"] == "completed" and lines[-1]["progressPercentage"] == 100
    epoch_end = [e for e in lines if e["event"] == "progress" and e["epoch"] == 1]
    assert {m["name"] for m in epoch_end[0]["metrics"]} == {"loss", "val_accuracy", "parameters"}
    # The digits MLP at hiddenSize 32: 64 -> 32 -> 32 -> 10, weights and biases.
    sizes = {m["value"] for e in epoch_end for m in e["metrics"] if m["name"] == "parameters"}
    assert sizes == {str((64 * 32 + 32) + (32 * 32 + 32) + (32 * 10 + 10))}
    # Every report after the first checkpoint names the newest one (status.lastCheckpointStep).
    after = [e for e in lines if e["step"] >= 20]
    assert after and all(e["checkpointStep"] == (22 if e["event"] == "completed" else 20)
                         for e in after)
    assert all("checkpointStep" not in e for e in lines if e["step"] < 20)

    # Running again finds the job done: it resumes at the end and completes without training.
    assert train.main() == 0
    again = [json.loads(x.split(" ", 1)[1]) for x in capsys.readouterr().out.splitlines()
             if x.startswith("COGWORK_PROGRESS ")]
    assert [e["event"] for e in again] == ["resumed", "completed"]
    assert again[0]["resumedFromStep"] == 22
