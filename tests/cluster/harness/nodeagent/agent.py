"""The API side of the fake kubelet: Node registration and heartbeats (status + Lease), the
pod/service/PVC/PV watches, and one PodWorker per pod bound to one of our nodes."""

from __future__ import annotations

import logging
import platform
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import runtime
from .hosts import HostsManager
from .images import ImageMap
from .kube import MERGE, ApiException, Informer, Kube, now_micro, now_rfc3339
from .logs import LogError, LogRun, LogServer
from .network import BRIDGE_IP, Network
from .pod import Context, PodWorker
from .provisioner import Provisioner
from .volumes import release_memory_volumes

log = logging.getLogger("nodeagent")

Obj = dict[str, Any]
KUBELET_VERSION = "v1.36.3"
HEARTBEAT_S = 10.0
LEASE_S = 40
CONDITION_TAINTS = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")


@dataclass(frozen=True)
class ServingConfig:
    """The kubelet endpoint (containerLogs): serving cert, the CA client certs must chain to,
    the client CNs allowed in (the apiserver's kubelet client), and the port (0: any)."""

    cert: Path
    key: Path
    client_ca: Path
    authorized: frozenset[str]
    port: int = 0


class Agent:
    def __init__(self, kubeconfig: str, workdir: Path, nodes: list[str], gpus: int, cpu: str,
                 memory: str, images: ImageMap, serving: ServingConfig | None = None) -> None:
        self.kube = Kube(kubeconfig)
        self.serving = serving
        self.log_server: LogServer | None = None
        self.workdir, self.nodes = workdir, nodes
        self.gpus, self.cpu, self.memory = gpus, cpu, memory
        self.stop = threading.Event()
        self.network = Network()
        self.workers: dict[str, PodWorker] = {}
        self.finished: set[str] = set()
        self.lock = threading.Lock()
        self.boot_id = str(uuid.uuid4())
        self.transitioned: set[str] = set()
        self.pods = Informer(self.kube, "/api/v1/pods", self._on_pod, self.stop)
        self.services = Informer(self.kube, "/api/v1/services", self._on_service, self.stop)
        self.provisioner = Provisioner(self.kube, workdir / "pv")
        self.claims = Informer(self.kube, "/api/v1/persistentvolumeclaims",
                               self.provisioner.on_claim, self.stop)
        self.volumes = Informer(self.kube, "/api/v1/persistentvolumes",
                                self.provisioner.on_volume, self.stop)
        self.hosts = HostsManager(self.pods.items, self.services.items, self.stop)
        self.ctx = Context(self.kube, self.network, self.hosts, workdir, images, BRIDGE_IP,
                           self.stop, self._worker_done)

    # -- lifecycle ----------------------------------------------------------------------
    def run(self) -> None:
        for sub in ("pods", "logs", "pv"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        self.network.ensure_bridge()
        self.network.reclaim_stale()
        if self.serving is not None:  # before the first heartbeat, which publishes its port
            s = self.serving
            self.log_server = LogServer(BRIDGE_IP, s.port, s.cert, s.key, s.client_ca,
                                        set(s.authorized), self._log_run, self.stop)
            self.log_server.start()
            log.info("containerLogs served on https://%s:%d", BRIDGE_IP, self.log_server.port)
        self._heartbeat_all()
        self.hosts.start()
        # Services first so the first hosts files already name them.
        for informer in (self.services, self.claims, self.volumes):
            informer.start()
        self.services.synced.wait(10)
        self.pods.start()
        log.info("node agent up: nodes %s, bridge %s", ",".join(self.nodes), BRIDGE_IP)
        next_beat = time.monotonic() + HEARTBEAT_S
        while not self.stop.wait(max(0.0, next_beat - time.monotonic())):
            next_beat = time.monotonic() + HEARTBEAT_S
            self._heartbeat_all()
            for pvc in self.claims.items():  # resync: retry claims whose PV creation failed
                self._safe(self.provisioner.on_claim, "MODIFIED", pvc)
        self._shutdown()

    def request_stop(self) -> None:
        self.stop.set()

    def _shutdown(self) -> None:
        """Kill every pod's processes and remove their netns/veths/cgroups; pods keep their
        API objects (a kubelet going down does not delete pods)."""
        log.info("stopping: killing %d pod(s)", len(self.workers))
        with self.lock:
            workers = list(self.workers.values())
        for w in workers:
            runtime.remove_pod_cgroup(w.uid)  # kill first, then let the worker tidy up
        for w in workers:
            w.wake.set()
            w.thread.join(timeout=10)
            release_memory_volumes(w.uid)  # host tmpfs mounts must not outlive the agent
        self.network.reclaim_stale()  # anything a stuck worker left behind (our pid is dying)
        self.network.remove_bridge_if_unused()
        if self.log_server is not None:
            self.log_server.close()
        log.info("stopped")

    # -- pods ---------------------------------------------------------------------------
    def _worker_done(self, uid: str) -> None:
        with self.lock:
            self.workers.pop(uid, None)
            self.finished.add(uid)

    def _on_pod(self, kind: str, pod: Obj) -> None:
        meta, spec = pod["metadata"], pod.get("spec") or {}
        self.hosts.mark(meta["namespace"])
        if spec.get("nodeName") not in self.nodes:
            return
        uid = meta["uid"]
        with self.lock:
            worker = self.workers.get(uid)
            if worker is None and kind != "DELETED" and uid not in self.finished \
                    and not self.stop.is_set():
                worker = PodWorker(self.ctx, pod)
                self.workers[uid] = worker
                worker.thread.start()
                return
        if worker is None:
            return
        if kind == "DELETED":
            worker.vanish()
        else:
            worker.update(pod)

    def _log_run(self, namespace: str, name: str, container: str, previous: bool) -> LogRun:
        with self.lock:
            workers = [w for w in self.workers.values() if (w.ns, w.name) == (namespace, name)]
        if not workers:
            raise LogError(404, f'pod "{name}" in namespace "{namespace}" not found on this node')
        # A same-named pod may still be terminating: prefer the one not being deleted.
        worker = min(workers, key=lambda w: w.delete_grace is not None)
        return worker.log_run(container, previous)

    def _on_service(self, kind: str, svc: Obj) -> None:
        self.hosts.mark(svc["metadata"]["namespace"])

    # -- nodes --------------------------------------------------------------------------
    def _safe(self, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception as err:
            log.warning("%s failed: %s", getattr(fn, "__name__", fn), str(err).splitlines()[0])

    def _heartbeat_all(self) -> None:
        for node in self.nodes:
            self._safe(self._heartbeat, node)

    def _heartbeat(self, node: str) -> None:
        try:
            obj = self.kube.patch(f"/api/v1/nodes/{node}/status",
                                  {"status": self._node_status(node)})
            self.transitioned.add(node)
        except ApiException as err:
            if err.status != 404:
                raise
            obj = self._register(node)
        self._untaint(obj)
        self._renew_lease(node)

    def _untaint(self, node: Obj) -> None:
        """TaintNodesByCondition admission puts not-ready on every new Node; removing it is the
        node-lifecycle controller's job, which this control plane does not run."""
        taints = (node.get("spec") or {}).get("taints") or []
        keep = [t for t in taints if t.get("key") not in CONDITION_TAINTS]
        if len(keep) != len(taints):
            meta = node["metadata"]
            self.kube.patch(f"/api/v1/nodes/{meta['name']}",
                            {"metadata": {"resourceVersion": meta["resourceVersion"]},
                             "spec": {"taints": keep or None}}, content_type=MERGE)

    def _register(self, node: str) -> Obj:
        labels = {"kubernetes.io/hostname": node, "kubernetes.io/os": "linux",
                  "kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
                  "beta.kubernetes.io/arch": "amd64"}
        try:
            self.kube.create("/api/v1/nodes", {"apiVersion": "v1", "kind": "Node",
                                               "metadata": {"name": node, "labels": labels}})
            log.info("registered node %s", node)
        except ApiException as err:
            if err.status != 409:
                raise
        return self.kube.patch(f"/api/v1/nodes/{node}/status",
                               {"status": self._node_status(node)})

    def _node_status(self, node: str) -> Obj:
        now = now_rfc3339()
        capacity = {"cpu": self.cpu, "memory": self.memory, "pods": "110",
                    "ephemeral-storage": "100Gi"}
        if self.gpus > 0:
            capacity["nvidia.com/gpu"] = str(self.gpus)

        def cond(kind: str, ok: bool, reason: str, message: str) -> Obj:
            return {"type": kind, "status": "True" if ok else "False", "reason": reason,
                    "message": message, "lastHeartbeatTime": now, "lastTransitionTime": now}

        conditions = [
            cond("MemoryPressure", False, "KubeletHasSufficientMemory", "no memory pressure"),
            cond("DiskPressure", False, "KubeletHasNoDiskPressure", "no disk pressure"),
            cond("PIDPressure", False, "KubeletHasSufficientPID", "no PID pressure"),
            cond("Ready", True, "KubeletReady", "cogwork node agent is posting ready status"),
        ]
        # lastTransitionTime must not move on every heartbeat: strategic merge keeps the
        # existing value if we leave it out, so it is sent only until a patch succeeded.
        if node in self.transitioned:
            for c in conditions:
                c.pop("lastTransitionTime")
        return {
            "capacity": capacity, "allocatable": dict(capacity), "conditions": conditions,
            "addresses": [{"type": "InternalIP", "address": BRIDGE_IP},
                          {"type": "Hostname", "address": platform.node() or "localhost"}],
            # Where the apiserver proxies pods/log (and would proxy exec, attach...) to.
            "daemonEndpoints": {"kubeletEndpoint": {
                "Port": self.log_server.port if self.log_server else 0}},
            "nodeInfo": {
                "kubeletVersion": KUBELET_VERSION, "kubeProxyVersion": "",
                "operatingSystem": "linux", "architecture": "amd64",
                "osImage": "cogwork node agent", "kernelVersion": platform.release(),
                "containerRuntimeVersion": "cogwork://0.1.0", "machineID": self.boot_id,
                "systemUUID": self.boot_id, "bootID": self.boot_id,
            },
        }

    def _renew_lease(self, node: str) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{node}"
        spec = {"holderIdentity": node, "leaseDurationSeconds": LEASE_S,
                "renewTime": now_micro()}
        try:
            self.kube.patch(path, {"spec": spec}, content_type=MERGE)
        except ApiException as err:
            if err.status != 404:
                raise
            node_obj = self.kube.get(f"/api/v1/nodes/{node}")
            owner = {"apiVersion": "v1", "kind": "Node", "name": node,
                     "uid": node_obj["metadata"]["uid"]}
            self.kube.create(
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                 "metadata": {"name": node, "namespace": "kube-node-lease",
                              "ownerReferences": [owner]}, "spec": spec})
