from __future__ import annotations

from pathlib import Path

import torch
from cogwork_trainer import checkpoint as ckpt
from cogwork_trainer.models import build_model
from torch import nn


def make(seed: int, optimizer: str = "sgd") -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = build_model("mlp", (8, 8), 10, 16)
    opt: torch.optim.Optimizer
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
    return model, opt


def train_steps(model: nn.Module, opt: torch.optim.Optimizer, n: int) -> None:
    g = torch.Generator().manual_seed(1)
    for _ in range(n):
        opt.zero_grad()
        x, y = torch.randn(8, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def test_roundtrip_restores_weights_optimizer_and_position(tmp_path: Path) -> None:
    for optimizer in ("sgd", "adam"):
        root = tmp_path / optimizer
        model, opt = make(0, optimizer)
        train_steps(model, opt, 3)
        state = ckpt.TrainState(step=3, epoch=1, samples_consumed=192, seed=4, global_batch=64)
        final = ckpt.save(root, model, opt, state)
        assert final == root / "step-3" and (final / ".metadata").is_file()
        assert (root / "latest").read_text().strip() == "3"
        assert not (root / "step-3.tmp").exists()

        fresh, fresh_opt = make(1, optimizer)  # different init: loading must overwrite it
        restored = ckpt.load(root, fresh, fresh_opt)
        assert restored == state
        for a, b in zip(model.state_dict().values(), fresh.state_dict().values(), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        # Continuing both must give identical weights: the optimizer state came back too.
        train_steps(model, opt, 2)
        train_steps(fresh, fresh_opt, 2)
        for a, b in zip(model.parameters(), fresh.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_no_checkpoint_loads_nothing(tmp_path: Path) -> None:
    model, opt = make(0)
    assert ckpt.load(tmp_path / "missing", model, opt) is None
    assert ckpt.read_latest(tmp_path) is None


def test_keep_last_k_and_stale_tmp_cleanup(tmp_path: Path) -> None:
    model, opt = make(0)
    (tmp_path / "step-1.tmp").mkdir(parents=True)  # a save that died in an earlier round
    for step in (2, 4, 6, 8):
        ckpt.save(tmp_path, model, opt, ckpt.TrainState(step=step), keep=2)
    names = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("step-"))
    assert names == ["step-6", "step-8"]
    assert ckpt.read_latest(tmp_path) == 8


def test_damaged_latest_falls_back_to_newest_complete(tmp_path: Path) -> None:
    model, opt = make(0)
    for step in (5, 10):
        ckpt.save(tmp_path, model, opt, ckpt.TrainState(step=step), keep=3)
    (tmp_path / "latest").write_text("15\n")  # names a checkpoint that never completed
    assert ckpt.read_latest(tmp_path) is None
    restored = ckpt.load(tmp_path, *make(0))
    assert restored is not None and restored.step == 10
