"""The node agent (harness/nodeagent) runs real pods for the real control plane: exit codes,
pod-to-pod TCP by headless-service names across network namespaces, no orphan processes after
deletion, TokenRequest-minted tokens that TokenReview accepts, live downwardAPI files, shared
PVC directories, `kubectl logs` through the apiserver, and watch recovery after an apiserver
restart."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from harness import pki
from harness.cluster import Cluster
from harness.images import BARE_IMAGE
from kubernetes import client, config

pytestmark = [
    pytest.mark.cluster,
    # kubernetes 36's rest.py calls urllib3's deprecated getheader(): not ours to fix.
    pytest.mark.filterwarnings("ignore:HTTPResponse.getheader:DeprecationWarning"),
]

Obj = dict[str, Any]


# -- helpers --------------------------------------------------------------------------------
def wait_for(what: str, fn: Callable[[], Any], timeout: float = 60, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def apply(cluster: Cluster, ns: str, *objs: Obj) -> None:
    manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objs)})
    cluster.kubectl("create", "-n", ns, "-f", "-", input=manifest)


def get_pod(cluster: Cluster, ns: str, name: str) -> Obj | None:
    out = cluster.kubectl("get", "pod", name, "-n", ns, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else None


def pod(name: str, command: list[str], restart: str = "Never", **spec: Any) -> Obj:
    container = {"name": "main", "image": "cogwork/none", "command": command,
                 **spec.pop("container", {})}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, **spec.pop("meta", {})},
            "spec": {"restartPolicy": restart, "terminationGracePeriodSeconds": 5,
                     "containers": [container], **spec}}


def wait_phase(cluster: Cluster, ns: str, name: str, *phases: str, timeout: float = 60) -> Obj:
    def check() -> Obj | None:
        p = get_pod(cluster, ns, name)
        return p if p and p.get("status", {}).get("phase") in phases else None

    try:
        return wait_for(f"pod {name} in {phases}", check, timeout)  # type: ignore[no-any-return]
    except AssertionError:
        print(cluster.pod_log(ns, name))
        raise


def api_client(cluster: Cluster) -> client.ApiClient:
    cfg = client.Configuration()
    config.load_kube_config(str(cluster.control_plane.kubeconfig("admin")),
                            client_configuration=cfg)
    # kubernetes 36.0.0's loader keeps the token where auth_settings() does not look.
    cfg.api_key.setdefault("BearerToken", cfg.api_key.get("authorization", ""))
    return client.ApiClient(cfg)


def marked_pids(marker: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    pids.append(int(entry))
            except OSError:
                pass
    return pids


# -- tests ----------------------------------------------------------------------------------
def test_exit_codes_set_phase_and_container_status(cluster: Cluster, namespace: str) -> None:
    apply(cluster, namespace,
          pod("ok", ["sh", "-c", "echo done"]),
          pod("fails", ["python", "-c", "import sys; sys.exit(3)"]))
    ok = wait_phase(cluster, namespace, "ok", "Succeeded", "Failed")
    assert ok["status"]["phase"] == "Succeeded"
    term = ok["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (term["exitCode"], term["reason"]) == (0, "Completed")
    assert ok["status"]["podIP"].startswith("10.244.")
    assert "done" in cluster.pod_log(namespace, "ok", "main")

    failed = wait_phase(cluster, namespace, "fails", "Succeeded", "Failed")
    assert failed["status"]["phase"] == "Failed"
    term = failed["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (term["exitCode"], term["reason"]) == (3, "Error")


def test_bare_image_has_torch_and_user_code_but_nothing_of_cogwork(cluster: Cluster,
                                                                  namespace: str) -> None:
    """An image name picks the environment: in the bare image torch, numpy and the user's code
    (at /workspace, the working directory) are there, cogwork/cogwork_trainer/kopf are not."""
    probe = ("import importlib.util as u, os, torch, numpy; "
             "print('cwd', os.getcwd(), 'script', os.path.exists('train_ddp.py')); "
             "print('missing', [m for m in ('cogwork', 'cogwork_trainer', 'kopf') "
             "if u.find_spec(m) is None])")
    default_probe = ("import importlib.util as u; "
                     "print('found', u.find_spec('cogwork_trainer') is not None)")
    apply(cluster, namespace,
          pod("bare", ["python", "-c", probe], container={"image": BARE_IMAGE}),
          pod("default", ["python", "-c", default_probe]))
    wait_phase(cluster, namespace, "bare", "Succeeded")
    wait_phase(cluster, namespace, "default", "Succeeded")
    bare_log = cluster.pod_log(namespace, "bare")
    assert "cwd /workspace script True" in bare_log
    assert "missing ['cogwork', 'cogwork_trainer', 'kopf']" in bare_log
    assert "found True" in cluster.pod_log(namespace, "default")


def test_restart_on_failure_counts_restarts(cluster: Cluster, namespace: str) -> None:
    # Fails on the first run, succeeds on the second (state kept in an emptyDir).
    script = "test -f /scratch/once && exit 0; touch /scratch/once; exit 1"
    apply(cluster, namespace, pod(
        "flaky", ["sh", "-c", script], restart="OnFailure",
        container={"volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]},
        volumes=[{"name": "scratch", "emptyDir": {}}]))
    done = wait_phase(cluster, namespace, "flaky", "Succeeded", "Failed")
    status = done["status"]["containerStatuses"][0]
    assert done["status"]["phase"] == "Succeeded"
    assert status["restartCount"] == 1
    assert status["lastState"]["terminated"]["exitCode"] == 1


def test_headless_service_names_reach_across_netns(cluster: Cluster, namespace: str) -> None:
    server = """
