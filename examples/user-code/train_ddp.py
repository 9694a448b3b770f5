"""A plain PyTorch DDP script, as a team would write it: no Cogwork import anywhere.

    torchrun --nproc-per-node=2 train_ddp.py --epochs 5 --checkpoint-dir /tmp/ckpt

Data: an .npz with arrays x (float, N x D) and y (int labels) given by --data, or a synthetic
two-class problem when none is given. It checkpoints rank 0's model and optimizer every epoch into
--checkpoint-dir and resumes from the last one there, and prints one line per epoch in the
`name=value` format Katib's StdOut collector (and Cogwork) read, `epoch` counting completed
epochs:

    epoch=3 loss=0.2100 val_accuracy=0.9300

The learning rate may come from the environment (LR), as a TuneJob's env parameter sets it.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def load_data(path: str | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if path:
        import numpy as np

        arrays = np.load(path)
        return torch.as_tensor(arrays["x"], dtype=torch.float32), torch.as_tensor(arrays["y"])
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2048, 16, generator=gen)
    y = (x[:, :4].sum(dim=1) > 0).long()
    return x, y


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64, help="global batch size")
    parser.add_argument("--lr", type=float, default=float(os.environ.get("LR", "0.1")))
    parser.add_argument("--step-delay", type=float, default=0.0,
                        help="seconds to sleep after each step (to watch a short run)")
    parser.add_argument("--data", default=os.environ.get("DATA_FILE"))
    parser.add_argument("--checkpoint-dir", default=os.environ.get("CHECKPOINT_DIR", "/tmp/ckpt"))
    args = parser.parse_args()

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device(f"cuda:{os.environ['LOCAL_RANK']}" if backend == "nccl" else "cpu")

    x, y = load_data(args.data, seed=0)
    split = len(x) * 4 // 5
    model = nn.Sequential(nn.Linear(x.shape[1], 32), nn.ReLU(), nn.Linear(32, int(y.max()) + 1))
    model = DistributedDataParallel(model.to(device))
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)

    ckpt = Path(args.checkpoint_dir) / "last.pt"
    start_epoch = 0
    if ckpt.exists():
        state = torch.load(ckpt, map_location=device)
        model.module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch = state["epoch"] + 1
        if rank == 0:
            print(f"resumed after epoch {start_epoch}", flush=True)

    per_rank = max(1, args.batch_size // world)
    for epoch in range(start_epoch, args.epochs):
        started = time.monotonic()
        order = torch.randperm(split, generator=torch.Generator().manual_seed(epoch))
        mine = order[rank::world]
        model.train()
        total = torch.zeros(2, device=device)
        for i in range(0, len(mine) - per_rank + 1, per_rank):
            idx = mine[i:i + per_rank]
            loss = nn.functional.cross_entropy(model(x[idx].to(device)), y[idx].to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if args.step_delay:
                time.sleep(args.step_delay)
            total += torch.stack([loss.detach() * len(idx), torch.tensor(len(idx.tolist()),
                                                                          device=device)])
        dist.all_reduce(total)
        model.eval()
        with torch.no_grad():
            pred = model.module(x[split:].to(device)).argmax(dim=1).cpu()
        accuracy = (pred == y[split:]).float().mean().item()
        if rank == 0:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            tmp = ckpt.with_suffix(".tmp")
            torch.save({"model": model.module.state_dict(),
                        "optimizer": optimizer.state_dict(), "epoch": epoch}, tmp)
            tmp.replace(ckpt)
            print(f"epoch={epoch + 1} loss={(total[0] / total[1]).item():.4f} "
                  f"val_accuracy={accuracy:.4f} epoch_seconds={time.monotonic() - started:.4f}",
                  flush=True)
        dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
