"""Per-pod /etc/hosts: the cluster DNS of this fake cluster (there is no CoreDNS, no kube-proxy).

A pod's file names itself, every pod of its namespace that has hostname+subdomain, and every
Service of its namespace (→ the IPs of the pods its selector matches). Files are re-rendered
whenever a pod or Service of the namespace changes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .network import NETNS_ETC, update_in_place

log = logging.getLogger("nodeagent.hosts")

Obj = dict[str, Any]
HEADER = """# Kubernetes-managed hosts file (cogwork node agent).
127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
fe00::0\tip6-mcastprefix
fe00::1\tip6-allnodes
fe00::2\tip6-allrouters
"""


@dataclass
class Target:
    uid: str
    namespace: str
    netns: str
    ip: str
    hostname: str
    subdomain: str


def pod_hostname(pod: Obj) -> str:
    spec = pod.get("spec") or {}
    return str(spec.get("hostname") or pod["metadata"]["name"])[:63]


def _fqdns(host: str, sub: str, ns: str) -> list[str]:
    base = f"{host}.{sub}.{ns}.svc"
    return [f"{base}.cluster.local", base, f"{host}.{sub}.{ns}", f"{host}.{sub}"]


def _live(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def _selects(selector: dict[str, str], pod: Obj) -> bool:
    labels = pod["metadata"].get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def render(target: Target, pods: list[Obj], services: list[Obj], ip_of: Callable[[Obj], str]
           ) -> str:
    ns = target.namespace
    own = ([*_fqdns(target.hostname, target.subdomain, ns), target.hostname]
           if target.subdomain else [target.hostname])
    lines = [HEADER, f"{target.ip}\t{' '.join(own)}\n"]
    in_ns = sorted((p for p in pods if p["metadata"].get("namespace") == ns),
                   key=lambda p: p["metadata"]["name"])
    for pod in in_ns:
        spec = pod.get("spec") or {}
        ip = ip_of(pod)
        if pod["metadata"]["uid"] == target.uid or not ip or not _live(pod):
            continue
        if spec.get("hostname") and spec.get("subdomain"):
            fqdns = _fqdns(spec["hostname"], spec["subdomain"], ns)
            lines.append(f"{ip}\t{' '.join(fqdns)}\n")
    for svc in sorted((s for s in services if s["metadata"].get("namespace") == ns),
                      key=lambda s: s["metadata"]["name"]):
        sspec = svc.get("spec") or {}
        selector = sspec.get("selector")
        if not selector:
            continue
        name = svc["metadata"]["name"]
        names = f"{name}.{ns}.svc.cluster.local {name}.{ns}.svc {name}.{ns} {name}"
        not_ready_ok = bool(sspec.get("publishNotReadyAddresses"))
        for pod in in_ns:
            terminating = bool(pod["metadata"].get("deletionTimestamp"))
            ip = ip_of(pod)
            if ip and _live(pod) and _selects(selector, pod) and (not_ready_ok or not terminating):
                lines.append(f"{ip}\t{names}\n")
    return "".join(lines)


class HostsManager:
    """Keeps every registered pod's hosts file current; rewrites happen on a background thread
    so informer callbacks stay cheap (several events in a burst coalesce into one rewrite)."""

    def __init__(self, pods: Callable[[], list[Obj]], services: Callable[[], list[Obj]],
                 stop: threading.Event) -> None:
        self.pods, self.services, self.stop = pods, services, stop
        self.targets: dict[str, Target] = {}
        self.local_ips: dict[str, str] = {}
        self.dirty: set[str] = set()
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._run, daemon=True, name="hosts")

    def start(self) -> None:
        self.thread.start()

    def ip_of(self, pod: Obj) -> str:
        uid = pod["metadata"]["uid"]
        return self.local_ips.get(uid) or str((pod.get("status") or {}).get("podIP") or "")

    def content(self, target: Target) -> str:
        return render(target, self.pods(), self.services(), self.ip_of)

    def register(self, target: Target) -> None:
        with self.cond:
            self.targets[target.uid] = target
            self.local_ips[target.uid] = target.ip
        self.mark(target.namespace)  # peers learn our IP

    def unregister(self, uid: str) -> None:
        with self.cond:
            target = self.targets.pop(uid, None)
            self.local_ips.pop(uid, None)
        if target:
            self.mark(target.namespace)

    def mark(self, namespace: str) -> None:
        with self.cond:
            self.dirty.add(namespace)
            self.cond.notify()

    def _run(self) -> None:
        while not self.stop.is_set():
            with self.cond:
                while not self.dirty and not self.stop.is_set():
                    self.cond.wait(1.0)
                namespaces, self.dirty = self.dirty, set()
                targets = [t for t in self.targets.values() if t.namespace in namespaces]
            for target in targets:
                try:
                    path = NETNS_ETC / target.netns / "hosts"
                    if update_in_place(Path(path), self.content(target)):
                        log.info("hosts of %s/%s updated", target.namespace, target.hostname)
                except Exception:
                    log.exception("rewriting hosts for pod %s", target.uid)
