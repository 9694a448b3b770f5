"""Cogwork's SDK for PyTorch Lightning, as one callback:

    from cogwork_sdk.lightning import CogworkCallback, last_checkpoint
    trainer = lightning.Trainer(..., callbacks=[CogworkCallback()])
    trainer.fit(model, ckpt_path=last_checkpoint())

It reports progress (total steps, ETA) and the logged metrics (`self.log(...)`: the trainer's
callback_metrics, numbers only) after every optimizer step and every validation; on the
operator's checkpoint request it saves `checkpoint_dir()/step-<step>.ckpt` with
`trainer.save_checkpoint` and acknowledges it; on its stop request it saves one too and sets
`trainer.should_stop`.

This is the only module of the SDK that imports lightning. See docs/sdk.md.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from . import current as cogwork_session  # this process's Session

_CKPT_FILE = re.compile(r"^step-(\d+)\.ckpt$")


def _numbers(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Scalars (0-d or one-element tensors, numbers) as floats; the rest is left out."""
    out: dict[str, float] = {}
    for name, value in metrics.items():
        try:
            if hasattr(value, "numel"):
                if value.numel() != 1:
                    continue
                value = value.item()
            out[name] = float(value)
        except (TypeError, ValueError, RuntimeError):
            continue
    return out


def last_checkpoint() -> str | None:
    """The newest checkpoint CogworkCallback saved (for `trainer.fit(ckpt_path=...)`), or None
    on a fresh start."""
    latest = cogwork_session().latest()
    if latest is None or latest[1] is None or not Path(latest[1]).exists():
        return None
    return latest[1]


class CogworkCallback(pl.Callback):
    """Progress, metrics and the operator's checkpoint and stop requests for a Lightning Trainer.

    The requests are collective: every rank runs the callback, which `Trainer(callbacks=[...])`
    does; only rank 0 reports and writes.
    """

    def __init__(self) -> None:
        self._acted_step: int | None = None  # the requests are polled once per optimizer step

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        session = cogwork_session()
        total = trainer.estimated_stepping_batches
        if trainer.global_step > 0:  # fit(ckpt_path=...) restored it
            session.resumed(trainer.global_step)
        self._acted_step = trainer.global_step
        session.report(step=trainer.global_step, epoch=trainer.current_epoch,
                       total_steps=int(total) if math.isfinite(total) else None)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        if step == self._acted_step:  # gradient accumulation: no optimizer step yet
            return
        self._acted_step = step
        session = cogwork_session()
        session.report(step=step, epoch=trainer.current_epoch,
                       metrics=_numbers(trainer.callback_metrics))
        if session.should_stop(step):  # collective
            self._save(trainer, step)
            trainer.should_stop = True
        elif session.poll(step).checkpoint:  # the operator's request (not everySteps)
            self._save(trainer, step)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        # At the end of an epoch that epoch is complete; a mid-epoch validation is not.
        epoch = trainer.current_epoch + (1 if trainer.is_last_batch else 0)
        cogwork_session().report(step=trainer.global_step, epoch=epoch,
                                 metrics=_numbers(trainer.callback_metrics), force=True)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The newest values, which the rate limit may have held back.
        cogwork_session().report(step=trainer.global_step, force=True)

    def _save(self, trainer: pl.Trainer, step: int) -> None:
        """Collective (trainer.save_checkpoint is): save, acknowledge, keep the newest
        spec.checkpoint.keep of these."""
        session = cogwork_session()
        path = session.checkpoint_dir / f"step-{step}.ckpt"
        trainer.save_checkpoint(path)
        session.checkpoint_saved(step, path)
        if trainer.is_global_zero:
            steps = sorted(int(m.group(1)) for p in session.checkpoint_dir.iterdir()
                           if (m := _CKPT_FILE.match(p.name)))
            for old in steps[:-session.checkpoint_keep]:
                (session.checkpoint_dir / f"step-{old}.ckpt").unlink(missing_ok=True)


__all__ = ["CogworkCallback", "last_checkpoint"]
