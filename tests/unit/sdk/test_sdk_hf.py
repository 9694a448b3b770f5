"""cogwork_sdk.hf.CogworkCallback in a real Hugging Face Trainer: a tiny BERT built from a config
(no download), synthetic data, on CPU; the pod contract's env points at tmp_path, and the
operator's requests are written into the annotations file by a callback mid-training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

import cogwork_sdk  # noqa: E402
from cogwork_sdk.contract import PROGRESS_PREFIX  # noqa: E402
from cogwork_sdk.hf import CogworkCallback  # noqa: E402
from cogwork_sdk.session import LATEST_FILE  # noqa: E402
from transformers import (  # noqa: E402
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.trainer_utils import get_last_checkpoint  # noqa: E402


def reports(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[len(PROGRESS_PREFIX):]) for line in text.splitlines()
            if line.startswith(PROGRESS_PREFIX)]


def metrics(event: dict[str, Any]) -> dict[str, float]:
    return {m["name"]: float(m["value"]) for m in event.get("metrics", [])}


class Tokens(torch.utils.data.Dataset):
    def __init__(self, n: int, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, 50, (n, 8), generator=gen)
        self.labels = (self.ids[:, 0] > 25).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(8, dtype=torch.long),
                "labels": self.labels[i]}


class Annotate(TrainerCallback):
    """The operator, writing the control file at the end of `step` (before CogworkCallback)."""

    def __init__(self, control_dir: Path, step: int, text: str) -> None:
        self.path, self.step, self.text = control_dir / "annotations", step, text

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == self.step:
            self.path.write_text(self.text)


@pytest.fixture
def job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    dirs = {"control": tmp_path / "control", "ckpt": tmp_path / "ckpt"}
    dirs["control"].mkdir()
    monkeypatch.setenv("COGWORK_CONTROL_DIR", str(dirs["control"]))
    monkeypatch.setenv("COGWORK_CHECKPOINT_DIR", str(dirs["ckpt"]))
    for name in ("COGWORK_REPORT_URL", "COGWORK_CHECKPOINT_EVERY", "RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(cogwork_sdk, "_session", None)  # a fresh session reads this env
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    torch.manual_seed(0)
    return dirs


def unlimited() -> None:
    """Every report goes out (the one-a-second limit would make the test depend on speed)."""
    cogwork_sdk.current().reporter.min_interval_s = 0.0


def trainer(job: dict[str, Path], max_steps: int, *extra: TrainerCallback,
            save_strategy: str = "no") -> Trainer:
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=16)
    args = TrainingArguments(
        output_dir=str(job["ckpt"]), report_to="none", use_cpu=True, max_steps=max_steps,
        per_device_train_batch_size=4, per_device_eval_batch_size=8, learning_rate=1e-3,
        logging_steps=1, eval_strategy="steps", eval_steps=5, save_strategy=save_strategy,
        disable_tqdm=True, dataloader_num_workers=0, seed=0)
    return Trainer(model=BertForSequenceClassification(config), args=args,
                   train_dataset=Tokens(64, seed=1), eval_dataset=Tokens(16, seed=2),
                   callbacks=[*extra, CogworkCallback()])


def test_reports_total_steps_losses_and_evaluations(
        job: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    unlimited()
    t = trainer(job, max_steps=10)
    t.train()
    events = reports(capsys.readouterr().out)
    assert {e["event"] for e in events} == {"progress"}
    assert events[0]["totalSteps"] == 10 and events[0]["step"] == 0
    train_logs = [e for e in events if "loss" in metrics(e)]
    assert {e["step"] for e in train_logs} >= set(range(1, 11))
    assert all(e["totalSteps"] == 10 and e["epoch"] == 0 for e in train_logs)  # 10 of 16 steps
    evals = {e["step"]: metrics(e) for e in events if "eval_loss" in metrics(e)}
    assert {5, 10} <= set(evals)
    assert {"loss", "learning_rate", "eval_loss"} <= set(metrics(events[-1]))
    assert events[-1]["step"] == 10 and events[-1]["progressPercentage"] == 100
    assert not {"epoch", "train_runtime", "eval_samples_per_second"} & set(metrics(events[-1]))
    assert not list(job["ckpt"].glob("checkpoint-*"))  # save_strategy "no": nothing asked for


def test_stop_request_saves_and_ends_training_early(
        job: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    stop = Annotate(job["control"], 5, 'cogwork.dev/stop="true"\n')
    t = trainer(job, 100, stop)
    t.train()
    assert t.state.global_step == 5
    assert (job["ckpt"] / "checkpoint-5" / "trainer_state.json").exists()
    record = json.loads((job["ckpt"] / LATEST_FILE).read_text())
    assert record == {"step": 5, "path": str(job["ckpt"] / "checkpoint-5")}
    events = reports(capsys.readouterr().out)
    kinds = [e["event"] for e in events]
    assert "stopped" in kinds and "checkpoint" in kinds
    assert [e["step"] for e in events if e["event"] == "stopped"] == [5]
    (ack,) = [e for e in events if e["event"] == "checkpoint"]
    assert ack["checkpointStep"] == 5 and "checkpointRequest" not in ack
    assert events[0]["totalSteps"] == 100


def test_checkpoint_request_saves_once_acknowledges_and_resumes(
        job: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    request = Annotate(job["control"], 3, 'cogwork.dev/checkpoint-request="scale-down-7"\n')
    t = trainer(job, 6, request)
    t.train()
    assert t.state.global_step == 6  # a checkpoint request does not stop training
    assert sorted(p.name for p in job["ckpt"].glob("checkpoint-*")) == ["checkpoint-3"]
    events = reports(capsys.readouterr().out)
    (ack,) = [e for e in events if e["event"] == "checkpoint"]
    assert ack["checkpointRequest"] == "scale-down-7" and ack["checkpointStep"] == 3
    assert "stopped" not in [e["event"] for e in events]

    # A replaced pod (the annotation is on the old pod) and a new process: the script resumes
    # from the Trainer's checkpoint.
    (job["control"] / "annotations").write_text("")
    cogwork_sdk._session = None
    last = get_last_checkpoint(str(job["ckpt"]))
    assert last is not None and last.endswith("checkpoint-3")
    resumed = trainer(job, 6)
    resumed.train(resume_from_checkpoint=last)
    events = reports(capsys.readouterr().out)
    (event,) = [e for e in events if e["event"] == "resumed"]
    assert event["resumedFromStep"] == 3 and event["checkpointStep"] == 3
    assert events[-1]["step"] == 6 and "checkpoint" not in [e["event"] for e in events]