import socket
srv = socket.create_server(("0.0.0.0", 7000))
conn, peer = srv.accept()
data = conn.recv(1024)
conn.sendall(b"echo:" + data)
print("served", peer[0], flush=True)
"""
    # The client may start before the server has an IP: names appear in its hosts file as
    # soon as the server pod is set up, so resolving is retried like connecting.
    client_code = f"""
import socket, time
target = "server.workers.{namespace}.svc"
deadline = time.time() + 30
while True:
    try:
        s = socket.create_connection((target, 7000), timeout=2)
        break
    except OSError:
        if time.time() > deadline:
            raise
        time.sleep(0.2)
for name in (target, "workers"):
    print(name, "->", socket.gethostbyname(name), flush=True)
s.sendall(b"hello")
reply = s.recv(1024)
print("reply", reply.decode(), "from", s.getsockname()[0], flush=True)
assert reply == b"echo:hello", reply
"""
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "workers"},
               "spec": {"clusterIP": "None", "publishNotReadyAddresses": True,
                        "selector": {"app": "echo"}, "ports": [{"port": 7000}]}}
    # Client first: its hosts file learns the server's name while it is already running.
    apply(cluster, namespace, service, pod("client", ["python", "-c", client_code]))
    wait_phase(cluster, namespace, "client", "Running", "Succeeded", "Failed")
    apply(cluster, namespace,
          pod("server", ["python", "-c", server], meta={"labels": {"app": "echo"}},
              hostname="server", subdomain="workers"))
    client_pod = wait_phase(cluster, namespace, "client", "Succeeded", "Failed")
    server_pod = wait_phase(cluster, namespace, "server", "Succeeded", "Failed")
    log = cluster.pod_log(namespace, "client")
    assert client_pod["status"]["phase"] == "Succeeded", log
    assert server_pod["status"]["phase"] == "Succeeded", cluster.pod_log(namespace, "server")
    server_ip, client_ip = server_pod["status"]["podIP"], client_pod["status"]["podIP"]
    assert server_ip != client_ip
    assert f"server.workers.{namespace}.svc -> {server_ip}" in log
    assert f"workers -> {server_ip}" in log
    assert f"reply echo:hello from {client_ip}" in log
    assert f"served {client_ip}" in cluster.pod_log(namespace, "server")


@pytest.mark.parametrize("force", [False, True], ids=["graceful", "force"])
def test_delete_kills_every_process(cluster: Cluster, namespace: str, force: bool) -> None:
    marker = f"cogwork-orphan-{uuid.uuid4().hex}"
    # Both ignore SIGTERM and the grandchild starts its own session: after the grace period
    # only cgroup.kill gets them.
    stubborn = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "time.sleep(3600)")
    command = ["sh", "-c", f"setsid python -c '{stubborn}' {marker}-grandchild & "
                           f"exec python -c '{stubborn}' {marker}-main"]
    apply(cluster, namespace, pod("victim", command))
    uid = wait_phase(cluster, namespace, "victim", "Running")["metadata"]["uid"]
    pids = wait_for("both processes", lambda: len(marked_pids(marker)) == 2 and
                    marked_pids(marker))
    args = ["--grace-period=0", "--force"] if force else ["--grace-period=2"]
    t0 = time.monotonic()
    cluster.kubectl("delete", "pod", "victim", "-n", namespace, "--wait=false", *args)
    wait_for("processes gone", lambda: not marked_pids(marker), timeout=40)
    elapsed = time.monotonic() - t0
    assert force or elapsed >= 1.5, f"grace period not honoured ({elapsed:.1f}s)"
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or marker.encode() not in \
            Path(f"/proc/{pid}/cmdline").read_bytes()
    wait_for("pod object gone", lambda: get_pod(cluster, namespace, "victim") is None, 40)
    print(f"processes gone {elapsed:.1f}s, pod {time.monotonic() - t0:.1f}s after delete")
    cgroup = Path("/sys/fs/cgroup/unified/cogwork") / uid
    wait_for("pod cgroup removed", lambda: not cgroup.exists(), timeout=10)


def test_projected_token_passes_token_review(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("create", "serviceaccount", "trainer", "-n", namespace)
    show = ("for f in /var/run/custom/token /var/run/secrets/kubernetes.io/serviceaccount/token;"
            " do echo \"TOKEN $f $(cat $f)\"; done; "
            "echo NS $(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace); "
            "grep -c 'BEGIN CERTIFICATE' /var/run/secrets/kubernetes.io/serviceaccount/ca.crt")
    volume = {"name": "custom", "projected": {"sources": [{"serviceAccountToken": {
        "audience": "cogwork-test", "expirationSeconds": 600, "path": "token"}}]}}
    apply(cluster, namespace, pod(
        "tokens", ["sh", "-c", show], serviceAccountName="trainer", volumes=[volume],
        container={"volumeMounts": [{"name": "custom", "mountPath": "/var/run/custom"}]}))
    done = wait_phase(cluster, namespace, "tokens", "Succeeded", "Failed")
    log = cluster.pod_log(namespace, "tokens")
    assert done["status"]["phase"] == "Succeeded", log
    assert f"NS {namespace}" in log
    tokens = {line.split()[1]: line.split()[2] for line in log.splitlines()
              if line.startswith("TOKEN ")}
    auth = client.AuthenticationV1Api(api_client(cluster))
    for path, audiences in (("/var/run/custom/token", ["cogwork-test"]),
                            ("/var/run/secrets/kubernetes.io/serviceaccount/token", None)):
        review = auth.create_token_review(client.V1TokenReview(
            spec=client.V1TokenReviewSpec(token=tokens[path], audiences=audiences)))
        assert review.status.authenticated, (path, review.status.error)
        assert review.status.user.username == f"system:serviceaccount:{namespace}:trainer"
        assert review.status.user.extra["authentication.kubernetes.io/pod-name"] == ["tokens"]
    # The custom audience is really bound: the apiserver's own audience rejects it.
    wrong = auth.create_token_review(client.V1TokenReview(
        spec=client.V1TokenReviewSpec(token=tokens["/var/run/custom/token"])))
    assert not wrong.status.authenticated


def test_downward_api_annotations_follow_kubectl_annotate(cluster: Cluster,
                                                          namespace: str) -> None:
    watcher = """
