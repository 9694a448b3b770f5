"""One run's ProcessTracker kills that run's processes and no other's: the trials of a local
TuneJob are runs side by side in one process, all children of it (the cause of trials counted
FAIL after training: one trial's cleanup SIGKILLed its sibling's agent or store)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from cogwork.local.processes import RUN_MARKER_ENV, ProcessTracker

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


@pytest.fixture
def runs() -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """Two runs' processes, children of this one, each carrying its run's marker."""
    procs = {marker: subprocess.Popen(SLEEPER, env={**os.environ, RUN_MARKER_ENV: marker},
                                      start_new_session=True)  # as torchx starts replicas
             for marker in ("/w/t1", "/w/t10")}  # one marker a prefix of the other
    yield procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_kill_leftovers_spares_the_other_runs_processes(
        runs: dict[str, subprocess.Popen[bytes]]) -> None:
    mine, theirs = runs["/w/t1"], runs["/w/t10"]
    tracker = ProcessTracker(marker="/w/t1")
    tracker.snapshot()

    assert tracker.seen == {mine.pid}
    assert tracker.kill_leftovers() == [mine.pid]
    assert mine.wait(timeout=10) == -9
    assert theirs.poll() is None  # the sibling run still trains


def test_a_remembered_pid_without_the_marker_is_not_killed(
        runs: dict[str, subprocess.Popen[bytes]]) -> None:
    """A pid seen once may belong to another process by cleanup time."""
    theirs = runs["/w/t10"]
    tracker = ProcessTracker(marker="/w/t1")
    tracker.seen.add(theirs.pid)

    assert theirs.pid not in tracker.kill_leftovers()
    assert theirs.poll() is None
