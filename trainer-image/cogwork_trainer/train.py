"""The torchrun entry point: `torchrun ... -m cogwork_trainer.train`.

Elastic DDP on the built-in task (or a user module in script mode) under the pod contract:
resume from `latest` whatever the world size, a constant GLOBAL batch, checkpoints every N steps
and on request, a clean stop on request, progress reports from rank 0, and a held-out
evaluation at the end. torchrun restarts every worker on any failure or membership change, so
all state that matters lives in the checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
import os
import runpy
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from cogwork_sdk import contract, divergence
from cogwork_sdk.control import Control
from cogwork_sdk.files import write_text_atomically
from cogwork_sdk.progress import ProgressClock
from cogwork_sdk.report import Reporter
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from . import checkpoint as ckpt
from . import distributed as cdist
from .config import Config, ConfigError, ScriptConfig, TaskConfig, from_env
from .data import Dataset, batch_indices, epoch_permutation, load_dataset, steps_per_epoch
from .evaluate import evaluate
from .katib_push import KatibPusher
from .models import build_model, save_model

log = logging.getLogger("cogwork_trainer")


class Heartbeat:
    """A liveness probe compares this file's age with a threshold: a hung group stops writing it.

    Written at most once a second (a probe needs no finer grain) by local rank 0 only.
    """

    def __init__(self, path: str, enabled: bool, min_interval_s: float = 1.0) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self.min_interval_s = min_interval_s
        self._last = float("-inf")

    def beat(self, step: int, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < self.min_interval_s):
            return
        self._last = now
        try:
            write_text_atomically(self.path, f"{step} {time.time():.3f}\n")
        except OSError as e:  # never fail training for the probe's sake
            log.debug("heartbeat: %s", e)


def make_optimizer(task: TaskConfig, params: Any) -> torch.optim.Optimizer:
    if task.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=task.learning_rate, momentum=task.momentum, weight_decay=task.weight_decay
        )
    if task.optimizer == "adam":
        return torch.optim.Adam(params, lr=task.learning_rate, weight_decay=task.weight_decay)
    return torch.optim.AdamW(params, lr=task.learning_rate, weight_decay=task.weight_decay)


def init_distributed(cfg: Config) -> torch.device:
    """Join the process group torchrun set up (RANK/WORLD_SIZE/MASTER_* env); else run alone."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cpu")
    if cfg.backend == "nccl":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ and not cdist.active():
        # Explicit timeout: NCCL's default is 30 min, far too long to notice a lost peer.
        dist.init_process_group(
            backend=cfg.backend, timeout=timedelta(seconds=cfg.collective_timeout_s)
        )
    return device


def _metrics(loss: float | None, val_accuracy: float | None, parameters: int
             ) -> list[dict[str, str]] | None:
    """The curve (loss, val_accuracy) and the model's size, once there is a curve: `parameters`
    lets a multi-objective TuneJob trade accuracy against model size."""
    out = []
    if loss is not None:
        out.append({"name": "loss", "value": f"{loss:.6g}"})
    if val_accuracy is not None:
        out.append({"name": "val_accuracy", "value": f"{val_accuracy:.6g}"})
    if out:
        out.append({"name": "parameters", "value": str(parameters)})
    return out or None


def _write_json(path: Path, doc: Any) -> None:
    write_text_atomically(path, json.dumps(doc, indent=2) + "\n")


