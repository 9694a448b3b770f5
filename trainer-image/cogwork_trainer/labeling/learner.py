"""A classifier the labeling steps can train in-process and score with.

The same MLP as the TrainJob task (cogwork_trainer.models), saved in the same `model.pt` format,
so a model trained by a TrainJob and one trained here for a demo, a fold or a benchmark are
scored by the same code. Training is small and full-batch-ish on purpose: it runs once per
cross-validation fold and once per active-learning round.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..models import build_model, load_model, save_model


@dataclass
class Classifier:
    """A model plus what scoring raw samples needs (normalization and class names)."""

    net: nn.Module
    mean: np.ndarray
    std: np.ndarray
    classes: tuple[str, ...]
    architecture: str = "mlp"
    hidden: int = 64

    @torch.no_grad()
    def predict_proba(self, x_raw: np.ndarray, batch_size: int = 4096) -> np.ndarray:
        """Class probabilities (float32, rows sum to 1) for raw, unnormalized samples."""
        self.net.eval()
        out = []
        for start in range(0, len(x_raw), batch_size):
            chunk = (np.asarray(x_raw[start:start + batch_size], dtype=np.float32) - self.mean)
            chunk = chunk / self.std
            out.append(torch.softmax(self.net(torch.from_numpy(chunk)), dim=1).numpy())
        if not out:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        return np.concatenate(out).astype(np.float32)

    def save(self, path: str | Path) -> None:
        save_model(path, self.net, name=self.architecture, hidden=self.hidden,
                   input_shape=tuple(self.mean.shape), classes=self.classes, mean=self.mean,
                   std=self.std)


def load_classifier(path: str | Path) -> Classifier:
    """A model saved by a TrainJob (`$COGWORK_CHECKPOINT_DIR/model.pt`) or by `Classifier.save`."""
    net, meta = load_model(path)
    return Classifier(net=net, mean=meta["mean"].numpy(), std=meta["std"].numpy(),
                      classes=tuple(meta["classes"]), architecture=meta["model"],
                      hidden=int(meta["hiddenSize"]))


def fit_classifier(
    x_raw: np.ndarray,
    y: np.ndarray,
    classes: tuple[str, ...],
    seed: int,
    *,
    hidden: int = 64,
    steps: int = 300,
    batch_size: int = 128,
    learning_rate: float = 3e-3,
    weight_decay: float = 1e-4,
) -> Classifier:
    """Train an MLP on labeled raw samples for a fixed number of Adam steps (not epochs: the
    cost stays flat from 20 to 2,000 labels, which keeps active-learning rounds cheap)."""
    if len(x_raw) == 0:
        raise ValueError("cannot train on zero labeled items")
    x = np.asarray(x_raw, dtype=np.float32)
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std = np.where(std < 1e-6, 1.0, std).astype(np.float32)  # constant pixels
    xn = torch.from_numpy(((x - mean) / std).astype(np.float32))
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
    torch.manual_seed(seed)
    net = build_model("mlp", tuple(x.shape[1:]), len(classes), hidden)
    optimizer = torch.optim.Adam(net.parameters(), lr=learning_rate, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(steps):
        idx = torch.randint(len(xn), (min(batch_size, len(xn)),), generator=gen)
        optimizer.zero_grad(set_to_none=True)
        loss_fn(net(xn[idx]), yt[idx]).backward()
        optimizer.step()
    net.eval()
    return Classifier(net=net, mean=mean.astype(np.float32), std=std, classes=classes,
                      hidden=hidden)


def fit_predict_proba(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, num_classes: int, seed: int
) -> np.ndarray:
    """Fit on one part, score the other: one cross-validation fold (picklable for processes)."""
    torch.set_num_threads(1)  # folds run side by side; one thread each avoids oversubscription
    classes = tuple(str(c) for c in range(num_classes))
    return fit_classifier(x_train, y_train, classes, seed).predict_proba(x_test)
