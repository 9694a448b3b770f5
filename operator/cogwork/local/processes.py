"""Local process plumbing for `cogwork run`: ports, log tails, and killing what we started.

torchrun starts its workers in new sessions (`start_new_session=True`), so stopping an agent's
process group can leave a worker training; like a kubelet killing a pod's cgroup, we remember
every descendant of one run and SIGKILL whatever outlives the graceful shutdown. One run's
descendants are the processes below this one that carry its marker in their environment
(RUN_MARKER_ENV, inherited by every child): the trials of a local TuneJob run side by side in
one process, and one trial's cleanup must not kill another's processes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the store binds it a moment later)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process we can see (Linux /proc)."""
    out: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may contain spaces and parentheses: split after the last ")".
        out[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return out


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (empty where /proc does not exist)."""
    if not Path("/proc").is_dir():
        return set()
    parents = _parents()
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


RUN_MARKER_ENV = "COGWORK_LOCAL_RUN"


def carries(pid: int, marker: str) -> bool:
    """Whether process `pid` has RUN_MARKER_ENV=`marker` in its environment."""
    try:
        environ = (Path("/proc") / str(pid) / "environ").read_bytes()
    except OSError:  # gone, or not ours to read
        return False
    return f"{RUN_MARKER_ENV}={marker}".encode() in environ.split(b"\0")


class ProcessTracker:
    """Remembers one run's processes (descendants of this process that carry `marker`) so
    that none survives `kill_leftovers`."""

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.seen: set[int] = set()

    def snapshot(self) -> None:
        self.seen |= {pid for pid in descendants(os.getpid()) if carries(pid, self.marker)}

    def kill_leftovers(self) -> list[int]:
        """SIGKILL every remembered process still alive; returns their pids."""
        self.snapshot()
        killed = []
        for pid in sorted(self.seen):
            if not carries(pid, self.marker):  # exited, and its pid may be another's now
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        return killed


class LogTail:
    """Complete lines appended to a file since the last read (the file may not exist yet)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""

    def read_lines(self) -> list[str]:
        try:
            with self.path.open("rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        self._offset += len(chunk)
        data = self._partial + chunk
        *lines, self._partial = data.split(b"\n")
        return [line.decode(errors="replace").rstrip("\r") for line in lines]


def wait_until(condition: Callable[[], bool], timeout_s: float, interval_s: float = 0.05
               ) -> bool:
    """Poll `condition` until it returns true or `timeout_s` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval_s)
    return bool(condition())
