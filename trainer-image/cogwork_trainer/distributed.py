"""Thin helpers that behave sensibly with and without an initialized process group.

A plain `python -m cogwork_trainer.train` (no torchrun) runs as a single process with no group;
every helper here then acts as rank 0 of a world of 1.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def barrier() -> None:
    if active():
        dist.barrier()


def collective_device() -> torch.device:
    """Where small control tensors must live for the group's backend (NCCL: on the GPU)."""
    if active() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_ints(values: list[int], src: int = 0) -> list[int]:
    """Every rank gets `src`'s values; used so all ranks take the same decision at the same step."""
    if not active():
        return list(values)
    t = torch.tensor(values, dtype=torch.int64, device=collective_device())
    dist.broadcast(t, src=src)
    return [int(v) for v in t.tolist()]


def all_reduce_sum(values: list[float]) -> list[float]:
    if not active():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return [float(v) for v in t.tolist()]
