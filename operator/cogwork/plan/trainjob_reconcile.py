"""The TrainJob state machine: observed job + child pods -> actions. Pure, no I/O.

The controller calls `reconcile` on every pass with what it sees now; the result says which
children to create or delete, which pods to annotate, and the status to write. Nothing depends on
what happened in earlier passes except what is recorded in the TrainJob's own status, so a
restarted operator continues exactly where the last one stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cogwork.api import contract
from cogwork.api.common import (
    Condition,
    find_condition,
    is_condition_true,
    rfc3339,
    set_condition,
)
from cogwork.api.trainjob import TrainJob
from cogwork.plan import trainjob as render
from cogwork.plan.kstatus import with_kstatus
from cogwork.plan.torchx_app import DataLocation
from cogwork.plan.trainjob import FailureAction, PodObservation, RenderSettings, classify_failure

TERMINAL = ("Succeeded", "Failed")
CHECKPOINT_REQUEST = "cogwork.dev/checkpoint-request"
STOP_ANNOTATION = "cogwork.dev/stop"
# How long scale-down waits for the ranks to acknowledge a checkpoint before removing pods.
CHECKPOINT_ACK_TIMEOUT = timedelta(seconds=60)


@dataclass
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class Actions:
    create: list[dict[str, Any]] = field(default_factory=list)
    delete_pods: list[str] = field(default_factory=list)
    annotate_pods: dict[str, dict[str, str | None]] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    delete_job: bool = False
    requeue_after: float = 5.0


def _parse_time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


class _Pass:
    """One reconcile pass; collects actions and status changes."""

    def __init__(self, job: TrainJob, pods: list[PodObservation], now: datetime,
                 settings: RenderSettings, resolved_data: DataLocation | None = None) -> None:
        self.job, self.spec, self.now, self.settings = job, job.spec, now, settings
        self.resolved_data = resolved_data  # spec.data.fromLabelJob, resolved by the controller
        self.status = job.status
        self.conditions: list[Condition] = list(job.status.conditions)
        self.generation = job.metadata.generation
        self.workers = {p.index: p for p in pods if p.role == "worker" and p.index is not None}
        self.rdzv = next((p for p in pods if p.role == "rdzv"), None)
        self.out = Actions()
        self.restarts = job.status.restarts or 0
        self.active = set(job.status.active_nodes or [])
        self.last_failure: dict[str, Any] | None = None
        self.last_restart = job.status.last_restart_time

    # -- helpers ------------------------------------------------------------------------
    def cond(self, kind: str, status: str, reason: str, message: str = "") -> None:
        self.conditions = set_condition(
            self.conditions, kind, status, reason, message,  # type: ignore[arg-type]
            observed_generation=self.generation, now=self.now,
        )

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        self.out.events.append(Event("Warning" if warning else "Normal", reason, message))

    def desired(self) -> int:
        return render.desired_node_count(self.spec)

    def delete(self, pod: PodObservation) -> None:
        if not pod.deleting and pod.name not in self.out.delete_pods:
            self.out.delete_pods.append(pod.name)

    def finish(self, kind: str, reason: str, message: str) -> None:
        self.cond(kind, "True", reason, message)
        self.cond("Running", "False", reason, message)
        self.cond("Restarting", "False", reason, message)
        self.out.status["completionTime"] = rfc3339(self.now)
        # A finished job keeps completed worker pods (their logs) but nothing keeps running.
        for pod in [*self.workers.values(), *([self.rdzv] if self.rdzv else [])]:
            if pod.phase not in TERMINAL:
                self.delete(pod)
        self.event(reason, message, warning=kind == "Failed")

    def restart(self, pod: str, reason: str, exit_code: int | None, action: str,
                count: bool = True) -> None:
        if count:
            self.restarts += 1
        self.last_restart = rfc3339(self.now)
        self.last_failure = {"pod": pod, "exitCode": exit_code, "reason": reason,
                             "action": action, "time": rfc3339(self.now)}
        self.cond("Restarting", "True", reason, f"{pod}: {reason}; action {action}")
        self.event("Restarting", f"{pod} {reason} (exit code {exit_code}); {action}",
                   warning=True)

    # -- the pass -----------------------------------------------------------------------
    def run(self) -> Actions:
        if self.is_terminal():
            self.after_finish()
        elif self.spec.suspend:
            self.suspend()
        elif not self.deadlines_exceeded():
            self.run_active()
        self.write_status()
        return self.out

    def is_terminal(self) -> bool:
        return any(is_condition_true(self.conditions, t) for t in TERMINAL)

    def after_finish(self) -> None:
        # Sticky: a finished job never recreates pods; it only cleans up and honours the TTL.
        for pod in [*self.workers.values(), *([self.rdzv] if self.rdzv else [])]:
            if pod.phase not in TERMINAL:
                self.delete(pod)
        ttl = self.spec.ttl_seconds_after_finished
        done = _parse_time(self.status.completion_time)
        if ttl is not None and done is not None:
            expires = done + timedelta(seconds=ttl)
            if self.now >= expires:
                self.out.delete_job = True
            else:
                self.out.requeue_after = min(60.0, (expires - self.now).total_seconds())
        else:
            self.out.requeue_after = 300.0

    def suspend(self) -> None:
        for pod in [*self.workers.values(), *([self.rdzv] if self.rdzv else [])]:
            self.delete(pod)
        if not is_condition_true(self.conditions, "Suspended"):
            self.event("Suspended", "job suspended: pods deleted, checkpoints kept")
        self.cond("Suspended", "True", "Suspended", "spec.suspend is true")
        self.cond("Running", "False", "Suspended", "spec.suspend is true")
        self.active.clear()
        # Like batch/v1 Job: the active deadline counts from the (re)start.
        self.out.status["startTime"] = None
        self.out.requeue_after = 30.0

    def deadlines_exceeded(self) -> bool:
        start = _parse_time(self.status.start_time)
        active = self.spec.active_deadline_seconds
        if active is not None and start and self.now - start > timedelta(seconds=active):
            self.finish("Failed", "DeadlineExceeded",
                        f"spec.activeDeadlineSeconds ({active}s) exceeded")
            return True
        pre = self.spec.pre_running_deadline_seconds
        created = start or _parse_time(self.job.metadata.creation_timestamp)
        ever_ran = any(c.type == "Running" for c in self.conditions) or self.status.progress
        if pre is not None and created and not ever_ran and \
                self.now - created > timedelta(seconds=pre):
            self.finish("Failed", "PreRunningDeadlineExceeded",
                        f"spec.preRunningDeadlineSeconds ({pre}s) passed before training ran")
            return True
        return False

    def run_active(self) -> None:
        if is_condition_true(self.conditions, "Suspended"):
            self.event("Resumed", "job resumed")
            reason = "Resumed"
        else:  # keep the reason it has: a flip on the second pass would cost a status write
            current = find_condition(self.conditions, "Suspended")
            reason = current.reason if current is not None else "NotSuspended"
        self.cond("Suspended", "False", reason)
        if not self.status.start_time:
            self.out.status["startTime"] = rfc3339(self.now)
        if self.check_success():
            return
        if self.check_rendezvous():
            return
        if self.check_failures():
            return
        self.scale()
        self.forward_stop()
        self.update_running()

    def check_success(self) -> bool:
        done = [p for p in self.workers.values() if p.phase == "Succeeded"]
        if not done:
            return False
        reason = "Stopped" if self.spec.stop else "Completed"
        message = ("training stopped on request after a checkpoint" if self.spec.stop
                   else f"training completed on {len(done)} node(s)")
        self.finish("Succeeded", reason, message)
        return True

    def check_rendezvous(self) -> bool:
        """The store pod is not a worker, but losing it restarts the whole group."""
        rdzv = self.rdzv
        if rdzv is None:
            if not self.out.create:
                self.ensure_dependencies()
            self.out.create.append(render.rendezvous_pod(self.job, self.settings,
                                                         resolved_data=self.resolved_data))
            if self.active:  # the store vanished under a running group
                self.restart_all("RendezvousLost", None)
            return False
        if rdzv.deleting or rdzv.phase in TERMINAL:
            self.delete(rdzv)
            if self.active:
                self.restart_all("RendezvousLost", rdzv.exit_code)
            return True
        return False

    def restart_all(self, reason: str, exit_code: int | None) -> None:
        for pod in self.workers.values():
            self.delete(pod)
        self.active.clear()
        self.restart(self.rdzv.name if self.rdzv else "rendezvous", reason, exit_code,
                     "RestartJob")

    def check_failures(self) -> bool:
        limit = self.spec.failure_policy.backoff_limit
        for index, pod in sorted(self.workers.items()):
            if pod.phase != "Failed" and not (pod.deleting and index in self.active):
                continue
            if pod.phase == "Failed" and pod.deleting:
                continue  # its failure was handled when it was deleted: never count it twice
            if pod.phase != "Failed":  # deleted under us (kubectl delete, eviction, node loss)
                self.delete(pod)
                self.active.discard(index)
                self.restart(pod.name, "PodDeleted", None, "RestartNode")
                continue
            # Workers that die because the store was replaced after they started are not at fault.
            if self.rdzv and pod.created and self.rdzv.created and self.rdzv.created > pod.created:
                self.delete(pod)
                self.active.discard(index)
                continue
            action = classify_failure(self.spec.failure_policy, pod)
            if action == FailureAction.FAIL_JOB:
                self.last_failure = {"pod": pod.name, "exitCode": pod.exit_code,
                                     "reason": pod.reason or "Error", "action": "FailJob",
                                     "time": rfc3339(self.now)}
                self.finish("Failed", f"ExitCode{pod.exit_code}" if pod.exit_code is not None
                            else "PodFailed",
                            f"{pod.name} exited with code {pod.exit_code} "
                            f"({pod.reason or 'Error'}): not retryable under spec.failurePolicy")
                return True
            if action == FailureAction.IGNORE:
                self.delete(pod)
                self.active.discard(index)
                self.restart(pod.name, pod.reason or "Error", pod.exit_code, "Ignore", count=False)
                continue
            if self.restarts + 1 > limit:
                self.last_failure = {"pod": pod.name, "exitCode": pod.exit_code,
                                     "reason": pod.reason or "Error", "action": action.value,
                                     "time": rfc3339(self.now)}
                self.finish("Failed", "BackoffLimitExceeded",
                            f"{self.restarts} restart(s) used of spec.failurePolicy.backoffLimit "
                            f"{limit}; last: {pod.name} exit code {pod.exit_code}")
                return True
            if action == FailureAction.RESTART_JOB:
                self.restart_all(pod.reason or "Error", pod.exit_code)
                return False
            self.delete(pod)
            self.active.discard(index)
            self.restart(pod.name, pod.reason or "Error", pod.exit_code, "RestartNode")
        if self.restarts > limit:
            self.finish("Failed", "BackoffLimitExceeded",
                        f"{self.restarts} restart(s) exceed "
                        f"spec.failurePolicy.backoffLimit {limit}")
            return True
        return False

    def scale(self) -> None:
        want = self.desired()
        live = {i: p for i, p in self.workers.items() if not p.deleting and p.phase != "Failed"}
        surplus = [p for i, p in live.items() if i >= want]
        if surplus:
            self.scale_down(want, surplus)
        for index in range(want):
            if index in self.workers or any(d == render.worker_name(self.job, index)
                                            for d in self.out.delete_pods):
                continue
            if not self.out.create:
                self.ensure_dependencies()
            self.out.create.append(render.worker_pod(self.job, index, self.settings,
                                                      resolved_data=self.resolved_data))
            if index in self.active:  # it existed last pass and vanished without a trace
                self.restart(render.worker_name(self.job, index), "PodLost", None, "RestartNode")
            self.active.add(index)
        self.active.update(index for index in live if index < want)

    def scale_down(self, want: int, surplus: list[PodObservation]) -> None:
        """Ask the group to checkpoint, then remove the surplus pods (torchrun re-forms)."""
        request = self.status.checkpoint_request
        token = f"scale-to-{want}-g{self.generation}"
        if request is None or request.token != token:
            self.out.status["checkpointRequest"] = {"token": token, "acknowledged": False,
                                                    "time": rfc3339(self.now)}
            for pod in self.workers.values():
                if not pod.deleting:
                    self.out.annotate_pods[pod.name] = {CHECKPOINT_REQUEST: token}
            self.event("CheckpointRequested", f"scaling down to {want} node(s): checkpoint first")
            self.out.requeue_after = 1.0
            return
        asked = _parse_time(request.time) or self.now
        if request.acknowledged or self.now - asked > CHECKPOINT_ACK_TIMEOUT:
            for pod in surplus:
                self.delete(pod)
                self.active.discard(pod.index or 0)
            how = "after checkpoint" if request.acknowledged else "checkpoint not acknowledged"
            self.event("ScaledDown", f"removed {', '.join(p.name for p in surplus)} ({how})")
        else:
            self.out.requeue_after = 1.0

    def forward_stop(self) -> None:
        """spec.stop reaches the ranks as a pod annotation (downward API): checkpoint and exit."""
        if not self.spec.stop:
            return
        for pod in self.workers.values():
            if not pod.deleting and pod.annotations.get(STOP_ANNOTATION) != "true":
                self.out.annotate_pods.setdefault(pod.name, {})[STOP_ANNOTATION] = "true"

    def ensure_dependencies(self) -> None:
        """Services and the checkpoint claim: created before pods; 409 if they exist."""
        self.out.create.extend(render.shared_objects(self.job, self.settings))
        if not is_condition_true(self.conditions, "Created"):
            self.cond("Created", "True", "ChildrenCreated", "services and pods created")
            self.event("Created", "created rendezvous store, services and worker pods")

    def update_running(self) -> None:
        running = [p for p in self.workers.values() if p.phase == "Running" and not p.deleting]
        minimum = self.spec.nodes.min
        if len(running) >= minimum and self.rdzv and self.rdzv.phase == "Running":
            if not is_condition_true(self.conditions, "Running"):
                self.event("Running", f"{len(running)} node(s) running")
            self.cond("Running", "True", "NodesRunning",
                      f"{len(running)} of {self.desired()} node(s) running")
        restarting = is_condition_true(self.conditions, "Restarting")
        resumed_at = _parse_time(self.status.progress.resumed_at if self.status.progress else None)
        since = _parse_time(self.last_restart)
        if restarting and resumed_at and since and resumed_at >= since:
            self.cond("Restarting", "False", "Resumed",
                      f"resumed from step {self.status.progress.resumed_from_step}"  # type: ignore[union-attr]
                      )
        self.out.requeue_after = min(self.out.requeue_after, 5.0)

    def write_status(self) -> None:
        workers = [p for p in self.workers.values() if not p.deleting]
        ready = [p for p in workers if p.phase == "Running"]
        # Workers this pass creates exist once it writes status (creates come first), so the
        # next pass, seeing them, finds nothing to change: one status write per new job.
        created = sum(1 for c in self.out.create if c.get("kind") == "Pod"
                      and c["metadata"].get("labels", {}).get(contract.LABEL_ROLE)
                      == contract.ROLE_WORKER)
        want = 0 if self.spec.suspend else self.desired()
        status = self.out.status
        status.update({
            "observedGeneration": self.generation,
            "replicas": len(workers) + created,
            "readyReplicas": len(ready),
            "selector": render.worker_selector(self.job),
            "nodesText": f"{len(ready)}/{want}",
            "restarts": self.restarts,
            "activeNodes": sorted(self.active),
        })
        if self.last_restart:
            status["lastRestartTime"] = self.last_restart
        if self.last_failure:
            status["lastFailure"] = self.last_failure
        status["phase"] = render.derive_phase(self.conditions)
        conditions = with_kstatus(self.conditions, status["phase"], self.generation, self.now)
        status["conditions"] = [c.model_dump(mode="json", by_alias=True, exclude_none=True)
                                for c in conditions]


def reconcile(job: TrainJob, pods: list[PodObservation], now: datetime,
              settings: RenderSettings, resolved_data: DataLocation | None = None) -> Actions:
    """Decide everything one pass does for `job` given its observed child pods
    (`resolved_data`: where spec.data.fromLabelJob points, when it is set)."""
    return _Pass(job, pods, now, settings, resolved_data).run()
