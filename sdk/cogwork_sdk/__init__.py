"""Cogwork's SDK for user training code: progress and metrics in the TrainJob's status, the
checkpoint directory and the step to resume from, and the operator's checkpoint and stop
requests (scale-down, preemption, pruned trials, spec.stop). Standard library only; torch is
needed only by save_checkpoint/load_checkpoint and the launcher.

    import cogwork_sdk as cw
    start = cw.resume_step() or 0
    for step in range(start, total):
        ...
        cw.report(step=step, total_steps=total, metrics={"loss": loss})
        if cw.should_checkpoint(step):
            cw.save_checkpoint({"model": model.state_dict(), ...}, step)
        if cw.should_stop(step):
            break

Inside a TrainJob the pod contract's env configures it; elsewhere checkpoints go to
./checkpoints and reports are printed. See docs/sdk.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .session import Session

__version__ = "0.1.0"
_session: Session | None = None


def current() -> Session:
    """This process's Session (built from the env on first use)."""
    global _session
    if _session is None:
        _session = Session()
    return _session


def checkpoint_dir() -> Path:
    """Where this job's checkpoints live (shared by all nodes, kept across restarts)."""
    return current().checkpoint_dir


def resume_step() -> int | None:
    """The step of the newest complete checkpoint, or None on a fresh start."""
    return current().resume_step()


def report(step: int | None = None, epoch: int | None = None,
           metrics: dict[str, Any] | None = None, total_steps: int | None = None) -> None:
    """Progress (and ETA once total_steps is known) and metrics, from rank 0; rate-limited,
    except that every new epoch goes out."""
    current().report(step=step, epoch=epoch, metrics=metrics, total_steps=total_steps)


def should_checkpoint(step: int | None = None) -> bool:
    """Collective: True on every rank when the operator asked for a checkpoint, a stop is
    pending, or step is a multiple of spec.checkpoint.everySteps."""
    return current().should_checkpoint(step)


def should_stop(step: int | None = None) -> bool:
    """Collective: True on every rank when the operator asked the job to stop."""
    return current().should_stop(step)


def checkpoint_saved(step: int, path: str | Path | None = None) -> None:
    """Tell the operator the checkpoint of `step` is complete (when you save it yourself)."""
    current().checkpoint_saved(step, path)


def save_checkpoint(state: Any, step: int) -> Path:
    """Collective: torch.save(state) for `step` in checkpoint_dir() and record it."""
    return current().save_checkpoint(state, step)


def load_checkpoint(map_location: Any = "cpu", weights_only: bool = True
                    ) -> tuple[Any, int] | None:
    """(state, step) of the newest save_checkpoint, or None on a fresh start."""
    return current().load_checkpoint(map_location, weights_only)


__all__ = ["checkpoint_dir", "checkpoint_saved", "current", "load_checkpoint", "report",
           "resume_step", "save_checkpoint", "should_checkpoint", "should_stop"]
