"""The TrainJob state machine: observed job + child pods -> actions. Pure, no I/O.

The controller calls `reconcile` on every pass with what it sees now; the result says which
children to create or delete, which pods to annotate, and the status to write. Nothing depends on
what happened in earlier passes except what is recorded in the TrainJob's own status, so a
restarted operator continues exactly where the last one stopped.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from cogwork_sdk import contract as pod_contract

from cogwork.api import contract
from cogwork.api.common import is_condition_true, parse_rfc3339, rfc3339
from cogwork.api.trainjob import TrainJob
from cogwork.api.trainjob_spec import FailureAction
from cogwork.api.trainjob_status import CheckpointRequest, FailureRecord, TrainJobStatus
from cogwork.plan import trainjob_render as render
from cogwork.plan.lifecycle import TERMINAL, Actions, Hold, Lifecycle
from cogwork.plan.settings import RenderSettings
from cogwork.plan.torchx_app import DataLocation
from cogwork.plan.trainjob_observe import PodObservation, classify_failure, diverged

# How long scale-down waits for the ranks to acknowledge a checkpoint before removing pods.
CHECKPOINT_ACK_TIMEOUT = timedelta(seconds=60)


class _Pass(Lifecycle[TrainJob]):
    """One reconcile pass of a TrainJob: the shared lifecycle plus pods, restarts and scale."""

    ENDS_WITH_JOB = ("Running", "Restarting")
    SUSPEND_MESSAGE = "job suspended: pods deleted, checkpoints kept"

    def __init__(self, job: TrainJob, pods: list[PodObservation], now: datetime,
                 settings: RenderSettings, resolved_data: DataLocation | None = None,
                 source_gone: str | None = None, hold: Hold | None = None) -> None:
        super().__init__(job, now, TrainJobStatus, hold)
        self.spec, self.settings = job.spec, settings
        self.resolved_data = resolved_data  # spec.data.fromLabelJob, resolved by the controller
        self.source_gone = source_gone  # ... and what the LabelJob's deletion means, if it was
        self.status = job.status
        self.workers = {p.index: p for p in pods if p.role == "worker" and p.index is not None}
        self.rdzv = next((p for p in pods if p.role == "rdzv"), None)
        self.restarts = job.status.restarts or 0
        self.active_nodes = set(job.status.active_nodes or [])
        self.last_failure: FailureRecord | None = None
        self.last_restart = job.status.last_restart_time

    def desired(self) -> int:
        return render.desired_node_count(self.spec)

    def pods(self) -> list[PodObservation]:
        return [*self.workers.values(), *([self.rdzv] if self.rdzv else [])]

    def delete(self, pod: PodObservation) -> None:
        if not pod.deleting:
            self.delete_child("Pod", pod.name)

    def annotate(self, pod: str, annotations: dict[str, str]) -> None:
        self.patch_child("Pod", pod, {"metadata": {"annotations": annotations}})

    def restart(self, pod: str, reason: str, exit_code: int | None, action: str,
                count: bool = True) -> None:
        if count:
            self.restarts += 1
        self.last_restart = rfc3339(self.now)
        self.last_failure = FailureRecord(pod=pod, exit_code=exit_code, reason=reason,
                                          action=action, time=rfc3339(self.now))
        self.cond("Restarting", "True", reason, f"{pod}: {reason}; action {action}")
        self.event("Restarting", f"{pod} {reason} (exit code {exit_code}); {action}",
                   warning=True)

    # -- lifecycle hooks ----------------------------------------------------------------
    def stop_children(self) -> None:
        # A finished job keeps completed worker pods (their logs) but nothing keeps running.
        for pod in self.pods():
            if pod.phase not in TERMINAL:
                self.delete(pod)

    def suspend_children(self) -> None:
        for pod in self.pods():
            self.delete(pod)
        self.active_nodes.clear()

    def deadline_exceeded(self) -> bool:
        if super().deadline_exceeded():
            return True
        start = self.started_at()
        pre = self.spec.pre_running_deadline_seconds
        created = start or parse_rfc3339(self.job.metadata.creation_timestamp)
        ever_ran = any(c.type == "Running" for c in self.conditions) or self.status.progress
        if pre is not None and created and not ever_ran and \
                self.now - created > timedelta(seconds=pre):
            self.finish("Failed", "PreRunningDeadlineExceeded",
                        f"spec.preRunningDeadlineSeconds ({pre}s) passed before training ran")
            return True
        return False

    def active(self) -> None:
        if self.check_success():
            return
        if self.check_rendezvous():
            return
        if self.check_failures():
            return
        self.scale()
        self.forward_stop()
        self.update_running()
        self.report_scheduling(self.pods())
        self.report_input(self.source_gone)

    # -- the kind's own work --------------------------------------------------------------
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
            if self.active_nodes:  # the store vanished under a running group
                self.restart_all("RendezvousLost", None)
            return False
        if rdzv.deleting or rdzv.phase in TERMINAL:
            self.delete(rdzv)
            if self.active_nodes:
                self.restart_all("RendezvousLost", rdzv.exit_code)
            return True
        return False

    def restart_all(self, reason: str, exit_code: int | None) -> None:
        for pod in self.workers.values():
            self.delete(pod)
        self.active_nodes.clear()
        self.restart(self.rdzv.name if self.rdzv else "rendezvous", reason, exit_code,
                     "RestartJob")

    def fail_on(self, pod: PodObservation, action: str, reason: str, message: str,
                pod_reason: str | None = None) -> None:
        self.last_failure = FailureRecord(pod=pod.name, exit_code=pod.exit_code,
                                          reason=pod_reason or pod.reason or "Error",
                                          action=action, time=rfc3339(self.now))
        self.finish("Failed", reason, message)

    def check_failures(self) -> bool:
        limit = self.spec.failure_policy.backoff_limit
        for index, pod in sorted(self.workers.items()):
            if pod.phase != "Failed" and not (pod.deleting and index in self.active_nodes):
                continue
            if pod.phase == "Failed" and pod.deleting:
                continue  # its failure was handled when it was deleted: never count it twice
            if pod.phase != "Failed":  # deleted under us (kubectl delete, eviction, node loss)
                self.delete(pod)
                self.active_nodes.discard(index)
                self.restart(pod.name, "PodDeleted", None, "RestartNode")
                continue
            # Workers that die because the store was replaced after they started are not at fault.
            if self.rdzv and pod.created and self.rdzv.created and self.rdzv.created > pod.created:
                self.delete(pod)
                self.active_nodes.discard(index)
                continue
            action = classify_failure(self.spec.failure_policy, pod)
            if action == FailureAction.FAIL_JOB and diverged(pod):
                # Not retried: restarted from its checkpoint, the run would diverge again.
                reason = pod_contract.REASON_NON_FINITE_LOSS
                self.fail_on(pod, "FailJob", reason,
                             f"{pod.name}: {pod.message or 'non-finite loss'} (exit code "
                             f"{pod.exit_code}; the run diverged, spec failOnNonFiniteLoss)",
                             pod_reason=reason)
                return True
            if action == FailureAction.FAIL_JOB:
                said = f": {pod.message}" if pod.message else ""  # e.g. command not found: X
                self.fail_on(pod, "FailJob",
                             f"ExitCode{pod.exit_code}" if pod.exit_code is not None
                             else "PodFailed",
                             f"{pod.name} exited with code {pod.exit_code} "
                             f"({pod.reason or 'Error'}){said}; not retryable under "
                             f"spec.failurePolicy; `kubectl logs {pod.name}` shows its output")
                return True
            if action == FailureAction.IGNORE:
                self.delete(pod)
                self.active_nodes.discard(index)
                self.restart(pod.name, pod.reason or "Error", pod.exit_code, "Ignore", count=False)
                continue
            if self.restarts + 1 > limit:
                self.fail_on(pod, action.value, "BackoffLimitExceeded",
                             f"{self.restarts} restart(s) used of "
                             f"spec.failurePolicy.backoffLimit {limit}; last: {pod.name} exit "
                             f"code {pod.exit_code}")
                return True
            if action == FailureAction.RESTART_JOB:
                self.restart_all(pod.reason or "Error", pod.exit_code)
                return False
            self.delete(pod)
            self.active_nodes.discard(index)
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
            if index in self.workers or render.worker_name(self.job, index) \
                    in self.out.delete_pods:
                continue
            if not self.out.create:
                self.ensure_dependencies()
            self.out.create.append(render.worker_pod(self.job, index, self.settings,
                                                      resolved_data=self.resolved_data))
            if index in self.active_nodes:  # it existed last pass and vanished without a trace
                self.restart(render.worker_name(self.job, index), "PodLost", None, "RestartNode")
            self.active_nodes.add(index)
        self.active_nodes.update(index for index in live if index < want)

    def scale_down(self, want: int, surplus: list[PodObservation]) -> None:
        """Ask the group to checkpoint, then remove the surplus pods (torchrun re-forms).

        The request is recorded in status before any pod sees it: the ranks' acknowledgement
        is matched against status.checkpointRequest, so an annotation that raced ahead of a
        status write that then lost a conflict would be acknowledged into the void."""
        request = self.status.checkpoint_request
        token = f"scale-to-{want}-g{self.generation}"
        if request is None or request.token != token:
            self.out.status.set(checkpoint_request=CheckpointRequest(
                token=token, acknowledged=False, time=rfc3339(self.now)))
            self.event("CheckpointRequested", f"scaling down to {want} node(s): checkpoint first")
            self.out.requeue_after = 1.0
            return
        if not request.acknowledged:
            for pod in self.workers.values():
                if not pod.deleting and \
                        pod.annotations.get(pod_contract.ANNOTATION_CHECKPOINT_REQUEST) != token:
                    self.annotate(pod.name, {pod_contract.ANNOTATION_CHECKPOINT_REQUEST: token})
        asked = parse_rfc3339(request.time) or self.now
        if request.acknowledged or self.now - asked > CHECKPOINT_ACK_TIMEOUT:
            for pod in surplus:
                self.delete(pod)
                self.active_nodes.discard(pod.index or 0)
            how = "after checkpoint" if request.acknowledged else "checkpoint not acknowledged"
            self.event("ScaledDown", f"removed {', '.join(p.name for p in surplus)} ({how})")
        else:
            self.out.requeue_after = 1.0

    def forward_stop(self) -> None:
        """spec.stop reaches the ranks as a pod annotation (downward API): checkpoint and exit."""
        if not self.spec.stop:
            return
        for pod in self.workers.values():
            if not pod.deleting and pod.annotations.get(pod_contract.ANNOTATION_STOP) != "true":
                self.annotate(pod.name, {pod_contract.ANNOTATION_STOP: "true"})

    def ensure_dependencies(self) -> None:
        """Services and the checkpoint claim: created before pods; 409 if they exist."""
        self.out.create.extend(render.shared_objects(self.job, self.settings))
        self.mark_created("ChildrenCreated", "services and pods created",
                          "created rendezvous store, services and worker pods")

    def update_running(self) -> None:
        running = [p for p in self.workers.values() if p.phase == "Running" and not p.deleting]
        minimum = self.spec.nodes.min
        if len(running) >= minimum and self.rdzv and self.rdzv.phase == "Running":
            if not is_condition_true(self.conditions, "Running"):
                self.event("Running", f"{len(running)} node(s) running")
            self.cond("Running", "True", "NodesRunning",
                      f"{len(running)} of {self.desired()} node(s) running")
        restarting = is_condition_true(self.conditions, "Restarting")
        progress = self.status.progress
        resumed_at = parse_rfc3339(progress.resumed_at if progress else None)
        since = parse_rfc3339(self.last_restart)
        if restarting and progress and resumed_at and since and resumed_at >= since:
            self.cond("Restarting", "False", "Resumed",
                      f"resumed from step {progress.resumed_from_step}")
        self.out.requeue_after = min(self.out.requeue_after, 5.0)

    def own_status(self) -> None:
        workers = [p for p in self.workers.values() if not p.deleting]
        ready = [p for p in workers if p.phase == "Running"]
        # Workers this pass creates exist once it writes status (creates come first), so the
        # next pass, seeing them, finds nothing to change: one status write per new job.
        created = sum(1 for c in self.out.create if c.get("kind") == "Pod"
                      and c["metadata"].get("labels", {}).get(contract.LABEL_ROLE)
                      == contract.ROLE_WORKER)
        want = 0 if self.spec.suspend else self.desired()
        # Workers counted active and existing before they are made: not so if one is refused.
        self.out.unconfirmed = ("activeNodes", "replicas")
        self.out.status.set(
            replicas=len(workers) + created,
            ready_replicas=len(ready),
            selector=render.worker_selector(self.job),
            nodes_text=f"{len(ready)}/{want}",
            restarts=self.restarts,
            active_nodes=sorted(self.active_nodes),
        )
        if self.last_restart:
            self.out.status.set(last_restart_time=self.last_restart)
        if self.last_failure:
            self.out.status.set(last_failure=self.last_failure)


def reconcile(job: TrainJob, pods: list[PodObservation], now: datetime,
              settings: RenderSettings, resolved_data: DataLocation | None = None,
              source_gone: str | None = None, hold: Hold | None = None) -> Actions:
    """Decide everything one pass does for `job` given its observed child pods
    (`resolved_data`: where spec.data.fromLabelJob points, when it is set; `source_gone`: why
    that LabelJob is no longer there, once it was deleted under the running job; `hold`: what
    keeps it suspended besides spec.suspend, i.e. Kueue)."""
    return _Pass(job, pods, now, settings, resolved_data, source_gone, hold).run()