import time
deadline = time.time() + 60
while time.time() < deadline:
    text = open("/etc/podinfo/annotations").read()
    if "cogwork.dev/step=" in text:
        print("SEEN", repr(text), flush=True)
        break
    time.sleep(0.1)
else:
    raise SystemExit("annotation never appeared")
"""
    volume = {"name": "podinfo", "downwardAPI": {"items": [
        {"path": "annotations", "fieldRef": {"fieldPath": "metadata.annotations"}},
        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}}
    apply(cluster, namespace, pod(
        "watcher", ["python", "-c", watcher], volumes=[volume],
        meta={"labels": {"app": "w"}, "annotations": {"a": "1"}},
        container={"volumeMounts": [{"name": "podinfo", "mountPath": "/etc/podinfo"}]}))
    wait_phase(cluster, namespace, "watcher", "Running")
    t0 = time.monotonic()
    cluster.kubectl("annotate", "pod", "watcher", "-n", namespace, 'cogwork.dev/step=4 "two"')
    done = wait_phase(cluster, namespace, "watcher", "Succeeded", "Failed", timeout=30)
    log = cluster.pod_log(namespace, "watcher")
    assert done["status"]["phase"] == "Succeeded", log
    # kubelet format: sorted key="value" lines, Go %q quoting, no trailing newline.
    assert "SEEN 'a=\"1\"\\ncogwork.dev/step=\"4 \\\\\"two\\\\\"\"'" in log, log
    print(f"annotation visible in the pod after {time.monotonic() - t0:.1f}s")


def test_pvc_directory_is_shared_between_pods(cluster: Cluster, namespace: str) -> None:
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "ckpt"},
             "spec": {"accessModes": ["ReadWriteOnce"],
                      "resources": {"requests": {"storage": "1Gi"}}}}
    mount = {"volumeMounts": [{"name": "data", "mountPath": "/checkpoints"}]}
    volumes = [{"name": "data", "persistentVolumeClaim": {"claimName": "ckpt"}}]
    apply(cluster, namespace, claim, pod(
        "writer", ["sh", "-c", "echo step-7 > /checkpoints/latest"], container=mount,
        volumes=volumes, nodeSelector={"kubernetes.io/hostname": cluster.node_names[0]}))
    writer = wait_phase(cluster, namespace, "writer", "Succeeded", "Failed")
    assert writer["status"]["phase"] == "Succeeded", cluster.pod_log(namespace, "writer")
    apply(cluster, namespace, pod(
        "reader", ["sh", "-c", "cat /checkpoints/latest"], container=mount, volumes=volumes,
        nodeSelector={"kubernetes.io/hostname": cluster.node_names[-1]}))
    reader = wait_phase(cluster, namespace, "reader", "Succeeded", "Failed")
    assert reader["status"]["phase"] == "Succeeded"
    assert reader["spec"]["nodeName"] != writer["spec"]["nodeName"] or len(cluster.node_names) == 1
    assert "step-7" in cluster.pod_log(namespace, "reader")
    pvc = cluster.kubectl_json("get", "pvc", "ckpt", "-n", namespace)
    pv = cluster.kubectl_json("get", "pv", pvc["spec"]["volumeName"])  # type: ignore[index]
    assert pvc["status"]["phase"] == "Bound"  # type: ignore[index]
    assert Path(pv["spec"]["hostPath"]["path"]).is_relative_to(cluster.workdir)  # type: ignore[index]


def test_env_config_and_volumes(cluster: Cluster, namespace: str) -> None:
    cluster.kubectl("create", "configmap", "settings", "-n", namespace, "--from-literal=mode=fast")
    cluster.kubectl("create", "secret", "generic", "creds", "-n", namespace,
                    "--from-literal=password=s3cret")
    show = ('echo "NAME=$MY_NAME IP=$MY_IP NODE=$MY_NODE MODE=$MODE PW=$PW X=$DERIVED"; '
            "echo CFG=$(cat /cfg/mode) SEC=$(cat /sec/pw) PWD=$(pwd) HOST=$(hostname)")
    env = [
        {"name": "MY_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "MY_NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
        {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
        {"name": "DERIVED", "value": "$(MY_NAME)-$(MODE)"},
    ]
    apply(cluster, namespace, pod(
        "envs", ["sh", "-c", show],
        container={"env": env, "workingDir": "/cfg", "volumeMounts": [
            {"name": "cfg", "mountPath": "/cfg"}, {"name": "sec", "mountPath": "/sec"}]},
        volumes=[{"name": "cfg", "configMap": {"name": "settings"}},
                 {"name": "sec", "secret": {"secretName": "creds",
                                            "items": [{"key": "password", "path": "pw"}]}}]))
    done = wait_phase(cluster, namespace, "envs", "Succeeded", "Failed")
    log = cluster.pod_log(namespace, "envs")
    assert done["status"]["phase"] == "Succeeded", log
    ip, node = done["status"]["podIP"], done["spec"]["nodeName"]
    assert f"NAME=envs IP={ip} NODE={node} MODE=fast PW=s3cret X=envs-fast" in log
    assert "CFG=fast SEC=s3cret PWD=/cfg HOST=envs" in log


def kubelet_get(cluster: Cluster, node: str, path: str,
                cert: pki.CertPair | None) -> tuple[int, str]:
    """GET on the node agent's kubelet endpoint, as the apiserver does (or with another cert)."""
    status = cluster.kubectl_json("get", "node", node)["status"]
    address = next(a["address"] for a in status["addresses"]  # type: ignore[index]
                   if a["type"] == "InternalIP")
    port = status["daemonEndpoints"]["kubeletEndpoint"]["Port"]  # type: ignore[index]
    tls = ssl.create_default_context(cafile=str(cluster.control_plane.ca_file))
    if cert is not None:
        tls.load_cert_chain(str(cert.cert), str(cert.key))
    try:
        with urllib.request.urlopen(f"https://{address}:{port}{path}", context=tls,
                                    timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_kubectl_logs(cluster: Cluster, namespace: str) -> None:
    """kubectl logs, through the apiserver's pods/log proxy to the agent's containerLogs over
    mutual TLS: current output, --tail, --limit-bytes, -f until the container exits, -c for
    an init container, --previous after a restart, and clear errors."""
    speaker = ("for i in $(seq 1 5); do echo line-$i; done; echo to-stderr >&2; "
               "sleep 1; echo after-follow; sleep 1")
    restarter = ("test -f /scratch/ran && { echo second-run; sleep 3600; }; "
                 "touch /scratch/ran; echo first-run; exit 1")
    apply(cluster, namespace,
          pod("speaker", ["sh", "-c", f"echo hello-from-speaker; {speaker}; sleep 3600"],
              initContainers=[{"name": "prepare", "image": "cogwork/none",
                               "command": ["sh", "-c", "echo init-done"]}]),
          pod("restarter", ["sh", "-c", restarter], restart="Always",
              container={"volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]},
              volumes=[{"name": "scratch", "emptyDir": {}}]))
    wait_phase(cluster, namespace, "speaker", "Running")

    def logs(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return cluster.kubectl("logs", "-n", namespace, *args, check=check)

    full = wait_for("all five lines", lambda: "line-5" in (out := logs("speaker").stdout)
                    and out)
    assert full.splitlines()[:6] == ["hello-from-speaker", *[f"line-{i}" for i in range(1, 6)]]
    assert "to-stderr" in full  # stdout and stderr, interleaved as written
    wait_for("the last line", lambda: "after-follow" in logs("speaker").stdout, timeout=10)
    assert logs("speaker", "--tail=2").stdout == "to-stderr\nafter-follow\n"
    assert logs("speaker", "--tail=0").stdout == ""
    assert logs("speaker", "--limit-bytes=5").stdout == "hello"
    assert logs("speaker", "-c", "prepare").stdout == "init-done\n"

    unknown = logs("speaker", "-c", "nope", check=False)
    assert unknown.returncode != 0
    assert 'container nope is not valid for pod speaker' in unknown.stderr, unknown.stderr
    missing = logs("no-such-pod", check=False)
    assert missing.returncode != 0 and 'pods "no-such-pod" not found' in missing.stderr

    # --previous: the run before the restart; the current run is the second one.
    wait_for("the second run", lambda: "second-run" in logs("restarter", check=False).stdout)
    assert logs("restarter").stdout == "second-run\n"
    assert logs("restarter", "--previous").stdout == "first-run\n"
    no_previous = logs("speaker", "--previous", check=False)
    assert no_previous.returncode != 0
    assert 'previous terminated container "main" in pod "speaker" not found' in \
        no_previous.stderr, no_previous.stderr

    # -f streams what the container writes and ends when it exits.
    apply(cluster, namespace, pod("ticker", ["sh", "-c", "echo tick-0; sleep 2; echo tick-1; "
                                                         "sleep 1; echo tick-2"]))
    wait_phase(cluster, namespace, "ticker", "Running", "Succeeded")
    got: list[str] = []
    follower = subprocess.Popen(
        [str(cluster.control_plane.binary), "kubectl",
         f"--kubeconfig={cluster.control_plane.kubeconfig('admin')}",
         "logs", "-f", "-n", namespace, "ticker"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reader = threading.Thread(target=lambda: got.extend(follower.stdout or []), daemon=True)
    reader.start()
    try:
        wait_for("tick-0 while the pod runs", lambda: "tick-0\n" in got, timeout=15)
        assert "tick-2\n" not in got  # streamed, not read after the fact
        assert follower.wait(timeout=30) == 0, follower.stderr.read()  # type: ignore[union-attr]
    finally:
        if follower.poll() is None:
            follower.kill()
    reader.join(5)
    assert got == ["tick-0\n", "tick-1\n", "tick-2\n"]

    # The agent's endpoint itself: only the apiserver's client certificate gets in.
    node = (get_pod(cluster, namespace, "speaker") or {})["spec"]["nodeName"]
    path = f"/containerLogs/{namespace}/speaker/main?tailLines=1"
    kubelet_client = cluster.control_plane.kubelet_client
    assert kubelet_get(cluster, node, path, kubelet_client) == (200, "after-follow\n")
    assert kubelet_get(cluster, node, f"/containerLogs/{namespace}/speaker/nope",
                       kubelet_client)[0] == 404
    assert kubelet_get(cluster, node, f"/containerLogs/{namespace}/ghost/main",
                       kubelet_client)[0] == 404
    with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionResetError)):
        kubelet_get(cluster, node, path, None)  # no client certificate: handshake refused
    other = pki.make_client_cert(cluster.workdir, cluster.control_plane.ca, "someone-else")
    status, body = kubelet_get(cluster, node, path, other)
    assert status == 403 and "user=someone-else" in body


def test_agent_survives_apiserver_restart(cluster: Cluster, namespace: str) -> None:
    apply(cluster, namespace, pod("before", ["sleep", "3600"]))
    wait_phase(cluster, namespace, "before", "Running")
    cluster.control_plane.restart_apiserver()
    apply(cluster, namespace, pod("after", ["sh", "-c", "echo after-restart"]))
    done = wait_phase(cluster, namespace, "after", "Succeeded", "Failed", timeout=60)
    assert done["status"]["phase"] == "Succeeded"
    cluster.kubectl("delete", "pod", "before", "-n", namespace, "--grace-period=1")
    assert get_pod(cluster, namespace, "before") is None
    nodes = cluster.kubectl_json("get", "nodes")["items"]
    assert all(any(c["type"] == "Ready" and c["status"] == "True"
                   for c in n["status"]["conditions"]) for n in nodes)  # type: ignore[union-attr]


# -- pure pieces (no cluster) -----------------------------------------------------------------
def test_log_tail_and_limits(tmp_path: Path) -> None:
    from harness.nodeagent.logs import LogError, LogRequest, LogRun, stream, tail_offset

    log = tmp_path / "c.log"
    first = b"old-1\nold-2\n"
    log.write_bytes(first + b"a\nbb\nccc\npartial")

    def read(start: int, end: int | None, query: str) -> bytes:
        out: list[bytes] = []
        stream(LogRun(log, start, end, lambda: False), LogRequest.parse(query), out.append,
               threading.Event())
        return b"".join(out)

    run = len(first)
    assert read(run, None, "") == b"a\nbb\nccc\npartial"
    assert read(run, None, "tailLines=2") == b"ccc\npartial"
    assert read(run, None, "tailLines=10") == b"a\nbb\nccc\npartial"  # not into the old run
    assert read(run, None, "tailLines=0") == b""
    assert read(run, None, "tailLines=3&limitBytes=4") == b"bb\nc"
    assert read(0, run, "tailLines=1") == b"old-2\n"  # previous run, final newline
    assert read(run, None, "follow=true&limitBytes=3") == b"a\nb"  # dead run: ends at EOF
    with open(log, "rb") as f:  # lines across block boundaries
        big = tmp_path / "big.log"
        big.write_bytes(b"".join(b"%06d\n" % i for i in range(40000)))
        with open(big, "rb") as g:
            end = big.stat().st_size
            assert tail_offset(g, 0, end, 20000) == 20000 * 7
            assert tail_offset(g, 0, end, 40001) == 0
        assert tail_offset(f, run, log.stat().st_size, 1) == run + len(b"a\nbb\nccc\n")
    for bad in ("tailLines=-1", "limitBytes=0", "follow=maybe", "tailLines=x"):
        with pytest.raises(LogError) as err:
            LogRequest.parse(bad)
        assert err.value.status == 400


def test_downward_format_matches_kubelet() -> None:
    from harness.nodeagent.envs import format_map, go_quote

    assert go_quote('a "b"\n\t\\ é \x01 \u200b') == '"a \\"b\\"\\n\\t\\\\ é \\x01 \\u200b"'
    assert format_map({"z": "1", "a": 'x"y'}) == 'a="x\\"y"\nz="1"'  # sorted, no final newline


def test_env_expansion_like_kubernetes() -> None:
    from harness.nodeagent.envs import expand

    env = {"A": "1", "B": "two"}
    assert expand("$(A)-$(B)-$(C)-$$(A)-$", env) == "1-two-$(C)-$(A)-$"


def test_hosts_file_names_peers_and_services() -> None:
    from harness.nodeagent.hosts import Target, render

    def mk(name: str, ip: str, **spec: str) -> Obj:
        return {"metadata": {"name": name, "namespace": "ns", "uid": name,
                             "labels": {"app": "t"}},
                "spec": spec, "status": {"phase": "Running", "podIP": ip}}

    pods = [mk("p0", "10.244.1.1", hostname="p0", subdomain="s"),
            mk("p1", "10.244.1.2", hostname="p1", subdomain="s")]
    svc = {"metadata": {"name": "s", "namespace": "ns"},
           "spec": {"clusterIP": "None", "selector": {"app": "t"}}}
    text = render(Target("p0", "ns", "cw-p0", "10.244.1.1", "p0", "s"), pods, [svc],
                  lambda p: str(p["status"]["podIP"]))
    assert "10.244.1.1\tp0.s.ns.svc.cluster.local p0.s.ns.svc p0.s.ns p0.s p0\n" in text
    assert "10.244.1.2\tp1.s.ns.svc.cluster.local p1.s.ns.svc p1.s.ns p1.s\n" in text
    assert text.count("s.ns.svc.cluster.local s.ns.svc s.ns s\n") == 2


def test_projected_token_is_refreshed_before_expiry(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import UTC, datetime

    from harness.nodeagent import volumes

    issued: list[Obj] = []

    class FakeKube:
        def create(self, path: str, body: Obj) -> Obj:
            issued.append(body)
            exp = datetime.fromtimestamp(volumes.time.time() + 600, UTC)
            return {"status": {"token": f"tok-{len(issued)}",
                               "expirationTimestamp": exp.strftime("%Y-%m-%dT%H:%M:%SZ")}}

        def get_or_none(self, path: str) -> None:
            return None

    vol = {"name": "t", "projected": {"sources": [
        {"serviceAccountToken": {"audience": "aud", "expirationSeconds": 600, "path": "token"}}]}}
    pod_obj = {"metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
               "spec": {"serviceAccountName": "sa", "volumes": [vol], "containers": []}}
    vm = volumes.VolumeManager(FakeKube(), pod_obj, tmp_path, "10.244.0.1", "10.244.1.1")  # type: ignore[arg-type]
    vm.setup()
    token = vm.paths["t"] / "token"
    assert token.read_text() == "tok-1" and not vm.tokens_due()
    spec = issued[0]["spec"]
    assert spec["audiences"] == ["aud"] and spec["boundObjectRef"]["uid"] == "u1"
    now = volumes.time.time()
    monkeypatch.setattr(volumes.time, "time", lambda: now + 0.81 * 600)  # past 80% of the TTL
    assert vm.tokens_due()
    vm.refresh(pod_obj, refetch=False)
    assert token.read_text() == "tok-2" and len(issued) == 2
