"""Start a real Kubernetes control plane (etcd, kube-apiserver, controller-manager, scheduler)
as local processes on loopback, from the `kubecluster` binary built from tests/cluster/."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from . import pki

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_BINARY = REPO_ROOT / ".build" / "kubecluster"
KUBERNETES_VERSION = "v1.36.3"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def binary_path() -> Path:
    return Path(os.environ.get("COGWORK_KUBECLUSTER_BIN", DEFAULT_BINARY))


@dataclass
class User:
    name: str
    token: str
    groups: tuple[str, ...] = ()


@dataclass
class ControlPlane:
    """One control plane in `workdir`. `start()` returns when the apiserver is ready."""

    workdir: Path
    binary: Path = field(default_factory=binary_path)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    users: dict[str, User] = field(default_factory=dict)
    port: int = 0

    # -- paths --------------------------------------------------------------------------
    @property
    def pki_dir(self) -> Path:
        return self.workdir / "pki"

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"

    @property
    def ca_file(self) -> Path:
        return self.pki_dir / "cogwork-test-ca.crt"

    @property
    def ca(self) -> pki.CertPair:
        return pki.CertPair(self.ca_file, self.pki_dir / "cogwork-test-ca.key")

    @property
    def kubelet_client(self) -> pki.CertPair:
        """The client certificate the apiserver presents to the node agent (pods/log)."""
        return pki.CertPair(self.pki_dir / f"{pki.KUBELET_CLIENT_CN}.crt",
                            self.pki_dir / f"{pki.KUBELET_CLIENT_CN}.key")

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def kubeconfig(self, user: str = "admin") -> Path:
        return self.workdir / f"{user}.kubeconfig"

    # -- lifecycle ----------------------------------------------------------------------
    def start(self, timeout: float = 90.0) -> None:
        if not self.binary.exists():
            raise FileNotFoundError(
                f"{self.binary} is missing: build it with `make cluster-binary`"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pki_dir.mkdir(exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        ca = pki.make_ca(self.pki_dir)
        serving = pki.make_serving_cert(
            self.pki_dir, ca, "kube-apiserver",
            ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
             "kubernetes.default.svc.cluster.local"],
            ["127.0.0.1", "10.96.0.1"],
        )
        sa = pki.make_service_account_keys(self.pki_dir)
        kubelet_client = pki.make_client_cert(self.pki_dir, ca, pki.KUBELET_CLIENT_CN)
        self._make_users()
        token_file = self.pki_dir / "tokens.csv"
        token_file.write_text(
            "".join(
                f'{u.token},{u.name},{u.name},"{",".join(u.groups)}"\n' for u in self.users.values()
            )
        )
        token_file.chmod(0o600)

        etcd_port, peer_port = free_port(), free_port()
        self.port = free_port()
        self._spawn(
            "etcd",
            "--data-dir", str(self.workdir / "etcd"),
            "--listen-client-url", f"http://127.0.0.1:{etcd_port}",
            "--listen-peer-url", f"http://127.0.0.1:{peer_port}",
        )
        self._spawn(
            "apiserver",
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.port}",
            f"--cert-dir={self.pki_dir / 'apiserver'}",
            f"--tls-cert-file={serving.cert}",
            f"--tls-private-key-file={serving.key}",
            f"--client-ca-file={ca.cert}",
            f"--token-auth-file={token_file}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={sa.cert}",
            f"--service-account-signing-key-file={sa.key}",
            # pods/log (kubectl logs) is proxied to the node agent's kubelet endpoint over
            # mutual TLS: our client cert, its serving cert checked against the harness CA, at
            # the Node's InternalIP (its Hostname need not resolve).
            f"--kubelet-client-certificate={kubelet_client.cert}",
            f"--kubelet-client-key={kubelet_client.key}",
            f"--kubelet-certificate-authority={ca.cert}",
            "--kubelet-preferred-address-types=InternalIP",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--authorization-mode=RBAC",
            "--endpoint-reconciler-type=none",
            # End open watches at shutdown; otherwise SIGTERM waits the full 60s request timeout.
            "--shutdown-watch-termination-grace-period=2s",
            "--allow-privileged=true",
            "--profiling=false",
            "--v=1",
        )
        self._wait_ready(timeout)
        for component in ("controller-manager", "scheduler"):
            self._write_kubeconfig(self.kubeconfig(component), self.users[component])
        self._spawn(
            "controller-manager",
            f"--kubeconfig={self.kubeconfig('controller-manager')}",
            f"--authentication-kubeconfig={self.kubeconfig('controller-manager')}",
            f"--authorization-kubeconfig={self.kubeconfig('controller-manager')}",
            "--secure-port=0",
            "--leader-elect=false",
            "--use-service-account-credentials=true",
            f"--root-ca-file={ca.cert}",
            f"--service-account-private-key-file={sa.key}",
            # The node agent is the kubelet; node health is not what these tests exercise.
            "--controllers=*,-node-lifecycle-controller",
            "--v=1",
        )
        self._spawn(
            "scheduler",
            f"--kubeconfig={self.kubeconfig('scheduler')}",
            f"--authentication-kubeconfig={self.kubeconfig('scheduler')}",
            f"--authorization-kubeconfig={self.kubeconfig('scheduler')}",
            "--secure-port=0",
            "--leader-elect=false",
            "--v=1",
        )
        for user in ("admin", "alice"):
            self._write_kubeconfig(self.kubeconfig(user), self.users[user])

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()

    def restart_apiserver(self) -> None:
        """Kill and re-run kube-apiserver with the same flags (for reconnect tests)."""
        proc = self.procs["apiserver"]
        args = proc.args
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        self.procs["apiserver"] = self._popen("apiserver", list(args))  # type: ignore[arg-type]
        self._wait_ready(90)

    def check_alive(self) -> None:
        dead = {name: p.returncode for name, p in self.procs.items() if p.poll() is not None}
        if dead:
            raise RuntimeError(f"control plane component(s) exited: {dead}; logs in {self.log_dir}")

    # -- clients ------------------------------------------------------------------------
    def kubectl(
        self, *args: str, user: str = "admin", check: bool = True, input: str | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.binary), "kubectl", f"--kubeconfig={self.kubeconfig(user)}", *args],
            check=check, capture_output=True, text=True, input=input, timeout=timeout,
        )

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def get(self, path: str, user: str = "admin") -> tuple[int, bytes]:
        req = urllib.request.Request(
            self.server + path, headers={"Authorization": f"Bearer {self.users[user].token}"}
        )
        try:
            with urllib.request.urlopen(req, context=self.ssl_context(), timeout=5) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    # -- internals ----------------------------------------------------------------------
    def _make_users(self) -> None:
        for user in (
            User("admin", secrets.token_hex(16), ("system:masters",)),
            User("alice", secrets.token_hex(16)),  # authenticated, no grants
            User("controller-manager", secrets.token_hex(16)),
            User("scheduler", secrets.token_hex(16)),
        ):
            self.users[user.name] = user
        # Default RBAC binds the built-in roles to these exact user names.
        self.users["controller-manager"].name = "system:kube-controller-manager"
        self.users["scheduler"].name = "system:kube-scheduler"

    def _write_kubeconfig(self, path: Path, user: User) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "cogwork-test",
                 "cluster": {"server": self.server, "certificate-authority": str(self.ca_file)}}
            ],
            "users": [{"name": user.name, "user": {"token": user.token}}],
            "contexts": [
                {"name": "cogwork-test", "context": {"cluster": "cogwork-test", "user": user.name}}
            ],
            "current-context": "cogwork-test",
        }
        path.write_text(json.dumps(config, indent=2))
        path.chmod(0o600)

    def _popen(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}.log").open("ab")
        return subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _spawn(self, name: str, *flags: str) -> None:
        self.procs[name] = self._popen(name, [str(self.binary), name, *flags])

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                status, body = self.get("/readyz")
                if status == 200:
                    return
                last = f"{status}: {body[-300:]!r}"
            except OSError as err:
                last = str(err)
            time.sleep(0.3)
        raise TimeoutError(f"kube-apiserver not ready in {timeout}s ({last}); see {self.log_dir}")
