"""Local-path provisioner: every Pending PVC gets a hostPath PV pre-bound to it.

kube-controller-manager's PV binder finishes the binding. All "nodes" are this machine, so a
PVC's directory is shared by pods on any node (how checkpoints travel between "nodes").
Released PVs we provisioned are deleted with their directory (reclaim policy Delete; kcm leaves
that to the provisioner named in the PV's provisioned-by annotation).
"""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path
from typing import Any

from .kube import ApiException, Kube

log = logging.getLogger("nodeagent.provisioner")

Obj = dict[str, Any]
PROVISIONER = "cogwork.dev/local-path"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"


def pv_for_claim(pvc: Obj, root: Path) -> Obj:
    meta, spec = pvc["metadata"], pvc.get("spec") or {}
    ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
    request = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"pvc-{uid}", "annotations": {PROVISIONED_BY: PROVISIONER}},
        "spec": {
            "capacity": {"storage": request},
            "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Delete",
            # The binder only matches equal classes; "" also matches a claim with no class.
            "storageClassName": spec.get("storageClassName") or "",
            "volumeMode": spec.get("volumeMode") or "Filesystem",
            "hostPath": {"path": str(root / f"{ns}-{name}-{uid}"), "type": "DirectoryOrCreate"},
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": ns,
                         "name": name, "uid": uid},
        },
    }


class Provisioner:
    def __init__(self, kube: Kube, root: Path) -> None:
        self.kube, self.root = kube, root
        self.lock = threading.Lock()
        self.created: set[str] = set()

    def on_claim(self, kind: str, pvc: Obj) -> None:
        meta, spec = pvc["metadata"], pvc.get("spec") or {}
        if kind == "DELETED" or meta.get("deletionTimestamp") or spec.get("volumeName"):
            return
        if (pvc.get("status") or {}).get("phase", "Pending") != "Pending":
            return
        with self.lock:
            if meta["uid"] in self.created:
                return
            self.created.add(meta["uid"])
        pv = pv_for_claim(pvc, self.root)
        Path(pv["spec"]["hostPath"]["path"]).mkdir(parents=True, exist_ok=True)
        try:
            self.kube.create("/api/v1/persistentvolumes", pv)
            log.info("provisioned %s for %s/%s", pv["metadata"]["name"], meta["namespace"],
                     meta["name"])
        except ApiException as err:
            if err.status != 409:  # 409: made before a relist
                with self.lock:
                    self.created.discard(meta["uid"])  # retried on the next event/relist
                raise

    def on_volume(self, kind: str, pv: Obj) -> None:
        meta, spec = pv["metadata"], pv.get("spec") or {}
        if kind == "DELETED" or (meta.get("annotations") or {}).get(PROVISIONED_BY) != PROVISIONER:
            return
        phase = (pv.get("status") or {}).get("phase")
        if phase not in ("Released", "Failed") or meta.get("deletionTimestamp"):
            return
        if spec.get("persistentVolumeReclaimPolicy") != "Delete":
            return
        path = Path((spec.get("hostPath") or {}).get("path", ""))
        if path.is_relative_to(self.root):  # only directories this provisioner made
            shutil.rmtree(path, ignore_errors=True)
        self.kube.delete(f"/api/v1/persistentvolumes/{meta['name']}")
        log.info("deleted released %s", meta["name"])
