"""kube.py against the real apiserver: every call, logged in the way the operator logs in (Kopf's
kubeconfig login), with what the apiserver then holds read back through kubectl. The CRDs are
applied from crds/ if the chart has not installed them. In the full suite the e2e operator runs
alongside and writes the (suspended) TrainJobs' status too: status assertions use a value it
never writes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

import kopf
import pytest
from cogwork import kube
from harness.cluster import Cluster
from harness.jobs import digits_job
from harness.operator import install_crds

pytestmark = pytest.mark.cluster

T = TypeVar("T")
OTHER_FINALIZER = "example.com/keep"  # holds the deleted job until the test removes it


def run(call: Coroutine[Any, Any, T]) -> T:
    """One event loop per step, as the sync test drives them; kube's session closes with it."""

    async def main() -> T:
        try:
            return await call
        finally:
            await kube.close()

    return asyncio.run(main())


def login_as(cluster: Cluster, user: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(cluster.control_plane.kubeconfig(user)))
    info = kube.login(settings=kopf.OperatorSettings(), logger=logging.getLogger("test"))
    assert info is not None and info.token == cluster.control_plane.users[user].token


@pytest.fixture
def admin(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in (("_info", None), ("_session", None), ("_session_loop", None),
                        ("_login_kwargs", {})):
        monkeypatch.setattr(kube, name, value)  # restored after the test
    # A CI pod's own ServiceAccount must not win over the harness's kubeconfig.
    monkeypatch.setattr(kopf, "login_with_service_account", lambda **_: None)
    if cluster.kubectl("get", "crd", "trainjobs.cogwork.dev", check=False).returncode != 0:
        install_crds(cluster.control_plane)
    login_as(cluster, "admin", monkeypatch)


def get_json(cluster: Cluster, namespace: str, *what: str) -> dict[str, Any]:
    return cluster.kubectl_json("get", *what, "-n", namespace)


def test_core_objects(cluster: Cluster, namespace: str, admin: None) -> None:
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kc"},
                 "data": {"k": "v"}}
    assert run(kube.create(namespace, configmap)) is True
    assert run(kube.create(namespace, configmap)) is False  # 409: it exists
    assert get_json(cluster, namespace, "configmap", "kc")["data"] == {"k": "v"}

    # Gated, so never scheduled: no node agent involved, and deletion is immediate.
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "kp", "annotations": {"keep": "1"}},
           "spec": {"schedulingGates": [{"name": "cogwork.dev/test-hold"}],
                    "containers": [{"name": "main", "image": "busybox",
                                    "command": ["sleep", "60"]}]}}
    assert run(kube.create(namespace, pod)) is True
    assert run(kube.create(namespace, pod)) is False
    read = run(kube.get_pod(namespace, "kp"))
    assert read is not None and read["metadata"]["uid"] == get_json(
        cluster, namespace, "pod", "kp")["metadata"]["uid"]
    assert run(kube.get_pod(namespace, "absent")) is None

    run(kube.patch_pod(namespace, "kp", {"metadata": {"annotations": {"cogwork.dev/seen": "yes"}}}))
    annotations = get_json(cluster, namespace, "pod", "kp")["metadata"]["annotations"]
    assert annotations == {"keep": "1", "cogwork.dev/seen": "yes"}
    run(kube.patch_pod(namespace, "kp", {"metadata": {"annotations": {"cogwork.dev/seen": None}}}))
    annotations = get_json(cluster, namespace, "pod", "kp")["metadata"]["annotations"]
    assert annotations == {"keep": "1"}
    # 404 tolerated
    run(kube.patch_pod(namespace, "absent", {"metadata": {"annotations": {"a": "b"}}}))

    assert run(kube.delete_pod(namespace, "kp", grace_seconds=0)) is True
    assert run(kube.get_pod(namespace, "kp")) is None
    assert cluster.kubectl("get", "pod", "kp", "-n", namespace, check=False).returncode != 0
    assert run(kube.delete_pod(namespace, "kp")) is False  # 404


