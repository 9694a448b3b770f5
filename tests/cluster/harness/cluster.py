"""A control plane plus a node agent: the whole local cluster used by tests and `make cluster`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import pki
from .controlplane import REPO_ROOT, ControlPlane
from .images import image_args
from .nodeagent.network import BRIDGE_IP


@dataclass
class Cluster:
    workdir: Path
    nodes: int = 3
    gpus_per_node: int = 0
    control_plane: ControlPlane = field(init=False)
    agent: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.control_plane = ControlPlane(self.workdir)

    @property
    def node_names(self) -> list[str]:
        return [f"node-{i}" for i in range(self.nodes)]

    def start(self, timeout: float = 120.0) -> None:
        self.control_plane.start()
        self.start_agent()
        self.wait_nodes_ready(timeout)

    def start_agent(self) -> None:
        log = (self.control_plane.log_dir / "nodeagent.log").open("ab")
        cp = self.control_plane
        # The agent's kubelet endpoint (kubectl logs): the apiserver dials the Node's InternalIP.
        serving = pki.make_serving_cert(cp.pki_dir, cp.ca, "nodeagent",
                                        ["localhost", *self.node_names], [BRIDGE_IP, "127.0.0.1"])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")]
        )
        self.agent = subprocess.Popen(
            [
                sys.executable, "-m", "harness.nodeagent",
                "--kubeconfig", str(self.control_plane.kubeconfig("admin")),
                "--workdir", str(self.workdir / "agent"),
                "--nodes", ",".join(self.node_names),
                "--gpus", str(self.gpus_per_node),
                # Images not in image_args() run with this Python environment's tools.
                "--path-prefix", str(Path(sys.executable).parent),
                "--tls-cert-file", str(serving.cert),
                "--tls-private-key-file", str(serving.key),
                "--client-ca-file", str(cp.ca_file),
                "--authorized-client", pki.KUBELET_CLIENT_CN,
                *image_args(),
            ],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True,
        )

    def stop(self) -> None:
        if self.agent and self.agent.poll() is None:
            self.agent.send_signal(signal.SIGTERM)
            try:
                self.agent.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.agent.kill()
        self.control_plane.stop()

    def kubectl(self, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
        return self.control_plane.kubectl(*args, **kw)  # type: ignore[arg-type]

    def kubectl_json(self, *args: str, user: str = "admin") -> dict[str, object]:
        out = self.control_plane.kubectl(*args, "-o", "json", user=user).stdout
        return json.loads(out)  # type: ignore[no-any-return]

    def wait_nodes_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.control_plane.check_alive()
            if self.agent and self.agent.poll() is not None:
                raise RuntimeError(f"node agent exited; see {self.control_plane.log_dir}")
            nodes = self.kubectl_json("get", "nodes").get("items", [])
            ready = [
                n for n in nodes  # type: ignore[union-attr]
                if any(c["type"] == "Ready" and c["status"] == "True"
                       for c in n.get("status", {}).get("conditions", []))
            ]
            if len(ready) >= self.nodes:
                return
            time.sleep(0.5)
        raise TimeoutError("nodes not Ready")

    def create_namespace(self, name: str, labels: dict[str, str] | None = None) -> None:
        self.kubectl("create", "namespace", name)
        if labels:
            self.kubectl("label", "namespace", name, *[f"{k}={v}" for k, v in labels.items()])
        # Pods need the namespace's default ServiceAccount (serviceaccount controller).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0:
                return
            time.sleep(0.2)
        raise TimeoutError(f"default ServiceAccount never appeared in {name}")

    def pod_log(self, namespace: str, pod: str, container: str | None = None) -> str:
        """Every run's output as the node agent wrote it, straight from its files (also after
        the pod is gone; `kubectl logs` shows the current run of a pod that still exists)."""
        root = self.workdir / "agent" / "logs"
        pattern = f"{namespace}_{pod}_*/{container or '*'}.log"
        return "\n".join(p.read_text(errors="replace") for p in sorted(root.glob(pattern)))


def repo_root() -> Path:
    return REPO_ROOT
