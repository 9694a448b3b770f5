"""cogwork_sdk.lightning.CogworkCallback in a real Lightning Trainer: a tiny LightningModule
(Linear layers), synthetic data, on CPU; the pod contract's env points at tmp_path, and the
operator's requests are written into the annotations file by a callback mid-training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pl = pytest.importorskip("lightning.pytorch")
torch = pytest.importorskip("torch")

import cogwork_sdk  # noqa: E402
from cogwork_sdk.contract import PROGRESS_PREFIX  # noqa: E402
from cogwork_sdk.lightning import CogworkCallback, last_checkpoint  # noqa: E402
from cogwork_sdk.session import LATEST_FILE  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402


def reports(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[len(PROGRESS_PREFIX):]) for line in text.splitlines()
            if line.startswith(PROGRESS_PREFIX)]


def metrics(event: dict[str, Any]) -> dict[str, float]:
    return {m["name"]: float(m["value"]) for m in event.get("metrics", [])}


class Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self.net(x), y))

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def loader(n: int, seed: int) -> DataLoader:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=gen)
    return DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=8)


class Annotate(pl.Callback):
    """The operator, writing the control file after optimizer step `step` (before Cogwork's)."""

    def __init__(self, control_dir: Path, step: int, text: str) -> None:
        self.path, self.step, self.text = control_dir / "annotations", step, text

    def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
        if trainer.global_step == self.step:
            self.path.write_text(self.text)


@pytest.fixture
def job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    dirs = {"root": tmp_path, "control": tmp_path / "control", "ckpt": tmp_path / "ckpt"}
    dirs["control"].mkdir()
    monkeypatch.setenv("COGWORK_CONTROL_DIR", str(dirs["control"]))
    monkeypatch.setenv("COGWORK_CHECKPOINT_DIR", str(dirs["ckpt"]))
    for name in ("COGWORK_REPORT_URL", "COGWORK_CHECKPOINT_EVERY", "RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(cogwork_sdk, "_session", None)  # a fresh session reads this env
    torch.manual_seed(0)
    return dirs


def fit(job: dict[str, Path], max_steps: int, *extra: pl.Callback, ckpt_path: str | None = None,
        **kwargs: Any) -> pl.Trainer:
    cogwork_sdk.current().reporter.min_interval_s = 0.0  # every report goes out: no timing
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=max_steps, logger=False,
                         enable_progress_bar=False, enable_checkpointing=False,
                         enable_model_summary=False, default_root_dir=job["root"],
                         num_sanity_val_steps=0, callbacks=[*extra, CogworkCallback()], **kwargs)
    trainer.fit(Tiny(), loader(64, seed=1), loader(16, seed=2), ckpt_path=ckpt_path)
    return trainer


def test_reports_total_steps_losses_and_validations(
        job: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    fit(job, 20, val_check_interval=4, accumulate_grad_batches=2)  # 8 batches, 4 steps an epoch
    events = reports(capsys.readouterr().out)
    assert {e["event"] for e in events} == {"progress"}
    assert events[0]["totalSteps"] == 20 and events[0]["step"] == 0
    steps = [e["step"] for e in events if "loss" in metrics(e)]
    assert set(range(1, 21)) <= set(steps)
    vals = [(e["step"], e["epoch"]) for e in events if "val_loss" in metrics(e)]
    # Validation after every 4 batches (2 steps): mid-epoch (epoch 0 not complete), then at the
    # epoch's end (1 complete); later training reports carry the newest val_loss too.
    assert vals[0] == (2, 0) and (4, 1) in vals and (20, 5) in vals
    assert events[-1]["step"] == 20 and events[-1]["progressPercentage"] == 100
    assert {"loss", "val_loss"} <= set(metrics(events[-1]))
    assert not job["ckpt"].exists()  # nothing asked for a checkpoint


def test_stop_request_saves_and_ends_training_early(
        job: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    trainer = fit(job, 100, Annotate(job["control"], 5, 'cogwork.dev/stop="true"\n'))
    assert trainer.global_step == 5
    assert (job["ckpt"] / "step-5.ckpt").exists()
    record = json.loads((job["ckpt"] / LATEST_FILE).read_text())
    assert record == {"step": 5, "path": str(job["ckpt"] / "step-5.ckpt")}
    events = reports(capsys.readouterr().out)
    assert [e["step"] for e in events if e["event"] == "stopped"] == [5]
    (ack,) = [e for e in events if e["event"] == "checkpoint"]
    assert ack["checkpointStep"] == 5 and "checkpointRequest" not in ack


def test_checkpoint_request_saves_once_acknowledges_and_resumes(
        job: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    request = Annotate(job["control"], 3, 'cogwork.dev/checkpoint-request="scale-down-7"\n')
    trainer = fit(job, 6, request)
    assert trainer.global_step == 6  # a checkpoint request does not stop training
    assert sorted(p.name for p in job["ckpt"].glob("*.ckpt")) == ["step-3.ckpt"]
    events = reports(capsys.readouterr().out)
    (ack,) = [e for e in events if e["event"] == "checkpoint"]
    assert ack["checkpointRequest"] == "scale-down-7" and ack["checkpointStep"] == 3
    assert "stopped" not in [e["event"] for e in events]

    # A replaced pod (the annotation was on the old one) and a new process: resume.
    (job["control"] / "annotations").write_text("")
    cogwork_sdk._session = None
    path = last_checkpoint()
    assert path == str(job["ckpt"] / "step-3.ckpt")
    resumed = fit(job, 6, ckpt_path=path)
    assert resumed.global_step == 6
    events = reports(capsys.readouterr().out)
    (event,) = [e for e in events if e["event"] == "resumed"]
    assert event["resumedFromStep"] == 3 and event["checkpointStep"] == 3
    assert events[-1]["step"] == 6 and "checkpoint" not in [e["event"] for e in events]
