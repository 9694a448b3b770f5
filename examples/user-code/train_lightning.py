"""A PyTorch Lightning script with Cogwork: one callback (and its import) is the whole change.

    python train_lightning.py --max-steps 200
    torchrun --nproc-per-node=2 train_lightning.py --max-steps 200

The callback puts progress, ETA and the logged metrics (`self.log`) in the TrainJob's status,
saves a checkpoint when the operator asks (before a scale-down) and saves and stops when it asks
the job to stop (spec.stop, a pruned trial); `last_checkpoint()` resumes a restarted group. The
data are synthetic and the model is tiny: nothing is downloaded. LR may come from the env.
"""

from __future__ import annotations

import argparse
import os

import lightning.pytorch as pl
import torch
from cogwork_sdk.lightning import CogworkCallback, last_checkpoint  # Cogwork
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def synthetic(n: int, seed: int) -> TensorDataset:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 16, generator=gen)
    return TensorDataset(x, (x[:, :4].sum(dim=1) > 0).long())


class Classifier(pl.LightningModule):
    def __init__(self, lr: float) -> None:
        super().__init__()
        self.lr = lr
        self.net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 2))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("loss", loss)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        x, y = batch
        accuracy = (self.net(x).argmax(dim=1) == y).float().mean()
        self.log("val_accuracy", accuracy, sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--lr", type=float, default=float(os.environ.get("LR", "0.1")))
    args = parser.parse_args()

    # Under torchrun, Lightning takes ranks from the env; devices x nodes must match it.
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    nodes = int(os.environ.get("WORLD_SIZE", "1")) // local
    trainer = pl.Trainer(
        accelerator="gpu" if torch.cuda.is_available() else "cpu", devices=local,
        num_nodes=nodes, strategy="ddp" if local * nodes > 1 else "auto",
        max_steps=args.max_steps, val_check_interval=25, check_val_every_n_epoch=None,
        logger=False, enable_progress_bar=False, enable_checkpointing=False,
        callbacks=[CogworkCallback()],
    )
    trainer.fit(Classifier(args.lr), DataLoader(synthetic(2048, 1), batch_size=32, shuffle=True),
                DataLoader(synthetic(512, 2), batch_size=256), ckpt_path=last_checkpoint())


if __name__ == "__main__":
    main()
