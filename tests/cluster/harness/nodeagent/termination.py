"""Termination messages, as a kubelet handles them: a per-container host file bind-mounted at the
container's `terminationMessagePath`, read after the container exits into
`state.terminated.message` (at most 4 KiB; with `FallbackToLogsOnError`, the log tail of a failed
container whose file is empty)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from .runtime import Mount

DEFAULT_PATH = "/dev/termination-log"
MAX_BYTES = 4096  # the kubelet's limit per container
FALLBACK_LINES, FALLBACK_BYTES = 80, 2048  # what FallbackToLogsOnError takes from the log


def host_file(pod_dir: Path, container: str) -> Path:
    return pod_dir / "termination" / container


def prepare(pod_dir: Path, spec: dict[str, Any]) -> Mount:
    """An empty, writable host file for this run of the container, and its mount."""
    path = host_file(pod_dir, str(spec["name"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    path.chmod(0o666)  # the container may run as any user
    return Mount(path, str(spec.get("terminationMessagePath") or DEFAULT_PATH))


def read(pod_dir: Path, spec: dict[str, Any], log: Path, exit_code: int | None) -> str | None:
    """The message to report for a container that has just exited (None: nothing to say)."""
    raw = b""
    with contextlib.suppress(OSError):
        raw = host_file(pod_dir, str(spec["name"])).read_bytes()[:MAX_BYTES]
    if not raw.strip() and exit_code and \
            spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
        with contextlib.suppress(OSError):
            lines = log.read_bytes().splitlines()[-FALLBACK_LINES:]
            raw = b"\n".join(lines)[-FALLBACK_BYTES:]
    text = raw.decode(errors="replace").strip()
    return text or None