def test_custom_objects_and_errors(cluster: Cluster, namespace: str, admin: None,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    job = digits_job("kj", suspend=True)  # suspended: an operator running alongside starts no pods
    job["metadata"].update(labels={"team": "a"}, finalizers=[OTHER_FINALIZER])
    other = digits_job("kj2", suspend=True)
    other["metadata"]["labels"] = {"team": "b"}
    assert run(kube.create(namespace, job)) is True
    assert run(kube.create(namespace, job)) is False
    assert run(kube.create(namespace, other)) is True
    assert get_json(cluster, namespace, "trainjob", "kj")["metadata"]["labels"] == {"team": "a"}

    assert run(kube.get_custom("trainjobs", namespace, "absent")) is None
    assert run(kube.get_namespaced_object("cogwork.dev", "v1alpha1", "trainjobs", namespace,
                                          "absent")) is None
    listed = run(kube.list_custom("trainjobs", namespace, "team=a"))
    assert [item["metadata"]["name"] for item in listed] == ["kj"]
    everything = run(kube.list_custom("trainjobs", namespace))
    assert sorted(item["metadata"]["name"] for item in everything) == ["kj", "kj2"]

    # patch_custom moves the resourceVersion: a status patch guarded by the old one conflicts.
    stale = run(kube.get_custom("trainjobs", namespace, "kj"))
    assert stale is not None
    run(kube.patch_custom("trainjobs", namespace, "kj", {"metadata": {"labels": {"team": "b"}}}))
    both = run(kube.list_custom("trainjobs", namespace, "team=b"))
    assert sorted(item["metadata"]["name"] for item in both) == ["kj", "kj2"]
    marker = {"observedGeneration": 99}  # no operator writes this generation
    with pytest.raises(kube.Conflict):
        run(kube.patch_custom_status("trainjobs", namespace, "kj", marker,
                                     stale["metadata"]["resourceVersion"]))
    status = get_json(cluster, namespace, "trainjob", "kj").get("status") or {}
    assert status.get("observedGeneration") != 99
    patched = None
    for _ in range(5):  # the operator may move the version between our read and our write
        current = get_json(cluster, namespace, "trainjob", "kj")["metadata"]["resourceVersion"]
        try:
            patched = run(kube.patch_custom_status("trainjobs", namespace, "kj", marker, current))
            break
        except kube.Conflict:
            continue
    assert patched is not None and patched["status"]["observedGeneration"] == 99

    assert run(kube.delete_custom("trainjobs", namespace, "kj")) is True
    held = run(kube.get_custom("trainjobs", namespace, "kj"))  # the other finalizer holds it
    assert held is not None and held["metadata"].get("deletionTimestamp")
    cluster.kubectl("patch", "trainjob", "kj", "-n", namespace, "--type=merge",
                    "-p", '{"metadata":{"finalizers":null}}')
    assert run(kube.get_custom("trainjobs", namespace, "kj")) is None
    assert run(kube.delete_custom("trainjobs", namespace, "kj")) is False
    assert run(kube.delete_custom("trainjobs", namespace, "kj2")) is True
    assert get_json(cluster, namespace, "trainjobs")["items"] == []

    widget = {"apiVersion": "widgets.example.com/v1", "kind": "Widget",
              "metadata": {"name": "w"}}
    with pytest.raises(kube.NotServed):
        run(kube.create_namespaced_object("widgets.example.com", "v1", "widgets", namespace,
                                          widget))
    with pytest.raises(kube.NotServed):  # a served group, but no such resource in it
        run(kube.get_namespaced_object("cogwork.dev", "v1alpha1", "widgets", namespace, "w"))

    review = run(kube.token_review("not-a-token", []))
    assert not review.get("authenticated")
    assert not review.get("user", {}).get("username")

    login_as(cluster, "alice", monkeypatch)  # authenticated, granted nothing
    with pytest.raises(kube.ApiError) as denied:
        run(kube.get_custom("trainjobs", namespace, "kj2"))
    assert denied.value.status == 403
    with pytest.raises(kube.ApiError) as denied:
        run(kube.create(namespace, {"apiVersion": "v1", "kind": "ConfigMap",
                                    "metadata": {"name": "alice"}}))
    assert denied.value.status == 403
    assert cluster.kubectl("get", "configmap", "alice", "-n", namespace,
                           check=False).returncode != 0
