"""A team's own classifier for 8x8 digits, with no Cogwork import anywhere: a script TrainJob
trains it on their image, then a LabelJob pre-labels a pool with it, in either of two forms.

    python label_model.py --data train.npz --out DIR   # DIR/label_model.ts and .pt
    python label_model.py     # in a TrainJob: spec.data's file, into its checkpoint dir

- DIR/label_model.ts is TorchScript (torch.jit.save): a LabelJob with spec.model
  {fromTrainJob: <that TrainJob>, format: torchscript, path: label_model.ts} scores with it in
  the trainer image, no code of ours needed.
- `predict(x)` is the entrypoint form, spec.model {entrypoint: "label_model:predict",
  image: <this image>}: the score pods run in this image and call it with each float32 batch.
  It loads the weights DIR/label_model.pt from $LABEL_MODEL_WEIGHTS (default
  /cogwork/data/label_model.pt: the pool's claim, which score pods mount there).

Both take the samples as the pool stores them (the normalization is part of the model) and
return logits, one column per class. Data: an .npz with x (N x 8 x 8) and y: class indices, or
class names (a LabelJob's dataset.npz, what review rounds retrain on) with --classes giving them
in output order. In a TrainJob the defaults come from its environment (COGWORK_TASK's dataset,
COGWORK_CHECKPOINT_DIR), so a retrain of that TrainJob on other data needs no other arguments.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

WEIGHTS = os.environ.get("LABEL_MODEL_WEIGHTS", "/cogwork/data/label_model.pt")


class DigitsNet(nn.Module):
    def __init__(self, features: int = 64, classes: int = 10, hidden: int = 64) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(features))
        self.register_buffer("std", torch.ones(features))
        self.net = nn.Sequential(nn.Linear(features, hidden), nn.ReLU(),
                                 nn.Linear(hidden, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x.flatten(1) - self.mean) / self.std)


def train(x: np.ndarray, y: np.ndarray, steps: int = 400, seed: int = 0) -> DigitsNet:
    """Adam on mini-batches, normalization statistics of the training samples kept inside."""
    torch.manual_seed(seed)
    xt = torch.as_tensor(x, dtype=torch.float32).flatten(1)
    yt = torch.as_tensor(y, dtype=torch.int64)
    net = DigitsNet(xt.shape[1], int(yt.max()) + 1)
    net.mean.copy_(xt.mean(0))
    net.std.copy_(xt.std(0).clamp_min(1e-3))
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=1e-4)
    loss = torch.tensor(0.0)
    for _ in range(steps):
        idx = torch.randint(len(xt), (min(128, len(xt)),))
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(net(xt[idx]), yt[idx])
        loss.backward()
        optimizer.step()
    print(f"step={steps} loss={loss.item():.4f}", flush=True)
    return net.eval()


def save(net: DigitsNet, out: Path, example: torch.Tensor) -> None:
    out.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), out / "label_model.pt")
    with torch.no_grad():
        torch.jit.save(torch.jit.trace(net, example), str(out / "label_model.ts"))


_net: DigitsNet | None = None


def predict(x: np.ndarray) -> torch.Tensor:
    """The LabelJob entrypoint: logits for a float32 batch (n, 8, 8)."""
    global _net
    if _net is None:
        state = torch.load(WEIGHTS, map_location="cpu")
        _net = DigitsNet(state["mean"].numel(), state["net.2.bias"].numel()).eval()
        _net.load_state_dict(state)
    return _net(torch.from_numpy(x))


def class_indices(y: np.ndarray, classes: list[str]) -> np.ndarray:
    if y.dtype.kind in "iu":
        return y.astype(np.int64)
    if not classes:
        raise SystemExit("labels are names: give --classes in the model's output order")
    index = {name: i for i, name in enumerate(classes)}
    return np.asarray([index[str(label)] for label in y], dtype=np.int64)


def main() -> None:
    task = json.loads(os.environ.get("COGWORK_TASK") or "{}")
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=task.get("dataset"), required="dataset" not in task)
    parser.add_argument("--out", default=os.environ.get("COGWORK_CHECKPOINT_DIR", "."))
    parser.add_argument("--classes", default="", help="comma-separated, in output order")
    parser.add_argument("--steps", type=int, default=400)
    args = parser.parse_args()
    with np.load(args.data) as data:
        x = np.asarray(data["x"], dtype=np.float32)
        y = class_indices(np.asarray(data["y"]), [c for c in args.classes.split(",") if c])
    net = train(x, y, args.steps)
    with torch.no_grad():
        accuracy = (net(torch.from_numpy(x)).argmax(1).numpy() == y).mean()
    print(f"train_accuracy={accuracy:.4f}", flush=True)
    if int(os.environ.get("RANK", "0")) == 0:
        save(net, Path(args.out), torch.from_numpy(x[:2]))


if __name__ == "__main__":
    main()
