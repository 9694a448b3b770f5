"""Run the Cogwork operator as a local process under a ServiceAccount with the chart's RBAC.

`install_chart` installs charts/cogwork with the real helm (`make helm`), with no operator pod
(`replicas=0`): CRDs, RBAC, ServiceAccounts and roles are then exactly what users install, and
the operator runs here with a token of the chart's own operator ServiceAccount. Pods reach its
report endpoint through the node agent's bridge address, so the report URL points there.
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
CHART = REPO_ROOT / "charts/cogwork"
HELM = Path(os.environ.get("COGWORK_HELM_BIN", REPO_ROOT / ".build/helm"))
RELEASE = "cogwork"
# What `install_rbac` creates when there is no helm (bench/, `make demo` without `make helm`).
OPERATOR_SA = "cogwork-operator"
BRIDGE_IP = "10.244.0.1"  # the node agent's bridge: the host as seen from pods


def helm(cp: ControlPlane, workdir: Path, *args: str) -> str:
    """Run helm as the cluster admin, with its caches and config under `workdir`."""
    if not HELM.exists():
        raise FileNotFoundError(f"{HELM} is missing: build it with `make helm`")
    env = dict(os.environ)
    env.update({f"HELM_{kind}_HOME": str(workdir / kind.lower())
                for kind in ("CACHE", "CONFIG", "DATA")})
    result = subprocess.run([str(HELM), *args, f"--kubeconfig={cp.kubeconfig('admin')}"],
                            capture_output=True, text=True, env=env, timeout=180)
    if result.returncode != 0:
        raise RuntimeError(f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def install_chart(cp: ControlPlane, workdir: Path) -> str:
    """`helm install cogwork charts/cogwork -n cogwork-system --create-namespace` with no
    operator pod; returns the operator ServiceAccount the chart rendered."""
    helm(cp, workdir, "install", RELEASE, str(CHART), f"--namespace={OPERATOR_NAMESPACE}",
         "--create-namespace", "--set=replicas=0", "--wait=false")
    wait_crds_established(cp, CHART / "crds")
    manifest = helm(cp, workdir, "get", "manifest", RELEASE, f"--namespace={OPERATOR_NAMESPACE}")
    (deployment,) = [d for d in yaml.safe_load_all(manifest) if d and d["kind"] == "Deployment"]
    name: str = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    return name


def wait_crds_established(cp: ControlPlane, directory: Path) -> None:
    for path in sorted(directory.glob("*.yaml")):
        name = yaml.safe_load(path.read_text())["metadata"]["name"]
        cp.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")


def install_crds(cp: ControlPlane) -> None:
    """Without helm: apply crds/ (bench/, and `make demo` before `make helm`)."""
    for path in sorted((REPO_ROOT / "crds").glob("*.yaml")):
        cp.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    wait_crds_established(cp, REPO_ROOT / "crds")


def install_rbac(cp: ControlPlane) -> None:
    """Without helm: ServiceAccount `OPERATOR_SA` + ClusterRole from the chart's
    files/operator-rules.yaml + binding. The e2e suite uses `install_chart` instead."""
    rules = yaml.safe_load((CHART / "files/operator-rules.yaml").read_text())
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


def service_account_kubeconfig(cp: ControlPlane, path: Path,
                               service_account: str = OPERATOR_SA) -> Path:
    token = cp.kubectl("create", "token", service_account, "-n", OPERATOR_NAMESPACE,
                       "--duration=48h").stdout.strip()
    config = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": cp.server,
                                               "certificate-authority": str(cp.ca_file)}}],
        "users": [{"name": service_account, "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": service_account}}],
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
    # Whose token the operator uses: install_chart's answer, or install_rbac's account.
    service_account: str = OPERATOR_SA
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def log_file(self) -> Path:
        return self.workdir / "operator.log"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        kubeconfig = service_account_kubeconfig(self.cp, self.workdir / "operator.kubeconfig",
                                                self.service_account)
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
