"""A diverged run (a NaN or infinite training loss) ends the job Failed, not Succeeded.

The rank that sees such a loss writes one line to the container's termination message (the
kubelet copies it into the pod's status, where the operator reads it) and exits with
contract.EXIT_NON_FINITE_LOSS; the launcher does not restart the worker group for that code and
the operator fails the job with reason NonFiniteLoss (docs/pod-contract.md, "Divergence").
Used by the built-in trainer and by `cogwork_sdk.report`. Standard library only.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from collections.abc import Mapping
from typing import Any

from . import contract

# Metric names that are a loss: `loss`, `train_loss`, `eval/loss`, `val-loss`, `step.loss`.
_LOSS_NAME = re.compile(r"(^|[_./-])loss$", re.IGNORECASE)


def is_loss_name(name: str) -> bool:
    return bool(_LOSS_NAME.search(name))


def is_non_finite(value: Any) -> bool:
    """True for NaN and +-inf (numbers or their text, e.g. "nan"); False for anything that
    is not a number at all."""
    try:
        return not math.isfinite(float(value))
    except (TypeError, ValueError, OverflowError):
        return False


def enabled(environ: Mapping[str, str] | None = None) -> bool:
    """failOnNonFiniteLoss of the job's task or script in COGWORK_TASK (default true)."""
    env = os.environ if environ is None else environ
    try:
        doc = json.loads(env.get(contract.ENV_TASK) or "{}")
    except ValueError:
        return True
    if not isinstance(doc, dict):
        return True
    script = doc.get("script")
    part: dict[str, Any] = script if isinstance(script, dict) else doc
    return part.get("failOnNonFiniteLoss") is not False


def message(name: str, value: Any, step: int | None, epoch: int | None = None) -> str:
    where = f" at step {step}" if step is not None else ""
    if epoch is not None:
        where += f" (epoch {epoch})"
    return f"non-finite {name} {float(value)}{where}"


def write_termination_message(text: str, environ: Mapping[str, str] | None = None) -> None:
    """Best effort: outside a Kubernetes container the file usually cannot be written."""
    env = os.environ if environ is None else environ
    path = env.get(contract.ENV_TERMINATION_MESSAGE_FILE) or contract.TERMINATION_MESSAGE_FILE
    try:
        with open(path, "w") as f:
            f.write(text + "\n")
    except OSError:
        pass


def fail(text: str, environ: Mapping[str, str] | None = None) -> int:
    """Record why the run ends; returns the exit code the process must end with."""
    write_termination_message(text, environ)
    print(f"cogwork: {text}: the run diverged; ending with exit code "
          f"{contract.EXIT_NON_FINITE_LOSS} (failOnNonFiniteLoss)", file=sys.stderr, flush=True)
    return contract.EXIT_NON_FINITE_LOSS


class NonFiniteLoss(SystemExit):
    """Raised by `report` for a NaN or infinite loss: ends the process with the contract's exit
    code unless user code catches it."""

    def __init__(self, text: str) -> None:
        super().__init__(contract.EXIT_NON_FINITE_LOSS)
        self.text = text

    def __str__(self) -> str:
        return self.text


def check_metrics(metrics: Mapping[str, Any] | None, step: int | None, epoch: int | None,
                  environ: Mapping[str, str] | None = None) -> None:
    """Raise NonFiniteLoss when a loss among `metrics` is NaN or infinite (and the job has
    failOnNonFiniteLoss)."""
    bad = [(str(k), v) for k, v in (metrics or {}).items()
           if is_loss_name(str(k)) and is_non_finite(v)]
    if not bad or not enabled(environ):
        return
    text = message(bad[0][0], bad[0][1], step, epoch)
    fail(text, environ)
    raise NonFiniteLoss(text)
