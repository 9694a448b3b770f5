"""kstatus conditions (Ready, Reconciling, Stalled) derived from a job's phase. Pure, no I/O.

Flux, `kubectl wait` users and the cli-utils status poller read these three condition types
(sigs.k8s.io/cli-utils/pkg/kstatus): Reconciling=True means "in progress", Stalled=True means
"failed", and Ready=True means "current". A job is only "current" once it has succeeded, so a
GitOps pipeline that waits on a TrainJob waits for the training, and a failure stops it.
They sit alongside our own conditions, which stay the source of truth.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from cogwork.api.common import Condition, find_condition, set_condition

TERMINAL_PHASES = ("Succeeded", "Failed")


def with_kstatus(conditions: Sequence[Condition], phase: str, generation: int | None,
                 now: datetime | None = None) -> list[Condition]:
    """`conditions` plus Ready/Reconciling/Stalled for a job in `phase`."""
    failed = find_condition(conditions, "Failed")
    reason = failed.reason if phase == "Failed" and failed and failed.reason else phase
    message = failed.message if phase == "Failed" and failed else f"phase is {phase}"
    out = list(conditions)
    for kind, status in (
        ("Ready", "True" if phase == "Succeeded" else "False"),
        ("Reconciling", "False" if phase in TERMINAL_PHASES else "True"),
        ("Stalled", "True" if phase == "Failed" else "False"),
    ):
        out = set_condition(out, kind, status, reason, message,  # type: ignore[arg-type]
                            observed_generation=generation, now=now)
    return out
