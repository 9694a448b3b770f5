"""Cogwork's SDK for Hugging Face Transformers' Trainer, as one callback:

    from cogwork_sdk.hf import CogworkCallback
    trainer = Trainer(..., callbacks=[CogworkCallback()])

It reports progress (total steps, ETA), the Trainer's logs (loss, learning rate, eval_*) and
evaluations; it turns the operator's checkpoint request into `control.should_save` and its stop
request into a save and `control.should_training_stop`, and acknowledges every save the Trainer
makes. The checkpoints are the Trainer's own (`output_dir/checkpoint-<step>`; resume with
`trainer.train(resume_from_checkpoint=...)`), so point `output_dir` at `checkpoint_dir()`.

This is the only module of the SDK that imports transformers. See docs/sdk.md.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from . import contract
from . import current as cogwork_session  # this process's Session

log = logging.getLogger(__name__)

# In the Trainer's logs but not metrics: fields of the report, and timings (its throughput is
# samplesPerSecond, its ETA estimatedRemainingSeconds).
_NOT_METRICS = frozenset({"epoch", "step", "total_flos"})
_TIMINGS = ("_runtime", "_per_second")


def _epochs(state: TrainerState) -> int | None:
    """Completed epochs (the Trainer's state.epoch is fractional: 1.5 is half way through 2)."""
    return None if state.epoch is None else int(state.epoch)


def _metrics(values: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (values or {}).items()
            if k not in _NOT_METRICS and not k.endswith(_TIMINGS)}


class CogworkCallback(TrainerCallback):
    """Progress, metrics and the operator's checkpoint and stop requests for a Trainer.

    Every rank must run it (the requests are collective), which `Trainer(callbacks=[...])`
    does; only rank 0 reports.
    """

    def on_train_begin(self, args: TrainingArguments, state: TrainerState,
                       control: TrainerControl, **kwargs: Any) -> None:
        session = cogwork_session()
        job_dir = os.environ.get(contract.ENV_CHECKPOINT_DIR)
        if job_dir and args.output_dir and not Path(args.output_dir).resolve().is_relative_to(
                Path(job_dir).resolve()):
            log.warning("cogwork: output_dir %s is not under COGWORK_CHECKPOINT_DIR %s: a "
                        "restarted pod will not find its checkpoints", args.output_dir, job_dir)
        if state.global_step > 0:  # resume_from_checkpoint restored the state
            session.resumed(state.global_step)
        session.report(step=state.global_step, epoch=_epochs(state),
                       total_steps=state.max_steps or None)

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        cogwork_session().report(step=state.global_step, epoch=_epochs(state),
                                 metrics=_metrics(logs))

    def on_evaluate(self, args: TrainingArguments, state: TrainerState,
                    control: TrainerControl, metrics: dict[str, Any] | None = None,
                    **kwargs: Any) -> None:
        # Sent even within the rate limit: a tuner prunes on evaluations.
        cogwork_session().report(step=state.global_step, epoch=_epochs(state),
                                 metrics=_metrics(metrics), force=True)

    def on_step_end(self, args: TrainingArguments, state: TrainerState,
                    control: TrainerControl, **kwargs: Any) -> TrainerControl:
        session = cogwork_session()
        step = state.global_step
        session.step = max(session.step, step)  # on_log comes after this: `stopped` is at step
        if session.should_stop(step):  # collective; saved below, then the loop ends
            control.should_save = True
            control.should_training_stop = True
        elif session.poll(step).checkpoint:  # only the operator's request: save_steps is HF's
            control.should_save = True
        return control

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                **kwargs: Any) -> None:
        step = state.global_step
        path = os.path.join(args.output_dir or "", f"{PREFIX_CHECKPOINT_DIR}-{step}")
        cogwork_session().checkpoint_saved(step, path)

    def on_train_end(self, args: TrainingArguments, state: TrainerState,
                     control: TrainerControl, **kwargs: Any) -> None:
        # The newest values, which the rate limit may have held back.
        cogwork_session().report(step=state.global_step, epoch=_epochs(state), force=True)


__all__ = ["CogworkCallback"]
