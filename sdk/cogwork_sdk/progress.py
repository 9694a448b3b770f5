"""Percent done, time left and throughput from step counts (what status.progress shows)."""

from __future__ import annotations

import math
import time
from typing import Any


class ProgressClock:
    """The rate counts only the steps of this run: steps before a resume took no time here."""

    def __init__(self) -> None:
        self._start: tuple[float, int] | None = None  # (monotonic time, step) of the first call

    def fields(self, step: int, total_steps: int | None = None,
               samples_per_step: int | None = None) -> dict[str, Any]:
        """Report fields for `step` (None values are left out of the report)."""
        now = time.monotonic()
        if self._start is None:
            self._start = (now, step)
        elapsed, done = now - self._start[0], step - self._start[1]
        rate = done / elapsed if elapsed > 0 and done > 0 else None
        fields: dict[str, Any] = {"step": step, "totalSteps": total_steps}
        if total_steps:
            fields["progressPercentage"] = min(100, math.floor(100 * step / total_steps))
            if rate:
                fields["estimatedRemainingSeconds"] = max(0, round((total_steps - step) / rate))
        if rate and samples_per_step:
            fields["samplesPerSecond"] = round(rate * samples_per_step, 1)
        return fields
