"""The Helm chart with a real helm (built by `make helm`) against the real test apiserver:
lint, render, install, least privilege, and the aggregated user roles."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness.cluster import Cluster
from harness.operator import CHART, HELM

pytestmark = pytest.mark.cluster

RELEASE = "cw-chart-test"  # contains no "cogwork": fullname is cw-chart-test-cogwork
FULLNAME = f"{RELEASE}-cogwork"


@pytest.fixture(scope="module")
def helm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    if not HELM.exists():
        pytest.fail(f"{HELM} missing: run `make helm`")
    home = tmp_path_factory.mktemp("helm")
    env = dict(os.environ)
    env.update({"HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
                "HELM_DATA_HOME": str(home / "data")})
    return env


def helm(env: dict[str, str], *args: str, kubeconfig: Path | None = None,
         check: bool = True) -> subprocess.CompletedProcess[str]:
    extra = [f"--kubeconfig={kubeconfig}"] if kubeconfig else []
    result = subprocess.run([str(HELM), *args, *extra], capture_output=True, text=True, env=env,
                            timeout=180)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def render(env: dict[str, str], *sets: str) -> list[dict[str, Any]]:
    args = [f"--set={s}" for s in sets]
    out = helm(env, "template", RELEASE, str(CHART), "--namespace=ops", *args).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def test_lint_strict_passes(helm_env: dict[str, str]) -> None:
    result = helm(helm_env, "lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in result.stdout


def test_schema_rejects_bad_values(helm_env: dict[str, str]) -> None:
    bad = helm(helm_env, "template", "x", str(CHART), "--set=report.tls.mode=plaintext",
               check=False)
    assert bad.returncode != 0 and "/report/tls/mode" in bad.stderr
    typo = helm(helm_env, "template", "x", str(CHART), "--set=metrics.prot=1", check=False)
    assert typo.returncode != 0 and "prot" in typo.stderr
    # Never two writers: Kopf has no leader election.
    two = helm(helm_env, "template", "x", str(CHART), "--set=replicas=2", check=False)
    assert two.returncode != 0 and "/replicas" in two.stderr


def test_template_renders_a_restricted_single_writer_operator(helm_env: dict[str, str]) -> None:
    docs = render(helm_env)
    (deploy,) = by_kind(docs, "Deployment")
    assert deploy["spec"]["replicas"] == 1
    assert deploy["spec"]["strategy"] == {"type": "Recreate"}
    pod = deploy["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    health = next(p for p in container["ports"] if p["name"] == "health")["containerPort"]
    assert f"--liveness=http://0.0.0.0:{health}/healthz" in container["args"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
    assert sc["capabilities"]["drop"] == ["ALL"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["COGWORK_METRICS_PORT"] == "8081"
    assert env["COGWORK_REPORT_CA_FILE"] == "/etc/cogwork/tls/ca.crt"
    # The report endpoint's certificate: Helm-generated, for the Service's DNS name.
    (secret,) = by_kind(docs, "Secret")
    assert secret["type"] == "kubernetes.io/tls"
    assert b"BEGIN CERTIFICATE" in base64.b64decode(secret["data"]["ca.crt"])
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"{FULLNAME}.ops.svc" in names.get_values_for_type(x509.DNSName)
    assert not by_kind(docs, "ServiceMonitor")  # off by default
    services = {s["metadata"]["name"] for s in by_kind(docs, "Service")}
    assert services == {FULLNAME, f"{FULLNAME}-metrics"}


def test_template_options(helm_env: dict[str, str]) -> None:
    docs = render(helm_env, "metrics.serviceMonitor.enabled=true", "dashboards.enabled=true",
                  "report.tls.mode=certManager", "watchNamespaces={ml,research}")
    assert len(by_kind(docs, "ServiceMonitor")) == 1
    (dashboards,) = by_kind(docs, "ConfigMap")
    for text in dashboards["data"].values():
        assert json.loads(text)["panels"]
    assert len(by_kind(docs, "Certificate")) == 1 and not by_kind(docs, "Secret")
    trainer_ns = {sa["metadata"]["namespace"] for sa in by_kind(docs, "ServiceAccount")
                  if sa["metadata"]["name"] == "cogwork-trainer"}
    assert trainer_ns == {"ops", "ml", "research"}
    args = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=ml" in args and "--namespace=research" in args
    # replicas=0: everything but the operator pod (the e2e suite runs the operator itself).
    (idle,) = by_kind(render(helm_env, "replicas=0"), "Deployment")
    assert idle["spec"]["replicas"] == 0
    off = render(helm_env, "report.tls.mode=operator", "metrics.enabled=false")
    assert not by_kind(off, "Secret")
    assert {s["metadata"]["name"] for s in by_kind(off, "Service")} == {FULLNAME}


def test_install_on_the_apiserver(cluster: Cluster, namespace: str,
                                  helm_env: dict[str, str]) -> None:
    cp = cluster.control_plane
    admin = cp.kubeconfig("admin")
    # No node carries this label: the Deployment's pod stays Pending (there is no real image
    # here, and a second operator must not run). The objects are what this test checks.
    installed = helm(helm_env, "install", RELEASE, str(CHART), f"--namespace={namespace}",
                     "--set-string=nodeSelector.cogwork\\.dev/no-such-node=true", "--wait=false",
                     kubeconfig=admin)
    try:
        assert "STATUS: deployed" in installed.stdout
        assert "kubectl wait trainjob/digits" in installed.stdout  # NOTES.txt
        for crd in ("trainjobs", "tunejobs", "labeljobs"):
            cp.kubectl("get", "crd", f"{crd}.cogwork.dev")
        deploy = cluster.kubectl_json("get", "deployment", FULLNAME, "-n", namespace)
        assert deploy["spec"]["strategy"]["type"] == "Recreate"  # type: ignore[index]
        for kind, name in [("service", FULLNAME), ("service", f"{FULLNAME}-metrics"),
                           ("secret", f"{FULLNAME}-report-tls"),
                           ("serviceaccount", FULLNAME), ("serviceaccount", "cogwork-trainer")]:
            cp.kubectl("get", kind, name, "-n", namespace)
        for role in (FULLNAME, f"{FULLNAME}-view", f"{FULLNAME}-edit"):
            cp.kubectl("get", "clusterrole", role)
        # The trainer ServiceAccount is bound to nothing.
        trainer = f"system:serviceaccount:{namespace}:cogwork-trainer"
        for verb, resource in [("list", "pods"), ("get", "secrets"), ("create", "trainjobs")]:
            assert can_i(cluster, verb, resource, trainer, namespace) == "no"
        # The operator: what it needs, and no Secrets anywhere.
        operator = f"system:serviceaccount:{namespace}:{FULLNAME}"
        assert can_i(cluster, "create", "pods", operator, "default") == "yes"
        assert can_i(cluster, "create", "tokenreviews.authentication.k8s.io", operator) == "yes"
        assert can_i(cluster, "patch", "trainjobs.cogwork.dev", operator, "ml",
                     subresource="status") == "yes"
        for verb in ("get", "list", "watch"):
            assert can_i(cluster, verb, "secrets", operator) == "no"  # cluster-wide
            assert can_i(cluster, verb, "secrets", operator, namespace) == "no"
        assert can_i(cluster, "delete", "nodes", operator) == "no"
        # Users: the built-in edit role now covers Cogwork kinds (aggregation controller).
        cp.kubectl("create", "rolebinding", "alice-edit", "--clusterrole=edit", "--user=alice",
                   "-n", namespace)
        deadline = time.monotonic() + 60
        while can_i(cluster, "create", "trainjobs.cogwork.dev", "alice", namespace) != "yes":
            assert time.monotonic() < deadline, "edit never aggregated the Cogwork rules"
            time.sleep(1)
        assert can_i(cluster, "patch", "trainjobs.cogwork.dev", "alice", namespace,
                     subresource="scale") == "yes"
        assert can_i(cluster, "patch", "trainjobs.cogwork.dev", "alice", namespace,
                     subresource="status") == "no"
        assert can_i(cluster, "create", "trainjobs.cogwork.dev", "alice", "default") == "no"
        # An upgrade keeps the Helm-generated certificate (lookup), so pods keep trusting it.
        before = cluster.kubectl_json("get", "secret", f"{FULLNAME}-report-tls", "-n", namespace)
        helm(helm_env, "upgrade", RELEASE, str(CHART), f"--namespace={namespace}",
             "--reuse-values", "--wait=false", kubeconfig=admin)
        after = cluster.kubectl_json("get", "secret", f"{FULLNAME}-report-tls", "-n", namespace)
        assert after["data"] == before["data"]
    finally:
        helm(helm_env, "uninstall", RELEASE, f"--namespace={namespace}", kubeconfig=admin,
             check=False)
    assert cp.kubectl("get", "clusterrole", FULLNAME, check=False).returncode != 0
    # CRDs stay: Helm never deletes what crds/ installed (users' jobs would go with them).
    cp.kubectl("get", "crd", "trainjobs.cogwork.dev")


def can_i(cluster: Cluster, verb: str, resource: str, who: str,
          namespace: str | None = None, subresource: str = "") -> str:
    scope = ["-n", namespace] if namespace else ["--all-namespaces"]
    sub = [f"--subresource={subresource}"] if subresource else []
    result = cluster.control_plane.kubectl("auth", "can-i", verb, resource, f"--as={who}",
                                           *scope, *sub, check=False)
    return result.stdout.strip()
