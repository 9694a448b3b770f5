"""`cogwork run -f job.yaml`: each kind's local runner, one signature for all three.

Each runner takes the manifest as parsed YAML, a work dir (a temporary one when None) and where
to print, and returns the process exit code (0 only when the job succeeded).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

from cogwork.local.exits import EXIT_INVALID
from cogwork.local.labeljob import run_labeljob
from cogwork.local.trainjob import run_trainjob
from cogwork.local.tunejob import run_tunejob

Runner = Callable[..., int]  # (doc, workdir=None, *, out=None) -> exit code
RUNNERS: dict[str, Runner] = {"TrainJob": run_trainjob, "TuneJob": run_tunejob,
                              "LabelJob": run_labeljob}


def run_document(doc: Mapping[str, Any], workdir: Path | None = None,
                 out: TextIO | None = None) -> int:
    """Run one manifest locally, whatever its kind; returns the process exit code."""
    out = out or sys.stdout
    runner = RUNNERS.get(str(doc.get("kind")))
    if runner is None:
        print(f"cogwork run: cannot run kind {doc.get('kind')!r}; supported: "
              f"{', '.join(RUNNERS)}", file=out, flush=True)
        return EXIT_INVALID
    return runner(doc, workdir, out=out)
