"""Pod volumes as host directories, bind-mounted into each container's mount namespace.

configMap/secret/downwardAPI/projected volumes are written like the kubelet's atomic writer
(a timestamped dir behind a `..data` symlink that is swapped in one rename), so a reader never
sees a half-updated volume when labels/annotations or tokens are refreshed.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import runtime
from .envs import ConfigError, Sources, expand, field_value, parse_quantity, resource_value
from .kube import Kube, parse_time
from .runtime import Mount

log = logging.getLogger("nodeagent.volumes")

Obj = dict[str, Any]
Payload = dict[str, tuple[bytes, int]]
SHM_ROOT = Path("/dev/shm/cogwork")
RENDERED = ("configMap", "secret", "downwardAPI", "projected")
TOKEN_MAX_AGE = 24 * 3600


class NotReady(Exception):
    """The volume cannot be set up yet (unbound PVC): retried, the pod stays Pending."""


@dataclass
class Token:
    value: bytes
    refresh_at: float


# -- atomic writer ------------------------------------------------------------------------
def release_memory_volumes(uid: str) -> None:
    """Unmount a pod's sized tmpfs emptyDirs and remove its memory-backed directories."""
    for path in sorted((SHM_ROOT / uid).glob("*")):
        if os.path.ismount(path):
            subprocess.run([runtime.UMOUNT, "-l", str(path)], check=False)
    shutil.rmtree(SHM_ROOT / uid, ignore_errors=True)


def _safe_rel(rel: str) -> str:
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if not parts or ".." in parts or rel.startswith("/"):
        raise ValueError(f"invalid volume item path {rel!r}")
    return "/".join(parts)


def _same(current: Path, payload: Payload) -> bool:
    found: dict[str, tuple[bytes, int]] = {}
    for dirpath, _dirs, files in os.walk(current):
        for f in files:
            p = Path(dirpath) / f
            found[str(p.relative_to(current))] = (p.read_bytes(), p.stat().st_mode & 0o777)
    return found == payload


def atomic_write(target: Path, payload: Payload) -> bool:
    """Make target's visible files equal payload; returns whether anything changed."""
    target.mkdir(parents=True, exist_ok=True)
    data_link = target / "..data"
    current = target / os.readlink(data_link) if data_link.is_symlink() else None
    if current is not None and current.is_dir() and _same(current, payload):
        return False
    stamp = target / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{secrets.token_hex(4)}"
    stamp.mkdir()
    for rel, (data, mode) in payload.items():
        path = stamp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(mode)
    stamp.chmod(0o755)
    tmp = target / "..data_tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(stamp.name, tmp)
    os.replace(tmp, data_link)
    tops = {rel.split("/")[0] for rel in payload}
    for top in tops:
        if not (target / top).is_symlink():
            os.symlink(f"..data/{top}", target / top)
    for entry in target.iterdir():
        if not entry.name.startswith("..") and entry.name not in tops and entry.is_symlink():
            entry.unlink()
    if current is not None:
        shutil.rmtree(current, ignore_errors=True)
    return True


