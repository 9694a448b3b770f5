"""Run the Cogwork operator as a local process under a ServiceAccount with the chart's RBAC.

Pods reach the operator's report endpoint through the node agent's bridge address, so the
report URL points there; everything else is what the chart installs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .controlplane import REPO_ROOT, ControlPlane, free_port

OPERATOR_NAMESPACE = "cogwork-system"
OPERATOR_SA = "cogwork-operator"
BRIDGE_IP = "10.244.0.1"  # the node agent's bridge: the host as seen from pods


def install_crds(cp: ControlPlane) -> None:
    for path in sorted((REPO_ROOT / "crds").glob("*.yaml")):
        cp.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    for path in sorted((REPO_ROOT / "crds").glob("*.yaml")):
        name = yaml.safe_load(path.read_text())["metadata"]["name"]
        cp.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")


def install_rbac(cp: ControlPlane) -> None:
    """ServiceAccount + ClusterRole from charts/cogwork/files/operator-rules.yaml + binding."""
    rules = yaml.safe_load((REPO_ROOT / "charts/cogwork/files/operator-rules.yaml").read_text())
    docs = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}},
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": OPERATOR_SA, "namespace": OPERATOR_NAMESPACE}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "cogwork-operator"}, "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "cogwork-operator"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "cogwork-operator"},
         "subjects": [{"kind": "ServiceAccount", "name": OPERATOR_SA,
                       "namespace": OPERATOR_NAMESPACE}]},
    ]
    cp.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                      "items": docs}))


def service_account_kubeconfig(cp: ControlPlane, path: Path) -> Path:
    token = cp.kubectl("create", "token", OPERATOR_SA, "-n", OPERATOR_NAMESPACE,
                       "--duration=48h").stdout.strip()
    config = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": cp.server,
                                               "certificate-authority": str(cp.ca_file)}}],
        "users": [{"name": OPERATOR_SA, "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": OPERATOR_SA}}],
        "current-context": "c",
    }
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path


@dataclass
class Operator:
    """The operator process; `restart()` kills it hard and starts it again."""

    cp: ControlPlane
    workdir: Path
    port: int = field(default_factory=free_port)
    health_port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def log_file(self) -> Path:
        return self.workdir / "operator.log"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        kubeconfig = service_account_kubeconfig(self.cp, self.workdir / "operator.kubeconfig")
        env = dict(os.environ)
        env.update({
            "KUBECONFIG": str(kubeconfig),
            "COGWORK_REPORT_URL": f"https://{BRIDGE_IP}:{self.port}",
            "COGWORK_REPORT_LISTEN": f"0.0.0.0:{self.port}",
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        })
        env.pop("KUBERNETES_SERVICE_HOST", None)
        log = self.log_file.open("ab")
        self.starts += 1
        log.write(f"\n===== operator start #{self.starts} =====\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cogwork.cli", "operator",
             f"--liveness=http://127.0.0.1:{self.health_port}/healthz"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True,
        )
        self._wait_healthy()

    def _wait_healthy(self, timeout: float = 60) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc and self.proc.poll() is not None:
                raise RuntimeError(f"operator exited; see {self.log_file}")
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.health_port}/healthz", timeout=2
                ):
                    return
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"operator not healthy; see {self.log_file}")

    def stop(self, hard: bool = False) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if hard else signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop(hard=True)
        self.start()
