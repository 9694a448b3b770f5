"""Checkpoints in the pod contract's layout, written with torch.distributed.checkpoint (DCP).

    $COGWORK_CHECKPOINT_DIR/step-<K>/   one complete checkpoint (DCP files + .metadata)
    $COGWORK_CHECKPOINT_DIR/latest      text: the step of the newest complete checkpoint

A checkpoint is written into `step-<K>.tmp/`, all ranks meet at a barrier, then rank 0 renames
it and replaces `latest` atomically. A crash at any point leaves `latest` naming a complete
checkpoint (or no `latest` at all), never a partial one. DCP reshards on load, so a checkpoint
loads whatever the new world size is (plain DDP state is replicated anyway).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from cogwork_sdk.files import fsync_dir, write_text_atomically
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.checkpoint.state_dict_loader import load as dcp_load
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save

from . import distributed as cdist

log = logging.getLogger(__name__)

LATEST = "latest"
_STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclass
class TrainState:
    """Where training stands; saved with the weights so a restart continues the same sequence."""

    step: int = 0  # global optimizer steps done
    epoch: int = 0  # current epoch (0-based) = epochs completed
    samples_consumed: int = 0  # samples of `epoch` already trained on (a multiple of the batch)
    seed: int = 0
    global_batch: int = 0


@contextlib.contextmanager
def _single_process_quiet() -> Iterator[None]:
    """DCP warns on every single-process save/load; that is the intended mode, not news."""
    with warnings.catch_warnings():
        if not cdist.active():
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def step_dir(root: str | Path, step: int) -> Path:
    return Path(root) / f"step-{step}"


def read_latest(root: str | Path) -> int | None:
    """The step `latest` names, if it names a complete checkpoint."""
    try:
        text = (Path(root) / LATEST).read_text().strip()
        step = int(text)
    except (FileNotFoundError, ValueError):
        return None
    if not (step_dir(root, step) / ".metadata").is_file():
        log.warning("%s/latest names step %d but step-%d is incomplete", root, step, step)
        return None
    return step


def _complete_steps(root: Path) -> list[int]:
    steps = []
    for p in root.iterdir() if root.is_dir() else []:
        m = _STEP_DIR.match(p.name)
        if m and (p / ".metadata").is_file():
            steps.append(int(m.group(1)))
    return sorted(steps)


def _write_latest(root: Path, step: int) -> None:
    write_text_atomically(root / LATEST, f"{step}\n", durable=True)


def _prune(root: Path, keep: int, current: int) -> None:
    for p in root.iterdir():
        if p.name.endswith(".tmp") and p.name.startswith("step-"):
            # Left over from a round that died mid-save; nobody else is saving right now.
            shutil.rmtree(p, ignore_errors=True)
    old = [s for s in _complete_steps(root) if s != current]
    for s in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(step_dir(root, s), ignore_errors=True)


def save(
    root: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    keep: int = 2,
) -> Path:
    """Collective: every rank calls it at the same step. Returns the final directory."""
    root = Path(root)
    tmp = root / f"step-{state.step}.tmp"
    final = step_dir(root, state.step)
    if cdist.rank() == 0:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)  # a half-written attempt at this same step
    cdist.barrier()
    model_sd, optim_sd = get_state_dict(model, optimizer)
    with _single_process_quiet():
        dcp_save(
            {"model": model_sd, "optim": optim_sd, "trainer": asdict(state)},
            checkpoint_id=tmp,
            no_dist=not cdist.active(),
        )
    cdist.barrier()  # every rank's shard is on disk before the checkpoint becomes visible
    if cdist.rank() == 0:
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        fsync_dir(root)
        _write_latest(root, state.step)
        _prune(root, keep, state.step)
        log.info("checkpoint step %d saved to %s", state.step, final)
    return final


def load(
    root: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer
) -> TrainState | None:
    """Collective: restore from `latest` into model and optimizer; None when there is none.

    Rank 0 picks the step and broadcasts it, so all ranks load the same checkpoint even if
    `latest` changes under them.
    """
    root = Path(root)
    step = -1
    if cdist.rank() == 0:
        found = read_latest(root)
        if found is None:
            complete = _complete_steps(root)  # `latest` lost or damaged: newest complete one
            found = complete[-1] if complete else None
        step = -1 if found is None else found
    step = cdist.broadcast_ints([step])[0]
    if step < 0:
        return None
    model_sd, optim_sd = get_state_dict(model, optimizer)
    trainer = asdict(TrainState())
    sd: dict[str, Any] = {"model": model_sd, "optim": optim_sd, "trainer": trainer}
    with _single_process_quiet():
        dcp_load(sd, checkpoint_id=step_dir(root, step), no_dist=not cdist.active())
    set_state_dict(model, optimizer, model_state_dict=sd["model"], optim_state_dict=sd["optim"])
    # DCP loads non-tensor values in place into the nested dicts.
    return TrainState(**{k: int(v) for k, v in trainer.items()})