# -- manager ------------------------------------------------------------------------------
class VolumeManager:
    def __init__(self, kube: Kube, pod: Obj, pod_dir: Path, host_ip: str, pod_ip: str) -> None:
        self.kube, self.pod, self.pod_dir = kube, pod, pod_dir
        self.host_ip, self.pod_ip = host_ip, pod_ip
        self.uid: str = pod["metadata"]["uid"]
        self.ns: str = pod["metadata"]["namespace"]
        self.paths: dict[str, Path] = {}
        self.tokens: dict[str, Token] = {}

    def _volumes(self) -> list[Obj]:
        return list(self.pod["spec"].get("volumes") or [])

    def setup(self) -> None:
        """Create every volume not yet set up; raises NotReady/ConfigError to be retried."""
        for vol in self._volumes():
            if vol["name"] not in self.paths:
                self.paths[vol["name"]] = self._setup_one(vol)

    def refresh(self, pod: Obj, refetch: bool) -> None:
        """Re-render volumes whose content follows the pod (labels, annotations) or time
        (tokens, and with refetch the ConfigMaps/Secrets they project)."""
        self.pod = pod
        sources = Sources(self.kube.get_or_none, self.ns)
        for vol in self._volumes():
            kind = next((k for k in RENDERED if k in vol), None)
            if vol["name"] not in self.paths or kind is None:
                continue
            if kind in ("configMap", "secret") and not refetch:
                continue
            try:
                if atomic_write(self.paths[vol["name"]], self._payload(vol, kind, sources)):
                    log.info("volume %s of %s/%s refreshed", vol["name"], self.ns,
                             pod["metadata"]["name"])
            except (ConfigError, NotReady) as err:
                log.warning("refreshing volume %s: %s", vol["name"], err)

    def tokens_due(self) -> bool:
        now = time.time()
        return any(t.refresh_at <= now for t in self.tokens.values())

    def cleanup(self) -> None:
        release_memory_volumes(self.uid)

    def mounts(self, container: Obj, env: dict[str, str]) -> list[Mount]:
        by_name = {v["name"]: v for v in self._volumes()}
        mounts = []
        for vm in container.get("volumeMounts") or []:
            src = self.paths[vm["name"]]
            sub = vm.get("subPath") or expand(vm.get("subPathExpr") or "", env)
            if sub:
                src = src / _safe_rel(sub)
                if not src.exists():
                    src.mkdir(parents=True, exist_ok=True)
            vol = by_name.get(vm["name"], {})
            read_only = bool(vm.get("readOnly")) or any(k in vol for k in RENDERED)
            mounts.append(Mount(src, vm["mountPath"], read_only))
        return mounts

    # -- one volume -----------------------------------------------------------------------
    def _setup_one(self, vol: Obj) -> Path:
        name = str(vol["name"])
        default_dir: Path = self.pod_dir / "volumes" / name
        if "emptyDir" in vol:
            medium = (vol["emptyDir"] or {}).get("medium")
            path = SHM_ROOT / self.uid / name if medium == "Memory" else default_dir
            path.mkdir(parents=True, exist_ok=True)
            size = (vol["emptyDir"] or {}).get("sizeLimit")
            if medium == "Memory" and size and not os.path.ismount(path):
                # As the kubelet does: a tmpfs of sizeLimit, so /dev/shm has the asked size.
                options = f"size={int(parse_quantity(str(size)))},mode=0777"
                subprocess.run([runtime.MOUNT, "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                               check=True)
            path.chmod(0o777)
            return path
        if "hostPath" in vol:
            path = Path(vol["hostPath"]["path"])
            if vol["hostPath"].get("type") == "FileOrCreate":
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
            elif not path.exists():
                path.mkdir(parents=True, exist_ok=True)
            return path
        if "persistentVolumeClaim" in vol:
            return self._claim_path(str(vol["persistentVolumeClaim"]["claimName"]))
        if "ephemeral" in vol:  # kcm's ephemeral-volume controller creates <pod>-<volume>
            return self._claim_path(f"{self.pod['metadata']['name']}-{name}")
        kind = next((k for k in RENDERED if k in vol), None)
        if kind is None:
            raise ValueError(f"unsupported volume type in {name}: {sorted(vol)}")
        payload = self._payload(vol, kind, Sources(self.kube.get_or_none, self.ns))
        atomic_write(default_dir, payload)
        return default_dir

    def _claim_path(self, claim: str) -> Path:
        pvc = self.kube.get_or_none(f"/api/v1/namespaces/{self.ns}/persistentvolumeclaims/{claim}")
        if pvc is None:
            raise NotReady(f'persistentvolumeclaim "{claim}" not found')
        pv_name = (pvc.get("spec") or {}).get("volumeName")
        if (pvc.get("status") or {}).get("phase") != "Bound" or not pv_name:
            raise NotReady(f'persistentvolumeclaim "{claim}" is not bound yet')
        pv = self.kube.get(f"/api/v1/persistentvolumes/{pv_name}")
        source = pv["spec"].get("hostPath") or pv["spec"].get("local")
        if not source:
            raise ValueError(f"PV {pv_name} has no hostPath/local path")
        path = Path(source["path"])
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _payload(self, vol: Obj, kind: str, sources: Sources) -> Payload:
        spec = vol[kind] or {}
        mode = int(spec.get("defaultMode", 0o644))
        if kind == "configMap":
            return self._keyed(sources, "configmaps", spec["name"], spec, mode)
        if kind == "secret":
            return self._keyed(sources, "secrets", spec["secretName"], spec, mode)
        if kind == "downwardAPI":
            return self._downward(spec.get("items") or [], mode)
        payload: Payload = {}
        for i, src in enumerate(spec.get("sources") or []):
            if "serviceAccountToken" in src:
                tok = src["serviceAccountToken"]
                value = self._token(f"{vol['name']}/{i}", tok)
                payload[_safe_rel(tok["path"])] = (value, mode)
            elif "configMap" in src:
                payload.update(self._keyed(sources, "configmaps", src["configMap"]["name"],
                                           src["configMap"], mode))
            elif "secret" in src:
                payload.update(self._keyed(sources, "secrets", src["secret"]["name"],
                                           src["secret"], mode))
            elif "downwardAPI" in src:
                payload.update(self._downward(src["downwardAPI"].get("items") or [], mode))
            else:
                raise ValueError(f"unsupported projected source {sorted(src)}")
        return payload

    def _keyed(self, sources: Sources, kind: str, name: str, spec: Obj, mode: int) -> Payload:
        data = sources.raw(kind, name, bool(spec.get("optional")))
        if data is None:
            return {}
        items = spec.get("items")
        if not items:
            return {_safe_rel(k): (v, mode) for k, v in data.items()}
        out: Payload = {}
        for item in items:
            if item["key"] not in data:
                if spec.get("optional"):
                    continue
                raise ConfigError(f'configmap/secret "{name}" has no key "{item["key"]}"')
            out[_safe_rel(item["path"])] = (data[item["key"]], int(item.get("mode", mode)))
        return out

    def _downward(self, items: list[Obj], mode: int) -> Payload:
        out: Payload = {}
        for item in items:
            if "fieldRef" in item:
                value = field_value(self.pod, item["fieldRef"]["fieldPath"], self.pod_ip,
                                    self.host_ip)
            else:
                value = resource_value(self.pod, None, item["resourceFieldRef"])
            out[_safe_rel(item["path"])] = (value.encode(), int(item.get("mode", mode)))
        return out

    def _token(self, key: str, src: Obj) -> bytes:
        cached = self.tokens.get(key)
        if cached and cached.refresh_at > time.time():
            return cached.value
        meta = self.pod["metadata"]
        sa = self.pod["spec"].get("serviceAccountName") or "default"
        spec: Obj = {
            "expirationSeconds": int(src.get("expirationSeconds") or 3600),
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": meta["name"],
                               "uid": meta["uid"]},
        }
        if src.get("audience"):  # empty: the apiserver's own audiences, as for a kubelet
            spec["audiences"] = [src["audience"]]
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
        issued = time.time()
        resp = self.kube.create(f"/api/v1/namespaces/{self.ns}/serviceaccounts/{sa}/token", body)
        status = resp["status"]
        ttl = parse_time(status["expirationTimestamp"]) - issued
        # The kubelet refreshes at 80% of the lifetime or after 24h, whichever comes first.
        token = Token(status["token"].encode(), issued + min(0.8 * ttl, TOKEN_MAX_AGE))
        self.tokens[key] = token
        return token.value
