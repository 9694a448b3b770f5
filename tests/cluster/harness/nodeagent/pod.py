"""One pod's life on this node: sandbox (netns + hosts), volumes, init containers, containers,
restarts, status, graceful deletion. One thread per pod; everything else talks to it through
`update()` / `vanish()` and a wake-up event.
"""

from __future__ import annotations

import logging
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import runtime, termination
from .envs import ConfigError, Sources, container_env, expand
from .hosts import HostsManager, Target, pod_hostname
from .images import ImageEnv, ImageMap, host_paths
from .kube import ApiException, Kube, now_rfc3339, status_code
from .logs import LogError, LogRun
from .network import Network, PodNet
from .status import Conditions, CState, pod_phase
from .volumes import NotReady, VolumeManager

log = logging.getLogger("nodeagent.pod")

Obj = dict[str, Any]
TERMINAL = ("Succeeded", "Failed")
MAX_GRACE = 30


@dataclass
class Context:
    """What a pod worker needs from the agent."""

    kube: Kube
    network: Network
    hosts: HostsManager
    workdir: Path
    images: ImageMap
    host_ip: str
    stop: threading.Event
    finished: Callable[[str], None]


class PodWorker:
    def __init__(self, ctx: Context, pod: Obj) -> None:
        self.ctx, self.pod = ctx, pod
        meta, spec = pod["metadata"], pod["spec"]
        self.uid: str = meta["uid"]
        self.ns: str = meta["namespace"]
        self.name: str = meta["name"]
        self.key = f"{self.ns}/{self.name}"
        self.policy: str = spec.get("restartPolicy") or "Always"
        self.inits = [CState(c["name"], c.get("image", ""), init=True)
                      for c in spec.get("initContainers") or []]
        self.mains = [CState(c["name"], c.get("image", "")) for c in spec["containers"]]
        self.pod_dir = ctx.workdir / "pods" / self.uid
        self.log_dir = ctx.workdir / "logs" / f"{self.ns}_{self.name}_{self.uid}"
        # Per container, the offset in its log file where each run's output begins.
        self.log_runs: dict[str, list[int]] = {}
        self.conditions = Conditions()
        if not any(c.get("type") == "PodScheduled"
                   for c in (pod.get("status") or {}).get("conditions") or []):
            self.conditions.set("PodScheduled", True)  # bound by name, not by the scheduler
        self.wake = threading.Event()
        self.lock = threading.Lock()
        self.net: PodNet | None = None
        self.pod_ip = ""
        self.volumes = VolumeManager(ctx.kube, pod, self.pod_dir, ctx.host_ip, "")
        self.setup_done = False
        self.init_index = 0
        self.init_failed = False
        self.terminal = False
        self.phase = "Pending"
        self.reason: str | None = None
        self.message: str | None = None
        self.start_time = now_rfc3339()
        self.delete_grace: int | None = None
        self.gone = False
        self.meta_changed = False
        self.last_sent: Obj | None = None
        self.next_flush = 0.0
        self.next_refetch = time.monotonic() + 60
        self.thread = threading.Thread(target=self.run, daemon=True, name=f"pod-{self.key}")
        status = pod.get("status") or {}
        if status.get("phase") in TERMINAL:  # finished under an earlier agent: just wait
            self.terminal, self.phase = True, status["phase"]
            self.last_sent = {}
        elif status.get("startTime") and self.policy == "Never":
            # Its processes died with an earlier agent; re-running a Never pod would be wrong.
            self._fail("NodeAgentRestarted", "the node agent restarted and lost the containers")

    # -- called from other threads ------------------------------------------------------
    def update(self, pod: Obj) -> None:
        with self.lock:
            old = self.pod["metadata"]
            meta = pod["metadata"]
            if (old.get("labels"), old.get("annotations")) != (meta.get("labels"),
                                                               meta.get("annotations")):
                self.meta_changed = True
            self.pod = pod
            if meta.get("deletionTimestamp"):
                grace = int(meta.get("deletionGracePeriodSeconds") or 0)
                if self.delete_grace is None or grace < self.delete_grace:
                    self.delete_grace = grace
        self.wake.set()

    def vanish(self) -> None:
        """The object is gone (force delete): kill now, no API calls for it any more."""
        self.gone, self.delete_grace = True, 0
        self.wake.set()

    def log_run(self, container: str, previous: bool) -> LogRun:
        """What `kubectl logs` shows of a container (called from the log server's threads):
        its current (or last) run, or with `previous` the one before; errors as a kubelet's."""
        c = next((c for c in self.inits + self.mains if c.name == container), None)
        if c is None:
            raise LogError(404, f'container "{container}" not found in pod "{self.name}" '
                                f'(namespace "{self.ns}")')
        path = self.log_dir / f"{container}.log"
        runs = list(self.log_runs.get(container, ()))
        if not runs and self.terminal and path.exists():  # ran under an earlier agent
            return LogRun(path, 0, None, lambda: False)
        if previous:
            if len(runs) < 2:
                raise LogError(400, f'previous terminated container "{container}" in pod '
                                    f'"{self.name}" not found')
            return LogRun(path, runs[-2], runs[-1], lambda: False)
        if not runs:
            raise LogError(400, f'container "{container}" in pod "{self.name}" is waiting to '
                                f'start: {c.reason or "ContainerCreating"}')
        count = len(runs)

        def live() -> bool:
            return (c.state == "running" and len(self.log_runs[container]) == count
                    and not self.ctx.stop.is_set())

        return LogRun(path, runs[-1], None, live)

    # -- main loop ----------------------------------------------------------------------
    def run(self) -> None:
        try:
            while True:
                try:
                    self._loop()
                    return
                except Exception as err:  # a bad pod is reported Failed, never crashes the agent
                    log.exception("pod %s: worker failed", self.key)
                    try:
                        self._fail("NodeAgentError", f"{type(err).__name__}: {err}")
                    except Exception:
                        log.exception("pod %s: cleanup failed", self.key)
                    self.ctx.stop.wait(1.0)  # then keep serving it (status, deletion)
        finally:
            self._stop_runtime()
            self.ctx.finished(self.uid)

    def _loop(self) -> None:
        log.info("pod %s (%s) admitted", self.key, self.uid)
        while not self.ctx.stop.is_set():
            if self.delete_grace is not None:
                self._terminate()
                self._finish_deletion()
                return
            if not self.terminal:
                try:
                    self._step()
                except (ConfigError, NotReady) as err:
                    for c in self.inits + self.mains:
                        if c.state == "waiting" and not c.ever_ran():
                            c.set_waiting("ContainerCreating", str(err))
                    self.wake.wait(1.0)
                except Exception as err:
                    log.exception("pod %s failed", self.key)
                    self._fail("NodeAgentError", f"{type(err).__name__}: {err}")
            self._flush()
            self.wake.wait(0.1 if not self.terminal else 5)
            self.wake.clear()

    def _step(self) -> None:
        if not self.setup_done:
            self._setup()
        with self.lock:
            pod, meta_changed, self.meta_changed = self.pod, self.meta_changed, False
        refetch = time.monotonic() >= self.next_refetch
        if meta_changed or refetch or self.volumes.tokens_due():
            self.next_refetch = time.monotonic() + 60 if refetch else self.next_refetch
            self.volumes.refresh(pod, refetch)
        for c in self.inits + self.mains:
            self._reap(c)
        now = time.monotonic()
        while self.init_index < len(self.inits):
            c = self.inits[self.init_index]
            if c.state == "terminated" and c.exit_code == 0:
                self.init_index += 1
                continue
            if c.state == "terminated":
                if self.policy == "Never":
                    self.init_failed = True
                    break
                self._backoff(c)
            if c.state == "waiting" and now >= c.next_start:
                self._start(c, self._spec(c.name, init=True))
            for m in self.mains:
                m.set_waiting("PodInitializing")
            break
        else:
            for c in self.mains:
                if c.state == "terminated" and (
                        self.policy == "Always" or (self.policy == "OnFailure" and c.exit_code)):
                    self._backoff(c)
                if c.state == "waiting" and now >= c.next_start:
                    self._start(c, self._spec(c.name, init=False))
        self.phase = pod_phase(self.policy, self.inits, self.mains, self.init_failed)
        if self.phase in TERMINAL:
            self.terminal = True
            log.info("pod %s %s", self.key, self.phase)
            self._stop_runtime()
        self._set_conditions()

    def _setup(self) -> None:
        if self.net is None:
            net = self.ctx.network.allocate(self.uid)
            self.net, self.pod_ip = net, net.ip
            self.volumes.pod_ip = net.ip
            spec = self.pod["spec"]
            target = Target(self.uid, self.ns, net.netns, net.ip, pod_hostname(self.pod),
                            str(spec.get("subdomain") or ""))
            self.ctx.hosts.register(target)
            self.ctx.network.setup(net, self.ctx.hosts.content(target))
            self.ctx.hosts.mark(self.ns)  # catch peers that changed while the file was written
            self.conditions.set("PodReadyToStartContainers", True)
        self.volumes.setup()
        self.setup_done = True

    def _spec(self, name: str, init: bool) -> Obj:
        containers = self.pod["spec"].get("initContainers" if init else "containers") or []
        return next(c for c in containers if c["name"] == name)

    def _base_env(self) -> dict[str, str]:
        return {"HOSTNAME": pod_hostname(self.pod), "HOME": "/root"}

    def _start(self, c: CState, spec: Obj) -> None:
        assert self.net is not None
        if self.ctx.stop.is_set():
            return
        try:
            env = container_env(self.pod, spec, Sources(self.ctx.kube.get_or_none, self.ns),
                                self.pod_ip, self.ctx.host_ip, self._base_env())
        except ConfigError as err:
            c.set_waiting("CreateContainerConfigError", str(err))
            c.next_start = time.monotonic() + 1
            return
        argv = [expand(a, env) for a in (spec.get("command") or []) + (spec.get("args") or [])]
        # The image is ignored, so an image without a command just idles.
        argv = argv or ["sleep", "infinity"]
        image = self.ctx.images.lookup(spec.get("image") or "")
        env["PATH"] = f"{image.path_prefix}:{env.get('PATH') or runtime.DEFAULT_PATH}"
        cgroup = runtime.pod_cgroup(self.uid) / c.name
        if runtime.populated(cgroup):  # leftovers of the previous run of this container
            runtime.kill_cgroup(cgroup)
            runtime.wait_empty(cgroup, 5)
        launch = runtime.LaunchSpec(
            argv=argv, env=env, netns=self.net.netns, hostname=pod_hostname(self.pod),
            cgroup=cgroup, log=self.log_dir / f"{c.name}.log",
            script=self.pod_dir / "run" / f"{c.name}.sh",
            workdir=image.workdir(spec.get("workingDir")),
            mounts=self._mounts(image, spec, env),
        )
        try:
            offset = launch.log.stat().st_size
        except FileNotFoundError:
            offset = 0
        try:
            proc = runtime.launch(launch)
        except OSError as err:  # reported like a runtime's StartError; restart policy applies
            c.runs += 1
            c.message = str(err)
            c.set_terminated(128, None, "StartError")
            return
        c.set_running(proc, self.uid)
        self.log_runs.setdefault(c.name, []).append(offset)
        log.info("pod %s: container %s started (pid %d)", self.key, c.name, proc.pid)

    def _mounts(self, image: ImageEnv, spec: Obj, env: dict[str, str]) -> list[runtime.Mount]:
        mounts = [*image.mounts(), *self.volumes.mounts(spec, env),
                  termination.prepare(self.pod_dir, spec)]
        return mounts + runtime.keep_visible(mounts, host_paths())

    def _reap(self, c: CState) -> None:
        if c.state != "running" or c.proc is None:
            return
        rc = c.proc.poll()
        if rc is None:
            return
        # Like a runtime whose PID 1 exits: nothing of the container outlives its main process.
        runtime.kill_cgroup(runtime.pod_cgroup(self.uid) / c.name)
        code, sig = runtime.exit_info(rc)
        c.set_terminated(code, sig)
        c.message = termination.read(self.pod_dir, self._spec(c.name, init=c.init),
                                     self.log_dir / f"{c.name}.log", code)
        log.info("pod %s: container %s exited %d", self.key, c.name, code)

    def _backoff(self, c: CState) -> None:
        delay = min(0.5 * 2 ** min(c.restart_count, 5), 10.0)
        c.begin_backoff(time.monotonic() + delay)

    def _set_conditions(self) -> None:
        initialized = self.init_index >= len(self.inits)
        ready = not self.terminal and all(c.state == "running" for c in self.mains)
        not_ready = "PodCompleted" if self.terminal else "ContainersNotReady"
        self.conditions.set("Initialized", initialized, "ContainersNotInitialized")
        self.conditions.set("ContainersReady", ready, not_ready)
        self.conditions.set("Ready", ready, not_ready)
        self.conditions.set("PodReadyToStartContainers", self.net is not None)

    def _fail(self, reason: str, message: str) -> None:
        self._stop_runtime()
        for c in self.inits + self.mains:
            if c.state != "terminated":
                c.message = message
                c.set_terminated(128 if c.ever_ran() else 1, None, reason)
        self.terminal, self.phase, self.reason, self.message = True, "Failed", reason, message
        self._set_conditions()

    # -- termination --------------------------------------------------------------------
    def _terminate(self) -> None:
        """SIGTERM, wait up to min(grace, 30) s (shortened by a later, shorter delete), kill."""
        cg = runtime.pod_cgroup(self.uid)
        live = [c for c in self.inits + self.mains if c.state == "running"]
        started = time.monotonic()
        if live:
            log.info("pod %s: stopping (grace %ss)", self.key, self.delete_grace)
            runtime.signal_cgroup(cg, signal.SIGTERM)
        while live and not self.ctx.stop.is_set():
            for c in live:
                self._reap(c)
            live = [c for c in live if c.state == "running"]
            grace = min(self.delete_grace or 0, MAX_GRACE)
            if not live or time.monotonic() - started >= grace:
                break
            self.wake.wait(0.05)
            self.wake.clear()
        runtime.kill_cgroup(cg)
        for c in live:
            if c.proc is not None:
                code, sig = runtime.exit_info(c.proc.wait())
                c.set_terminated(code, sig)
        self._stop_runtime()

    def _stop_runtime(self) -> None:
        """Kill every process, then drop cgroups, hosts registration, netns and IP."""
        runtime.remove_pod_cgroup(self.uid)
        for c in self.inits + self.mains:
            if c.proc is not None and c.state == "running":
                code, sig = runtime.exit_info(c.proc.wait())
                c.set_terminated(code, sig)
        if self.net is not None:
            self.ctx.hosts.unregister(self.uid)
            self.ctx.network.teardown(self.net)
            self.net = None

    def _finish_deletion(self) -> None:
        """What a kubelet does last: final status, then delete the object with grace 0."""
        if not self.gone:
            if any(c.ever_ran() for c in self.mains) and self.phase not in TERMINAL:
                ok = all(c.state == "terminated" and c.exit_code == 0 for c in self.mains)
                self.phase, self.terminal = ("Succeeded" if ok else "Failed"), True
                self._set_conditions()
            self._retry(self._flush_or_raise, "final status")
            path = f"/api/v1/namespaces/{self.ns}/pods/{self.name}"
            self._retry(lambda: self.ctx.kube.delete(path, grace=0, uid=self.uid), "delete")
        self.volumes.cleanup()
        shutil.rmtree(self.pod_dir, ignore_errors=True)
        log.info("pod %s deleted", self.key)

    def _retry(self, fn: Any, what: str) -> None:
        delay = 0.2
        while not self.ctx.stop.is_set() and not self.gone:
            try:
                fn()
                return
            except Exception as err:
                if status_code(err) in (404, 409):
                    return
                log.warning("pod %s: %s failed (%s); retrying", self.key, what, err)
                self.ctx.stop.wait(delay)
                delay = min(delay * 2, 3.0)

    # -- status -------------------------------------------------------------------------
    def _status(self) -> Obj:
        ip_list = [{"ip": self.pod_ip}] if self.pod_ip else None
        status: Obj = {
            "phase": self.phase, "conditions": self.conditions.to_status(),
            "hostIP": self.ctx.host_ip, "hostIPs": [{"ip": self.ctx.host_ip}],
            "podIP": self.pod_ip or None, "podIPs": ip_list, "startTime": self.start_time,
            "containerStatuses": [c.to_status() for c in self.mains],
            "reason": self.reason, "message": self.message,
        }
        if self.inits:
            status["initContainerStatuses"] = [c.to_status() for c in self.inits]
        return status

    def _flush_or_raise(self) -> None:
        status = self._status()
        if status == self.last_sent:
            return
        body = {"metadata": {"uid": self.uid}, "status": status}  # uid: precondition
        self.ctx.kube.patch(f"/api/v1/namespaces/{self.ns}/pods/{self.name}/status", body)
        self.last_sent = status

    def _flush(self) -> None:
        if self.gone or time.monotonic() < self.next_flush:
            return
        try:
            self._flush_or_raise()
        except ApiException as err:
            if err.status in (404, 409):  # deleted, or replaced by a same-named pod
                self.vanish()
                return
            log.warning("pod %s: status patch failed: %s", self.key, err.reason)
            self.next_flush = time.monotonic() + 1
        except Exception as err:
            log.warning("pod %s: status patch failed: %s", self.key, err)
            self.next_flush = time.monotonic() + 1
