"""The DDP script of train_ddp.py with Cogwork's SDK: a few lines buy progress and ETA in the
TrainJob's status, metrics a TuneJob can prune on, checkpoints where the operator expects them,
and a checkpoint before every scale-down and a clean stop when asked (spec.stop, a pruned trial).

    import cogwork_sdk as cw     # in a TrainJob's pods without install; else `pip install ./sdk`

Run it anywhere: outside a TrainJob checkpoints go to ./checkpoints and reports are printed.
"""

from __future__ import annotations

import argparse
import os
import time

import cogwork_sdk as cw
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def synthetic_data(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2048, 16, generator=gen)
    return x, (x[:, :4].sum(dim=1) > 0).long()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64, help="global batch size")
    parser.add_argument("--lr", type=float, default=float(os.environ.get("LR", "0.1")))
    parser.add_argument("--step-delay", type=float, default=0.0)
    args = parser.parse_args()

    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device(f"cuda:{os.environ['LOCAL_RANK']}" if torch.cuda.is_available()
                          else "cpu")
    x, y = synthetic_data(seed=0)
    split = len(x) * 4 // 5
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 2)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    steps_per_epoch = split // args.batch_size  # a global batch per step, whatever the world
    total = args.epochs * steps_per_epoch

    step = 0
    restored = cw.load_checkpoint(map_location=device)  # written by any world size
    if restored is not None:
        state, step = restored
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if rank == 0:
            print(f"resumed from step {step} at world size {world}", flush=True)
    ddp = DistributedDataParallel(model)
    per_rank = args.batch_size // world

    while step < total:
        epoch, offset = divmod(step, steps_per_epoch)
        order = torch.randperm(split, generator=torch.Generator().manual_seed(epoch))
        batch = order[offset * args.batch_size:(offset + 1) * args.batch_size]
        idx = batch[rank * per_rank:(rank + 1) * per_rank]
        loss = nn.functional.cross_entropy(ddp(x[idx].to(device)), y[idx].to(device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        metrics = {"loss": loss.item()}
        if step % steps_per_epoch == 0:  # an epoch is complete: evaluate
            with torch.no_grad():
                pred = model(x[split:].to(device)).argmax(dim=1).cpu()
            metrics["val_accuracy"] = (pred == y[split:]).float().mean().item()
        cw.report(step=step, epoch=step // steps_per_epoch, total_steps=total, metrics=metrics)
        if cw.should_checkpoint(step):  # every spec.checkpoint.everySteps, and when asked
            cw.save_checkpoint({"model": model.state_dict(),
                                "optimizer": optimizer.state_dict()}, step)
        if cw.should_stop(step):
            break
        if args.step_delay:
            time.sleep(args.step_delay)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
