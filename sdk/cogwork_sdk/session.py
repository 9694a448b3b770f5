"""The SDK's state in one training process: where checkpoints go, what rank 0 last reported,
which of the operator's requests it has answered. Built from the pod contract's env on first
use; every call works outside a TrainJob too (checkpoints in ./checkpoints, reports printed).
"""

from __future__ import annotations

import atexit
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import contract, dist, divergence
from .control import Control, Decision
from .files import replace_atomically, write_text_atomically
from .progress import ProgressClock
from .report import Reporter

LATEST_FILE = "cogwork-latest.json"  # {"step": N, "path": "..."}: the newest complete checkpoint
LOCAL_CHECKPOINT_DIR = "checkpoints"
_STEP_FILE = re.compile(r"^step-(\d+)\.pt$")


def _metric_list(metrics: Mapping[str, Any] | None) -> list[dict[str, str]] | None:
    """Numbers (and numeric strings) as the report's {name, value} list; the rest is dropped."""
    out = []
    for name, value in (metrics or {}).items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if number == number and abs(number) != float("inf"):
            out.append({"name": str(name)[:63], "value": f"{number:.6g}"})
    return out[:32] or None


class Session:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._environ = env
        self.checkpoint_dir = Path(env.get(contract.ENV_CHECKPOINT_DIR) or LOCAL_CHECKPOINT_DIR)
        self.checkpoint_every = int(env.get(contract.ENV_CHECKPOINT_EVERY) or 0)
        self.checkpoint_keep = max(1, int(env.get(contract.ENV_CHECKPOINT_KEEP) or 3))
        self.control = Control(env.get(contract.ENV_CONTROL_DIR))
        self._report_args = (env.get(contract.ENV_REPORT_URL),
                             env.get(contract.ENV_REPORT_TOKEN_FILE),
                             env.get(contract.ENV_REPORT_CA))
        self._reporter: Reporter | None = None
        self.clock = ProgressClock()
        self.total_steps: int | None = None
        self.step = 0
        self.epoch: int | None = None
        self.metrics: dict[str, str] = {}
        self.last_checkpoint_step: int | None = None
        self._decision: tuple[int | None, Decision] | None = None  # the last poll, by step
        self._stop_reported = False
        self._answered_loaded = False
        self._resume_reported = False

    # -- reporting (rank 0) ------------------------------------------------------------------

    @property
    def reporter(self) -> Reporter:
        if self._reporter is None:  # the rank is known once torchrun has set RANK
            url, token_file, ca = self._report_args
            self._reporter = Reporter(url, token_file, ca, enabled=dist.rank() == 0)
            atexit.register(self._reporter.close)
        return self._reporter

    def _fields(self) -> dict[str, Any]:
        fields = self.clock.fields(self.step, self.total_steps)
        fields.update(epoch=self.epoch, checkpointStep=self.last_checkpoint_step,
                      metrics=[{"name": k, "value": v} for k, v in self.metrics.items()] or None)
        return fields

    def report(self, step: int | None = None, epoch: int | None = None,
               metrics: Mapping[str, Any] | None = None, total_steps: int | None = None,
               *, force: bool = False) -> None:
        """`force`: send it even within the rate limit (an evaluation's metrics, the last
        values of a run), as every new epoch is.

        A loss among `metrics` (`loss`, `*_loss`) that is NaN or infinite ends the run: it
        raises divergence.NonFiniteLoss (a SystemExit with contract.EXIT_NON_FINITE_LOSS) after
        writing the termination message, unless the job sets failOnNonFiniteLoss false."""
        divergence.check_metrics(metrics, step if step is not None else self.step,
                                 epoch if epoch is not None else self.epoch, self._environ)
        if total_steps is not None:
            self.total_steps = total_steps
        if step is not None:
            self.step = step
        new_epoch = epoch is not None and epoch != self.epoch
        if epoch is not None:
            self.epoch = epoch
        for item in _metric_list(metrics) or []:
            self.metrics[item["name"]] = item["value"]
        # A new epoch always goes out: a tuner prunes on per-epoch values.
        self.reporter.emit(contract.EVENT_PROGRESS, force=force or new_epoch, **self._fields())

    # -- the operator's requests (collective: every rank, same step) -------------------------

    def poll(self, step: int | None = None) -> Decision:
        """Rank 0 reads the control file and broadcasts, once per `step` (None: every call)."""
        if not self._answered_loaded:
            # Once per process, not per step: a restarted process must not answer again the
            # request its checkpoint already answered (rank 0 alone decides).
            self._answered_loaded = True
            if dist.rank() == 0:
                self.control.handled_token = self._record().get("request")
        if step is None or self._decision is None or self._decision[0] != step:
            self._decision = (step, self.control.poll())
        return self._decision[1]

    def should_checkpoint(self, step: int | None = None) -> bool:
        """The operator asked for a checkpoint (scale-down, preemption), a stop is pending, or
        `step` is a multiple of the job's spec.checkpoint.everySteps."""
        decision = self.poll(step)
        every = bool(step and self.checkpoint_every and step % self.checkpoint_every == 0)
        return decision.checkpoint or decision.stop or every

    def should_stop(self, step: int | None = None) -> bool:
        """The operator asked the job to stop (spec.stop, a pruned trial): checkpoint, exit 0."""
        stop = self.poll(step).stop
        if stop and not self._stop_reported:
            self._stop_reported = True
            self.reporter.emit(contract.EVENT_STOPPED, **self._fields())
        return stop

    # -- checkpoints -------------------------------------------------------------------------

    def checkpoint_saved(self, step: int, path: str | os.PathLike[str] | None = None) -> None:
        """Record that the checkpoint of `step` is complete (rank 0 writes the record) and
        answer the operator's pending request with it."""
        self.step = max(self.step, step)
        self.last_checkpoint_step = step
        token = self._decision[1].token if self._decision and self._decision[1].checkpoint \
            else None
        if dist.rank() == 0:
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            record: dict[str, Any] = {"step": step,
                                      "path": str(path) if path is not None else None}
            if token or self.control.handled_token:  # the request this checkpoint answered
                record["request"] = token or self.control.handled_token
            write_text_atomically(self.checkpoint_dir / LATEST_FILE, json.dumps(record) + "\n")
            self.control.mark_handled(token)
            self.reporter.emit(contract.EVENT_CHECKPOINT, checkpointRequest=token, **self._fields())

    def _record(self) -> dict[str, Any]:
        try:
            record = json.loads((self.checkpoint_dir / LATEST_FILE).read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return record if isinstance(record, dict) else {}

    def latest(self) -> tuple[int, str | None] | None:
        """(step, path) of the newest complete checkpoint, from the record."""
        try:
            record = json.loads((self.checkpoint_dir / LATEST_FILE).read_text())
            return int(record["step"]), record.get("path")
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None

    def resume_step(self) -> int | None:
        """The step to resume from (None on a fresh start); reports the resume once."""
        latest = self.latest()
        if latest is None:
            return None
        self.resumed(latest[0])
        return latest[0]

    def resumed(self, step: int) -> None:
        """Record that training resumed from the checkpoint of `step`, and report it once: for
        frameworks that restore their own checkpoints (Hugging Face's Trainer, Lightning)."""
        self.step = self.last_checkpoint_step = step
        if not self._resume_reported:
            self._resume_reported = True
            self.reporter.emit(contract.EVENT_RESUMED, resumedFromStep=step, **self._fields())

    def save_checkpoint(self, state: Any, step: int) -> Path:
        """torch.save(state) as step-<step>.pt (rank 0, atomically), keep the newest
        spec.checkpoint.keep, record it. Collective: call on every rank."""
        import torch

        path = self.checkpoint_dir / f"step-{step}.pt"
        if dist.rank() == 0:
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            replace_atomically(path, lambda tmp: torch.save(state, tmp))
        dist.barrier()
        self.checkpoint_saved(step, path)
        if dist.rank() == 0:
            self._prune()
        return path

    def load_checkpoint(self, map_location: Any = "cpu", weights_only: bool = True
                        ) -> tuple[Any, int] | None:
        """(state, step) of the newest checkpoint save_checkpoint wrote, or None."""
        import torch

        latest = self.latest()
        if latest is None or latest[1] is None:
            return None
        state = torch.load(latest[1], map_location=map_location, weights_only=weights_only)
        self.resume_step()
        return state, latest[0]

    def _prune(self) -> None:
        steps = sorted(int(m.group(1)) for p in self.checkpoint_dir.iterdir()
                       if (m := _STEP_FILE.match(p.name)))
        for old in steps[:-self.checkpoint_keep]:
            (self.checkpoint_dir / f"step-{old}.pt").unlink(missing_ok=True)
