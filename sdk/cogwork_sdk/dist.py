"""The process group as the SDK sees it: torch is optional, and without an initialized group
every helper acts as rank 0 of a world of 1 (a plain `python train.py`)."""

from __future__ import annotations

import os
from typing import Any


def _torch_dist() -> Any:
    try:
        import torch.distributed as dist
    except ImportError:  # the SDK runs without torch (stdlib only)
        return None
    return dist if dist.is_available() and dist.is_initialized() else None


def active() -> bool:
    return _torch_dist() is not None


def rank() -> int:
    """The global rank: the group's if one is up, else torchrun's RANK, else 0."""
    dist = _torch_dist()
    return int(dist.get_rank()) if dist is not None else int(os.environ.get("RANK", "0"))


def world_size() -> int:
    dist = _torch_dist()
    return int(dist.get_world_size()) if dist is not None else 1


def collective_device() -> Any:
    """Where small control tensors must live for the group's backend (NCCL: on the GPU)."""
    import torch

    dist = _torch_dist()
    if dist is not None and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_ints(values: list[int], src: int = 0) -> list[int]:
    """Every rank gets `src`'s values, so all ranks take the same decision at the same step."""
    dist = _torch_dist()
    if dist is None:
        return list(values)
    import torch

    t = torch.tensor(values, dtype=torch.int64, device=collective_device())
    dist.broadcast(t, src=src)
    return [int(v) for v in t.tolist()]


def barrier() -> None:
    dist = _torch_dist()
    if dist is not None:
        dist.barrier()
