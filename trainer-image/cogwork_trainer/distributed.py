"""Process-group helpers of the trainer: the SDK's (rank, broadcast, barrier) plus a sum.

A plain `python -m cogwork_trainer.train` (no torchrun) runs as a single process with no group;
every helper here then acts as rank 0 of a world of 1.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from cogwork_sdk.dist import active, barrier, broadcast_ints, collective_device, rank, world_size

__all__ = ["active", "all_reduce_sum", "barrier", "broadcast_ints", "collective_device", "rank",
           "world_size"]


def all_reduce_sum(values: list[float]) -> list[float]:
    if not active():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return [float(v) for v in t.tolist()]