class Trainer:
    def __init__(self, cfg: Config, task: TaskConfig, device: torch.device) -> None:
        self.cfg, self.task, self.device = cfg, task, device
        self.rank, self.world = cdist.rank(), cdist.world_size()
        self.reporter = Reporter.from_config(cfg, enabled=self.rank == 0)
        # Katib trials (Push collector) also get rank 0's metrics; None elsewhere.
        self.katib = KatibPusher.from_env(enabled=self.rank == 0)
        self.heartbeat = Heartbeat(
            cfg.heartbeat_file, enabled=int(os.environ.get("LOCAL_RANK", "0")) == 0
        )
        self.control = Control(cfg.control_dir)

        self.data: Dataset = load_dataset(task.dataset, task.seed, task.test_fraction)
        self.n_train = len(self.data.y_train)
        self.global_batch = task.batch_size
        self.steps_per_epoch = steps_per_epoch(self.n_train, self.global_batch)
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"batchSize {self.global_batch} exceeds the {self.n_train} training samples"
            )
        self.total_steps = task.epochs * self.steps_per_epoch

        torch.manual_seed(task.seed)  # same initial weights for every world size
        self.net: nn.Module = build_model(
            task.model, self.data.input_shape, len(self.data.classes), task.hidden_size
        ).to(device)
        self.optimizer = make_optimizer(task, self.net.parameters())
        self.parameters = sum(p.numel() for p in self.net.parameters())
        self.x = torch.from_numpy(self.data.x_train).to(device)  # tiny: keep it all resident
        self.y = torch.from_numpy(self.data.y_train).to(device)

        self.state = ckpt.TrainState(seed=task.seed, global_batch=self.global_batch)
        self.resumed_from: int | None = None
        self.last_saved_step = -1
        self.last_loss: float | None = None
        self.last_val_accuracy: float | None = None
        self.clock = ProgressClock()

    # -- checkpoints ---------------------------------------------------------------------

    def resume(self) -> None:
        restored = ckpt.load(self.cfg.checkpoint_dir, self.net, self.optimizer)
        if restored is None:
            return
        if restored.global_batch != self.global_batch:
            log.warning("checkpoint global batch %d != batchSize %d; continuing with %d",
                        restored.global_batch, self.global_batch, self.global_batch)
        if restored.seed != self.task.seed:
            log.warning("checkpoint seed %d != task seed %d; keeping the checkpoint's data order",
                        restored.seed, self.task.seed)
        restored.global_batch = self.global_batch
        self.state = restored
        self.resumed_from = self.last_saved_step = restored.step
        log.info("resumed from step %d (epoch %d, %d samples into it) at world size %d",
                 restored.step, restored.epoch, restored.samples_consumed, self.world)
        self.reporter.emit(contract.EVENT_RESUMED, resumedFromStep=restored.step,
                           **self._progress_fields())

    def save(self) -> int:
        """Checkpoint the current step (collective) unless it is already on disk."""
        if self.state.step != self.last_saved_step:
            ckpt.save(self.cfg.checkpoint_dir, self.net, self.optimizer, self.state,
                      keep=self.cfg.checkpoint_keep)
            self.last_saved_step = self.state.step
        return self.state.step

    # -- reporting -----------------------------------------------------------------------

    def _progress_fields(self) -> dict[str, Any]:
        st = self.state
        return {
            **self.clock.fields(st.step, self.total_steps, self.global_batch),
            # Completed epochs: val_accuracy in `metrics` is always that of the model after
            # `epoch` epochs, so a tuner can read the learning curve off these reports.
            "epoch": st.epoch,
            "metrics": _metrics(self.last_loss, self.last_val_accuracy, self.parameters),
            # Every report names the newest complete checkpoint, so status always shows how
            # much work a lost pod would cost.
            "checkpointStep": self.last_saved_step if self.last_saved_step >= 0 else None,
        }

    def push_to_katib(self, final: bool = False, **extra: float) -> None:
        """The metrics of the latest report (plus `extra`) as one Katib observation."""
        if self.katib is None:
            return
        latest = _metrics(self.last_loss, self.last_val_accuracy, self.parameters) or []
        self.katib.push({**{m["name"]: m["value"] for m in latest}, **extra}, final=final)

    # -- the loop ------------------------------------------------------------------------

    def end_epoch(self, loss_sum: float, loss_count: float) -> None:
        total_sum, total_count = cdist.all_reduce_sum([loss_sum, loss_count])
        self.last_loss = total_sum / total_count if total_count else None
        if self.rank == 0:
            self.last_val_accuracy = evaluate(
                self.net, self.data.x_test, self.data.y_test, self.data.classes, self.device
            )["accuracy"]
        self.state.epoch += 1
        self.state.samples_consumed = 0
        log.info("epoch %d/%d: loss %s val_accuracy %s", self.state.epoch, self.task.epochs,
                 self.last_loss, self.last_val_accuracy)
        self.reporter.emit(contract.EVENT_PROGRESS, force=True, **self._progress_fields())
        self.push_to_katib()  # once per epoch: the reports in between repeat these values

    def handle_control(self) -> bool:
        """Act on the annotations at this step boundary; True when training must stop."""
        decision = self.control.poll()
        if not (decision.checkpoint or decision.stop):
            return False
        step = self.save()
        if decision.checkpoint:
            self.control.mark_handled(decision.token)
            log.info("checkpoint request %r: saved step %d", decision.token, step)
            self.reporter.emit(contract.EVENT_CHECKPOINT, checkpointRequest=decision.token,
                               **self._progress_fields())
        if decision.stop:
            log.info("stop requested: checkpoint at step %d, exiting", step)
            self.reporter.emit(contract.EVENT_STOPPED, **self._progress_fields())
        return decision.stop

    def run(self) -> int:
        log.info("rank %d of world %d, backend %s, device %s; %s/%s on %s, %d steps",
                 self.rank, self.world, self.cfg.backend if cdist.active() else "none",
                 self.device, self.task.model, self.task.optimizer, self.task.dataset,
                 self.total_steps)
        self.heartbeat.beat(self.state.step, force=True)
        self.resume()
        st, g = self.state, self.global_batch
        model: nn.Module = self.net
        if cdist.active():
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = DistributedDataParallel(self.net, device_ids=ids)
        model.train()
        criterion = nn.CrossEntropyLoss(reduction="sum")
        # Summed loss * world / G: DDP averages gradients over ranks, so this makes the update
        # the mean over the GLOBAL batch even when ranks hold unequal shares.
        scale = self.world / g
        loss_sum, loss_count = 0.0, 0
        order_epoch, order = -1, np.zeros(0, dtype=np.int64)

        while st.epoch < self.task.epochs:
            if self.handle_control():
                return self.finish(stopped=True)
            if st.samples_consumed + g > self.n_train:  # only after a batch-size change
                st.epoch, st.samples_consumed = st.epoch + 1, 0
                continue
            if order_epoch != st.epoch:
                order_epoch, order = st.epoch, epoch_permutation(self.n_train, st.seed, st.epoch)
            idx = torch.from_numpy(
                batch_indices(order, st.samples_consumed, g, self.rank, self.world))
            xb, yb = self.x[idx.to(self.device)], self.y[idx.to(self.device)]

            self.optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(xb), yb)
            (loss * scale).backward()
            self.optimizer.step()

            loss_value = float(loss.detach())
            loss_sum += loss_value
            loss_count += len(idx)
            st.step += 1
            if self.task.fail_on_non_finite_loss and not math.isfinite(loss_value):
                return self.diverged(loss_value / max(len(idx), 1))
            st.samples_consumed += g
            if st.samples_consumed + g > self.n_train:
                self.end_epoch(loss_sum, loss_count)
                loss_sum, loss_count = 0.0, 0
            if self.cfg.checkpoint_every and st.step % self.cfg.checkpoint_every == 0:
                self.save()
            self.heartbeat.beat(st.step)
            if self.reporter.progress_due():
                self.reporter.emit(contract.EVENT_PROGRESS, **self._progress_fields())
            if self.cfg.step_delay_s:
                time.sleep(self.cfg.step_delay_s)

        return self.finish(stopped=False)

    def diverged(self, loss: float) -> int:
        """The loss is NaN or infinite: end without a checkpoint (it would hold the diverged
        weights) and with the contract's exit code, so neither torchrun nor the operator
        restarts a run that would diverge again."""
        text = divergence.message("loss", loss, self.state.step, self.state.epoch)
        log.error("%s (learningRate %s, optimizer %s)", text, self.task.learning_rate,
                  self.task.optimizer)
        code = divergence.fail(text)
        self.reporter.close()
        if self.katib is not None:
            self.katib.close()
        return code

    def finish(self, stopped: bool) -> int:
        if not stopped:
            self.save()
            if self.rank == 0:
                evaluation = evaluate(
                    self.net, self.data.x_test, self.data.y_test, self.data.classes, self.device
                )
                root = Path(self.cfg.checkpoint_dir)
                _write_json(root / "evaluation.json", evaluation)
                save_model(root / "model.pt", self.net, name=self.task.model,
                           hidden=self.task.hidden_size, input_shape=self.data.input_shape,
                           classes=self.data.classes, mean=self.data.mean, std=self.data.std)
                self.last_val_accuracy = evaluation["accuracy"]
                log.info("completed: test accuracy %.4f, macro F1 %.4f",
                         evaluation["accuracy"], evaluation["macroF1"])
                fields = self._progress_fields()
                fields["estimatedRemainingSeconds"] = 0
                self.reporter.emit(contract.EVENT_COMPLETED, evaluation=evaluation, **fields)
                self.push_to_katib(final=True, accuracy=evaluation["accuracy"],
                                   macroF1=evaluation["macroF1"])
        self.heartbeat.beat(self.state.step, force=True)
        self.reporter.close()
        if self.katib is not None:
            self.katib.close()
        cdist.barrier()  # nobody leaves (and tears the group down) while rank 0 still writes
        return 0


def run_script(script: ScriptConfig) -> int:
    """Script mode: the user's module runs as __main__ with the same env contract.

    Exactly like `python -m <module> <args>`: runpy sets sys.argv[0] to the module's file.
    """
    sys.argv = [script.module, *script.args]
    runpy.run_module(script.module, run_name="__main__", alter_sys=True)
    return 0


def main() -> int:
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(
        level=logging.INFO if rank == "0" else logging.WARNING,
        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s",
    )
    try:
        cfg = from_env()
    except ConfigError as e:
        log.error("bad configuration: %s", e)
        return 2
    if cfg.script is not None:
        return run_script(cfg.script)
    assert cfg.task is not None
    device = init_distributed(cfg)
    try:
        trainer = Trainer(cfg, cfg.task, device)
    except (ConfigError, ValueError, OSError) as e:  # e.g. a missing .npz: retrying cannot help
        log.error("cannot set up the task: %s", e)
        return 2
    rc = trainer.run()
    if cdist.active() and rc == 0:  # a diverged rank leaves at once: peers may be mid-step
        dist.destroy_process_group()
    return rc


if __name__ == "__main__":
    sys.exit(main())
