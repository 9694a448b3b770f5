"""Container state bookkeeping and the pod status a kubelet would report.

Status goes out as a strategic merge patch of the status subresource; a container state always
carries all three keys (two of them null) so the patch replaces, not merges, the state.
"""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass, field
from typing import Any

from .kube import now_rfc3339

Obj = dict[str, Any]


@dataclass
class CState:
    name: str
    image: str
    init: bool = False
    restart_count: int = 0
    proc: subprocess.Popen[bytes] | None = None
    state: str = "waiting"  # waiting | running | terminated
    reason: str | None = None
    message: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    last: Obj | None = None
    next_start: float = 0.0  # monotonic time before which a restart waits (backoff)
    container_id: str = ""
    runs: int = 0

    def set_waiting(self, reason: str, message: str | None = None) -> None:
        self.state, self.reason, self.message = "waiting", reason, message

    def begin_backoff(self, until: float) -> None:
        self.last = self._terminated()  # the finished run becomes lastState
        self.next_start = until
        self.set_waiting("CrashLoopBackOff", f"back-off restarting failed container {self.name}")

    def set_running(self, proc: subprocess.Popen[bytes], uid: str) -> None:
        if self.state == "terminated":
            self.last = self._terminated()
        if self.runs:
            self.restart_count += 1
        self.runs += 1
        self.proc, self.state, self.started_at = proc, "running", now_rfc3339()
        self.reason = self.message = None
        digest = hashlib.sha256(f"{uid}/{self.name}/{self.restart_count}".encode()).hexdigest()
        self.container_id = f"cogwork://{digest}"

    def set_terminated(self, exit_code: int, sig: int | None, reason: str | None = None) -> None:
        self.state, self.exit_code, self.signal = "terminated", exit_code, sig
        self.reason = reason or ("Completed" if exit_code == 0 else "Error")
        self.finished_at = now_rfc3339()
        self.proc = None

    def _terminated(self) -> Obj:
        term: Obj = {"exitCode": self.exit_code, "reason": self.reason,
                     "startedAt": self.started_at, "finishedAt": self.finished_at,
                     "containerID": self.container_id or None, "message": self.message}
        if self.signal:
            term["signal"] = self.signal
        return term

    def ever_ran(self) -> bool:
        return self.runs > 0

    def to_status(self) -> Obj:
        state: Obj = {"waiting": None, "running": None, "terminated": None}
        if self.state == "running":
            state["running"] = {"startedAt": self.started_at}
        elif self.state == "terminated":
            state["terminated"] = self._terminated()
        else:
            state["waiting"] = {"reason": self.reason or "ContainerCreating",
                                "message": self.message}
        last: Obj = {"waiting": None, "running": None, "terminated": self.last}
        return {
            "name": self.name, "image": self.image, "imageID": f"cogwork://{self.image}",
            "containerID": self.container_id or None,
            "ready": self.state == "running" and not self.init,
            "started": self.state == "running", "restartCount": self.restart_count,
            "state": state, "lastState": last if self.last else {},
        }


@dataclass
class Conditions:
    """Condition values plus the time each last changed (lastTransitionTime)."""

    values: dict[str, tuple[str, str | None, str]] = field(default_factory=dict)

    def set(self, kind: str, ok: bool, reason: str | None = None) -> None:
        status = "True" if ok else "False"
        old = self.values.get(kind)
        since = old[2] if old and old[0] == status else now_rfc3339()
        self.values[kind] = (status, None if ok else reason, since)

    def to_status(self) -> list[Obj]:
        return [{"type": kind, "status": status, "reason": reason, "lastTransitionTime": since,
                 "lastProbeTime": None}
                for kind, (status, reason, since) in self.values.items()]


def pod_phase(restart_policy: str, inits: list[CState], mains: list[CState],
              init_failed: bool) -> str:
    """The kubelet's getPhase, reduced to what this agent models."""
    if init_failed:
        return "Failed"
    if any(c.state != "terminated" or c.exit_code != 0 for c in inits):
        return "Pending"
    running = sum(c.state == "running" for c in mains)
    waiting = [c for c in mains if c.state == "waiting"]
    terminated = [c for c in mains if c.state == "terminated"]
    if running:
        return "Running"
    if waiting and all(not c.ever_ran() for c in waiting):
        return "Pending"
    if waiting:  # in restart backoff after having run
        return "Running"
    if restart_policy == "Always":
        return "Running"
    if all(c.exit_code == 0 for c in terminated):
        return "Succeeded"
    return "Running" if restart_policy == "OnFailure" else "Failed"
