"""The baseline of bench/trainer_throughput.py: a plain torchrun DDP loop, nothing else.

`torchrun --standalone --nproc-per-node=2 bench/plain_ddp.py --epochs 60 --batch-size 64`

Same model class (cogwork_trainer.models.build_model), same digits split and normalization
(cogwork_trainer.data.load_dataset), same GLOBAL batch cut between ranks, same optimizer and loss
scaling as the trainer; no checkpoints, reports or evaluation. Rank 0 prints one line:
`PLAIN_DDP {"steps": N, "warmup_steps": W, "steady_steps_per_s": R}` where R counts only the
steps after the first W (start-up, first DDP iterations) on rank 0's monotonic clock.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainer-image"))
from cogwork_trainer.data import load_dataset
from cogwork_trainer.models import build_model

PREFIX = "PLAIN_DDP "


def steady_rate(times: list[float], warmup_steps: int) -> float:
    """Steps per second between the end of step `warmup_steps` and the last step."""
    if len(times) <= warmup_steps + 1:
        raise ValueError("not enough steps after the warm-up")
    return (len(times) - warmup_steps) / (times[-1] - times[warmup_steps - 1])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=64, help="GLOBAL batch")
    parser.add_argument("--warmup-fraction", type=float, default=0.1)
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--hidden-size", type=int, default=128)
    args = parser.parse_args()

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    data = load_dataset("digits", seed=0, test_fraction=0.2)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    torch.manual_seed(0)
    net = build_model(args.model, data.input_shape, len(data.classes), args.hidden_size)
    model = DistributedDataParallel(net)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    criterion = nn.CrossEntropyLoss(reduction="sum")
    g = args.batch_size
    base, extra = divmod(g, world)
    lo = rank * base + min(rank, extra)
    hi = lo + base + (1 if rank < extra else 0)
    scale = world / g  # the mean over the GLOBAL batch, as the trainer does

    steps_per_epoch = len(y) // g
    times: list[float] = []
    for epoch in range(args.epochs):
        order = np.random.default_rng([0, epoch]).permutation(len(y))
        for i in range(steps_per_epoch):
            idx = torch.from_numpy(order[i * g:(i + 1) * g][lo:hi])
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(x[idx]), y[idx])
            (loss * scale).backward()
            optimizer.step()
            float(loss.detach())  # the trainer reads the loss every step too
            times.append(time.monotonic())

    warmup = max(1, int(len(times) * args.warmup_fraction))
    if rank == 0:
        print(PREFIX + json.dumps({"steps": len(times), "warmup_steps": warmup,
                                   "steady_steps_per_s": steady_rate(times, warmup),
                                   "world": world}), flush=True)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
