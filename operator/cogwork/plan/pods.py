"""The hardened pod every kind creates (training workers, the rendezvous store, labeling steps):
PodSecurity "restricted", no API token, no Service env, restarts decided by the operator.
Pure; one place, so a TrainJob's pods and a LabelJob's cannot drift apart."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cogwork_sdk import contract as pod_contract

NONROOT_UID = 65532  # distroless "nonroot"

# PodSecurity "restricted": non-root, no privilege escalation, no capabilities, RuntimeDefault.
POD_SECURITY_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": NONROOT_UID,
    "runAsGroup": NONROOT_UID,
    "fsGroup": NONROOT_UID,  # checkpoint volumes writable by the non-root user
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY_CONTEXT: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}
# Containers of the operator's own image (and user images that opt in): nothing but the
# emptyDirs at pod_contract.TMP_DIR and pod_contract.HOME_DIR (and the pod's volumes) is writable.
READ_ONLY_CONTAINER_SECURITY_CONTEXT: dict[str, Any] = {
    **CONTAINER_SECURITY_CONTEXT, "readOnlyRootFilesystem": True}
TMP_VOLUME = "cogwork-tmp"
HOME_VOLUME = "cogwork-home"


def scratch_volumes() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(volumes, mounts): the emptyDirs a read-only root filesystem needs, /tmp and HOME."""
    return ([{"name": TMP_VOLUME, "emptyDir": {}}, {"name": HOME_VOLUME, "emptyDir": {}}],
            [{"name": TMP_VOLUME, "mountPath": pod_contract.TMP_DIR},
             {"name": HOME_VOLUME, "mountPath": pod_contract.HOME_DIR}])


def read_only_root_container(container: dict[str, Any], volumes: list[dict[str, Any]]) -> None:
    """Make `container`'s root filesystem read-only, with emptyDirs at /tmp and HOME (a HOME
    already in its env wins)."""
    container["securityContext"] = dict(READ_ONLY_CONTAINER_SECURITY_CONTEXT)
    scratch, mounts = scratch_volumes()
    volumes += scratch
    container.setdefault("volumeMounts", []).extend(mounts)
    if all(e["name"] != "HOME" for e in container["env"]):
        container["env"].append({"name": "HOME", "value": pod_contract.HOME_DIR})


def hardened_pod(name: str, namespace: str, labels: dict[str, str],
                 annotations: dict[str, str], spec: dict[str, Any],
                 service_account: str | None) -> dict[str, Any]:
    """A Pod of `spec` (containers, volumes, placement) with what every pod of ours has: no
    restarts by the kubelet (the operator decides, per failure policy), no ServiceAccount token
    (pods get no API access), no env var per Service, and the restricted pod securityContext
    (unless `spec` brings its own, e.g. a user's uid)."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels}
    if annotations:
        metadata["annotations"] = annotations
    full: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": dict(POD_SECURITY_CONTEXT),
        **spec,
    }
    if service_account:
        full["serviceAccountName"] = service_account
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": full}


def unschedulable_message(pod_status: Mapping[str, Any]) -> str | None:
    """The scheduler's word on a pod it cannot place (PodScheduled=False, Unschedulable: too
    little memory, GPUs no node has, a claim that does not exist); None otherwise."""
    for condition in pod_status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False" \
                and condition.get("reason") == "Unschedulable":
            return str(condition.get("message") or "unschedulable")
    return None
