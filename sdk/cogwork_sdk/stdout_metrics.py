"""Zero-code metrics: `name=value` lines on a worker's stdout become report fields.

The default format is Katib's StdOut collector's (`epoch=3 loss=0.21 val_accuracy=0.93`), so a
script written for Katib needs no change; each format is a regular expression whose first group
is the name and second the value. `epoch` and `step` fill the report's epoch and step, every
other pair is a metric. Python's `re` decides the syntax (Katib compiles Go's RE2: the default
reads the same in both).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

# Katib's StdOut collector format.
DEFAULT_FORMATS = (r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)",)
MAX_METRICS = 32  # what the report endpoint accepts per report
MAX_NAME, MAX_VALUE = 63, 32


def formats_from_env(value: str) -> tuple[re.Pattern[str], ...]:
    """COGWORK_METRICS_FORMAT: a JSON list of regular expressions (the operator renders
    DEFAULT_FORMATS when spec.script.metricsFormat is unset)."""
    return tuple(re.compile(pattern) for pattern in json.loads(value))


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value and abs(value) != float("inf") else None


@dataclass
class MetricLines:
    """The latest value of every name seen so far; `feed` says whether a line changed them."""

    formats: tuple[re.Pattern[str], ...]
    step: int | None = None
    epoch: int | None = None
    metrics: dict[str, str] = field(default_factory=dict)

    def feed(self, line: str) -> bool:
        changed = False
        for pattern in self.formats:
            for match in pattern.finditer(line):
                if match.lastindex is None or match.lastindex < 2:
                    continue
                name, text = match.group(1), match.group(2)
                value = _number(text)
                if not name or value is None or len(name) > MAX_NAME:
                    continue
                if name in ("epoch", "step"):
                    if value < 0 or value != int(value):
                        continue  # a count or nothing
                    setattr(self, name, int(value))
                elif name in self.metrics or len(self.metrics) < MAX_METRICS:
                    self.metrics[name] = f"{value:.6g}"[:MAX_VALUE]
                else:
                    continue
                changed = True
        return changed

    def report_fields(self) -> dict[str, object]:
        return {"step": self.step, "epoch": self.epoch,
                "metrics": [{"name": k, "value": v} for k, v in self.metrics.items()] or None}
