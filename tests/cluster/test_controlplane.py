"""The harness is a real control plane: CRD validation with CEL, RBAC, garbage collection,
PodSecurity admission and a real /version. Each test asserts behaviour only the real
components produce."""

from __future__ import annotations

import json
import time

import pytest
from harness.cluster import Cluster

pytestmark = pytest.mark.cluster

WIDGET_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.harness.cogwork.dev
spec:
  group: harness.cogwork.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            description: Desired state of the widget.
            x-kubernetes-validations:
            - rule: self.min <= self.max
              message: spec.min must be less than or equal to spec.max
            properties:
              min: {type: integer, description: Lowest allowed size.}
              max: {type: integer, description: Highest allowed size.}
"""


def widget(name: str, lo: int, hi: int) -> str:
    return json.dumps(
        {"apiVersion": "harness.cogwork.dev/v1", "kind": "Widget",
         "metadata": {"name": name}, "spec": {"min": lo, "max": hi}}
    )


def wait_for(predicate, timeout: float = 60, interval: float = 0.5) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def test_version_is_real(cluster: Cluster) -> None:
    status, body = cluster.control_plane.get("/version")
    assert status == 200
    assert json.loads(body)["gitVersion"] == "v1.36.3"


def test_crd_cel_rule_and_explain(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("apply", "-f", "-", input=WIDGET_CRD)
    cluster.kubectl("wait", "--for=condition=Established", "crd/widgets.harness.cogwork.dev")
    bad = cluster.kubectl("apply", "-n", namespace, "-f", "-", input=widget("bad", 5, 1),
                          check=False)
    assert bad.returncode != 0
    assert "spec.min must be less than or equal to spec.max" in bad.stderr
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=widget("good", 1, 5))
    stored = cluster.kubectl_json("get", "widget", "good", "-n", namespace)
    assert stored["spec"] == {"min": 1, "max": 5}

    def explained() -> bool:
        out = cluster.kubectl("explain", "widgets.spec.min", check=False).stdout
        return "Lowest allowed size." in out

    wait_for(explained, timeout=30)  # OpenAPI publishing of a new CRD is asynchronous


def test_rbac_denies_then_allows(cluster: Cluster, namespace: str) -> None:
    denied = cluster.kubectl("get", "configmaps", "-n", namespace, user="alice", check=False)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()
    cluster.kubectl("create", "role", "cm-reader", "-n", namespace,
                    "--verb=get,list", "--resource=configmaps")
    cluster.kubectl("create", "rolebinding", "alice-cm", "-n", namespace,
                    "--role=cm-reader", "--user=alice")
    wait_for(lambda: cluster.kubectl("get", "configmaps", "-n", namespace, user="alice",
                                     check=False).returncode == 0, timeout=30)
    # Still denied for verbs that were not granted.
    write = cluster.kubectl("create", "configmap", "x", "-n", namespace, user="alice", check=False)
    assert "forbidden" in write.stderr.lower()


def test_garbage_collection_deletes_owned_objects(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("create", "configmap", "owner", "-n", namespace)
    owner = cluster.kubectl_json("get", "configmap", "owner", "-n", namespace)
    uid = owner["metadata"]["uid"]  # type: ignore[index]
    child = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "child", "ownerReferences": [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}]},
    }
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(child))
    cluster.kubectl("delete", "configmap", "owner", "-n", namespace)
    wait_for(lambda: cluster.kubectl("get", "configmap", "child", "-n", namespace,
                                     check=False).returncode != 0, timeout=60)


def test_pod_security_restricted_rejects_privileged_pod(cluster: Cluster) -> None:
    ns = "psa-restricted"
    cluster.create_namespace(ns, labels={"pod-security.kubernetes.io/enforce": "restricted"})
    try:
        pod = {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "priv"},
            "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["true"],
                                     "securityContext": {"privileged": True}}]},
        }
        result = cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(pod), check=False)
        assert result.returncode != 0
        assert "violates PodSecurity" in result.stderr
        assert "privileged" in result.stderr
    finally:
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)
