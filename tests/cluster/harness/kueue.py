"""A real Kueue controller manager (sigs.k8s.io/kueue, built by `make kueue`) against the local
control plane: its CRDs, its webhooks reached by URL, and helpers for queues.

Kueue normally runs in a pod behind the Service `kueue-webhook-service`, with certificates that
its own rotator makes for that Service's DNS name. Here it is a local process: the apiserver runs
on the host too and calls it at `https://127.0.0.1:<port><path>`, so every webhook (mutating,
validating, and the CRDs' conversion webhooks) is rewritten from `service:` to that `url:` with
the harness CA as `caBundle`, and Kueue serves a certificate for 127.0.0.1 that the harness CA
signed (`internalCertManagement` off). Only the webhooks for what this harness enables are
installed (Kueue's own kinds and batch/v1 Jobs): the Pod, Deployment and StatefulSet webhooks of
Kueue's manifests would otherwise put every Pod of the cluster through a no-op call.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import pki
from .controlplane import REPO_ROOT, ControlPlane, free_port

KUEUE_BINARY = REPO_ROOT / ".build" / "kueue"
# `make kueue` copies these from the module cache (config/components/{crd/bases,webhook}).
KUEUE_MANIFESTS = REPO_ROOT / ".build" / "kueue-config"
NAMESPACE = "kueue-system"
API_VERSION = "kueue.x-k8s.io/v1beta2"  # the CRDs' storage version in v0.17.0
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
# Our kinds, which the operator (an external controller) runs under Kueue: `Kind.version.group`,
# what schema.ParseKindArg reads in Kueue's config validation (operator/cogwork/api/common.py).
EXTERNAL_FRAMEWORKS = ("TrainJob.v1alpha1.cogwork.dev", "LabelJob.v1alpha1.cogwork.dev")
# The CRDs Kueue's kustomization gives a conversion webhook (config/components/crd/patches).
CONVERTED_CRDS = frozenset({
    "localqueues.kueue.x-k8s.io", "clusterqueues.kueue.x-k8s.io", "cohorts.kueue.x-k8s.io",
    "workloads.kueue.x-k8s.io", "multikueueclusters.kueue.x-k8s.io",
})
# Webhooks kept: Kueue's own kinds and the batch/job integration.
WEBHOOK_GROUPS = frozenset({"kueue.x-k8s.io", "batch"})
WEBHOOK_CONFIGURATIONS = {
    "MutatingWebhookConfiguration": "kueue-mutating-webhook-configuration",
    "ValidatingWebhookConfiguration": "kueue-validating-webhook-configuration",
}
# Kueue v0.17.0 reads its metrics server's certificate from this fixed path when it does not
# manage certificates itself; it runs in a private mount namespace where ours is bound there.
METRICS_CERT_DIR = Path("/etc/kueue/metrics/certs")


def _load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@dataclass
class Kueue:
    """Kueue for one control plane; `start()` returns once its webhooks answer."""

    control_plane: ControlPlane
    binary: Path = KUEUE_BINARY
    manifests: Path = KUEUE_MANIFESTS
    external_frameworks: tuple[str, ...] = EXTERNAL_FRAMEWORKS
    proc: subprocess.Popen[bytes] | None = None
    webhook_port: int = 0
    health_port: int = 0
    metrics_port: int = 0

    @property
    def workdir(self) -> Path:
        return self.control_plane.workdir / "kueue"

    @property
    def config_file(self) -> Path:
        return self.workdir / "config.yaml"

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kueue.kubeconfig"

    @property
    def log_file(self) -> Path:
        return self.control_plane.log_dir / "kueue.log"

    # -- lifecycle ----------------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> None:
        for path in (self.binary, self.manifests / "webhooks.yaml"):
            if not path.exists():
                raise FileNotFoundError(f"{path} is missing: build it with `make kueue`")
        cp = self.control_plane
        self.workdir.mkdir(parents=True, exist_ok=True)
        certs = self.workdir / "certs"
        certs.mkdir(exist_ok=True)
        # controller-runtime's webhook server reads <certDir>/tls.crt and tls.key.
        pki.make_serving_cert(certs, cp.ca, "tls", ["localhost"], ["127.0.0.1"])
        self._write_kubeconfig()
        self.webhook_port, self.health_port, self.metrics_port = (
            free_port(), free_port(), free_port())
        self.install_crds()
        cp.kubectl("create", "namespace", NAMESPACE, check=False)
        self.config_file.write_text(json.dumps(self.configuration(certs), indent=2))
        self._spawn(certs)
        try:
            self._wait_ready(timeout)
            self.install_webhooks()
            self._wait_webhooks(timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Remove the webhook configurations (a cluster without Kueue stays usable: Jobs and
        Kueue objects are admitted again) and end the process."""
        if self.proc is None:
            return
        for kind, name in WEBHOOK_CONFIGURATIONS.items():
            self.control_plane.kubectl("delete", kind, name, "--ignore-not-found", check=False)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"kueue exited with {self.proc.returncode}; see {self.log_file}")

    # -- what is installed --------------------------------------------------------------
    @property
    def webhook_url(self) -> str:
        return f"https://127.0.0.1:{self.webhook_port}"

    def _client_config(self, path: str) -> dict[str, str]:
        ca_bundle = base64.b64encode(self.control_plane.ca_file.read_bytes()).decode()
        return {"url": self.webhook_url + path, "caBundle": ca_bundle}

    def crds(self) -> list[dict[str, Any]]:
        """Kueue's CRDs, the ones with versions to convert pointed at this process's /convert."""
        crds = []
        for path in sorted((self.manifests / "crd").glob("*.yaml")):
            for crd in _load_all(path):
                if crd["metadata"]["name"] in CONVERTED_CRDS:
                    crd["spec"]["conversion"] = {
                        "strategy": "Webhook",
                        "webhook": {"clientConfig": self._client_config("/convert"),
                                    "conversionReviewVersions": ["v1"]},
                    }
                crds.append(crd)
        return crds

    def webhook_configurations(self) -> list[dict[str, Any]]:
        """Kueue's webhook configurations with each clientConfig a URL of this process."""
        configurations = []
        for doc in _load_all(self.manifests / "webhooks.yaml"):
            webhooks = []
            for webhook in doc.get("webhooks", []):
                groups = {g for rule in webhook.get("rules", []) for g in rule["apiGroups"]}
                if not groups or not groups <= WEBHOOK_GROUPS:
                    continue
                path = webhook["clientConfig"]["service"]["path"]
                webhook["clientConfig"] = self._client_config(path)
                webhooks.append(webhook)
            doc["metadata"] = {"name": WEBHOOK_CONFIGURATIONS[doc["kind"]]}
            doc["webhooks"] = webhooks
            configurations.append(doc)
        return configurations

    def configuration(self, cert_dir: Path) -> dict[str, Any]:
        """Kueue's Configuration (config.kueue.x-k8s.io/v1beta2, apis/config/v1beta2)."""
        return {
            "apiVersion": "config.kueue.x-k8s.io/v1beta2",
            "kind": "Configuration",
            "namespace": NAMESPACE,
            "health": {"healthProbeBindAddress": f"127.0.0.1:{self.health_port}"},
            "metrics": {"bindAddress": f"127.0.0.1:{self.metrics_port}"},
            "webhook": {"host": "127.0.0.1", "port": self.webhook_port,
                        "certDir": str(cert_dir)},
            "leaderElection": {"leaderElect": False},
            "internalCertManagement": {"enable": False},
            "manageJobsWithoutQueueName": False,
            "clientConnection": {"qps": 50, "burst": 100},
            "integrations": {
                "frameworks": ["batch/job"],
                "externalFrameworks": list(self.external_frameworks),
            },
            # The visibility API server would read its certificate from /visibility and bind
            # 0.0.0.0:8082 (one per host); nothing here uses it.
            "featureGates": {"VisibilityOnDemand": False},
        }

    def install_crds(self, timeout: float = 240.0) -> None:
        cp = self.control_plane
        crds = self.crds()
        cp.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=harness",
                   "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                "items": crds}))
        # Polled, not `kubectl wait`: on a loaded machine that exits early on a slow answer.
        names = {c["metadata"]["name"] for c in crds}
        deadline = time.monotonic() + timeout
        while True:
            listed = cp.kubectl("get", "crd", "-o", "json", check=False)
            established = {
                item["metadata"]["name"] for item in
                (json.loads(listed.stdout).get("items", []) if listed.returncode == 0 else [])
                if any(c.get("type") == "Established" and c.get("status") == "True"
                       for c in (item.get("status") or {}).get("conditions") or [])}
            if names <= established:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"Kueue CRDs not Established: {sorted(names - established)} "
                                   f"({listed.stderr.strip()})")
            time.sleep(0.5)

    def install_webhooks(self) -> None:
        self.control_plane.kubectl(
            "apply", "--server-side", "--force-conflicts", "--field-manager=harness", "-f", "-",
            input=json.dumps({"apiVersion": "v1", "kind": "List",
                              "items": self.webhook_configurations()}))

    # -- queues -------------------------------------------------------------------------
    def queue(self, namespace: str, name: str, cpu: str = "4", memory: str = "8Gi",
              gpu: str | None = None, preemption: dict[str, Any] | None = None,
              cluster_queue: str | None = None, flavor: str = "default-flavor",
              queueing_strategy: str = "BestEffortFIFO") -> str:
        """A ResourceFlavor (shared, no node labels), a ClusterQueue with these nominal quotas
        (named `<namespace>-<name>` unless given) and the LocalQueue `name` in `namespace`
        pointing at it. `preemption` is the ClusterQueue's spec.preemption as Kueue takes it
        (e.g. {"withinClusterQueue": "LowerPriority"}). Returns the ClusterQueue's name."""
        cq = cluster_queue or f"{namespace}-{name}"[:63]
        quotas = {"cpu": cpu, "memory": memory}
        if gpu is not None:
            quotas["nvidia.com/gpu"] = gpu
        cq_spec: dict[str, Any] = {
            "namespaceSelector": {},
            "queueingStrategy": queueing_strategy,
            "resourceGroups": [{
                "coveredResources": list(quotas),
                "flavors": [{"name": flavor, "resources": [
                    {"name": r, "nominalQuota": q} for r, q in quotas.items()]}],
            }],
        }
        if preemption is not None:
            cq_spec["preemption"] = preemption
        items = [
            {"apiVersion": API_VERSION, "kind": "ResourceFlavor", "metadata": {"name": flavor}},
            {"apiVersion": API_VERSION, "kind": "ClusterQueue", "metadata": {"name": cq},
             "spec": cq_spec},
            {"apiVersion": API_VERSION, "kind": "LocalQueue",
             "metadata": {"name": name, "namespace": namespace}, "spec": {"clusterQueue": cq}},
        ]
        self.control_plane.kubectl("apply", "-f", "-", input=json.dumps(
            {"apiVersion": "v1", "kind": "List", "items": items}))
        self._wait_active("clusterqueue", cq)
        self._wait_active("localqueue", name, namespace)
        return cq

    def delete_queue(self, namespace: str, name: str, cluster_queue: str | None = None) -> None:
        cp = self.control_plane
        cp.kubectl("delete", "localqueue", name, "-n", namespace, "--ignore-not-found",
                   "--wait=false", check=False)
        cp.kubectl("delete", "clusterqueue", cluster_queue or f"{namespace}-{name}"[:63],
                   "--ignore-not-found", "--wait=false", check=False)

    def _wait_active(self, kind: str, name: str, namespace: str | None = None,
                     timeout: float = 30.0) -> None:
        args = ["wait", f"{kind}/{name}", "--for=condition=Active", f"--timeout={int(timeout)}s"]
        if namespace:
            args += ["-n", namespace]
        self.control_plane.kubectl(*args)

    # -- internals ----------------------------------------------------------------------
    def _write_kubeconfig(self) -> None:
        """Its own identity (a client certificate, CN kueue-controller-manager, in
        system:masters: Kueue's RBAC is not what these tests exercise)."""
        cp = self.control_plane
        client = pki.make_client_cert(self.workdir, cp.ca, "kueue-controller-manager",
                                      ("system:masters",))
        config = {
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "cogwork-test", "cluster": {
                "server": cp.server, "certificate-authority": str(cp.ca_file)}}],
            "users": [{"name": "kueue", "user": {
                "client-certificate": str(client.cert), "client-key": str(client.key)}}],
            "contexts": [{"name": "cogwork-test",
                          "context": {"cluster": "cogwork-test", "user": "kueue"}}],
            "current-context": "cogwork-test",
        }
        self.kubeconfig.write_text(json.dumps(config, indent=2))
        self.kubeconfig.chmod(0o600)

    def _spawn(self, certs: Path) -> None:
        # The fixed metrics certificate path (METRICS_CERT_DIR) gets our certificate in a
        # private mount namespace; on the host only the empty mount point is created.
        METRICS_CERT_DIR.mkdir(parents=True, exist_ok=True)
        unshare = shutil.which("unshare") or "/usr/bin/unshare"
        script = 'mount --bind "$0" "$1" && shift && exec "$@"'
        env = dict(os.environ, KUBECONFIG=str(self.kubeconfig))
        log = self.log_file.open("ab")
        self.proc = subprocess.Popen(
            [unshare, "--mount", "--propagation", "private", "--", "/bin/sh", "-c", script,
             str(certs), str(METRICS_CERT_DIR),
             str(self.binary), f"--config={self.config_file}", f"--kubeconfig={self.kubeconfig}",
             "--zap-log-level=info"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True,
        )
        log.close()

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        url = f"http://127.0.0.1:{self.health_port}/readyz"
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except urllib.error.HTTPError as err:
                last = f"{err.code}: {err.read()[-300:]!r}"
            except OSError as err:
                last = str(err)
            time.sleep(0.3)
        raise TimeoutError(f"kueue not ready in {timeout}s ({last}); see {self.log_file}")

    def _wait_webhooks(self, timeout: float) -> None:
        """Until the apiserver gets an answer from Kueue's webhooks: a server-side dry-run
        create of a ResourceFlavor passes its mutating and validating webhooks."""
        flavor = {"apiVersion": API_VERSION, "kind": "ResourceFlavor",
                  "metadata": {"name": "harness-webhook-probe"}}
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            self.check_alive()
            out = self.control_plane.kubectl("create", "--dry-run=server", "-f", "-",
                                             input=json.dumps(flavor), check=False)
            if out.returncode == 0:
                return
            last = out.stderr.strip()
            time.sleep(0.5)
        raise TimeoutError(f"kueue's webhooks did not answer in {timeout}s ({last}); "
                           f"see {self.log_file}")
