"""kube.py against a tiny real HTTP server (aiohttp.web on loopback) that answers with scripted
Kubernetes Status bodies: the error mapping, retries, re-login on 401 and the exact requests sent.
kube logs in through its real `login`, from a kubeconfig that points at the fake server."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import kopf
import pytest
from aiohttp import web
from cogwork import kube

T = TypeVar("T")
JOB_PATH = "/apis/cogwork.dev/v1alpha1/namespaces/ns/trainjobs/j"


def status(code: int, reason: str, cause: str = "") -> tuple[int, dict[str, Any]]:
    """A Status body like the apiserver's (details.causes carries e.g. NamespaceTerminating)."""
    details: dict[str, Any] = {"name": "x", "kind": "configmaps"}
    if cause:
        details["causes"] = [{"reason": cause, "message": "why", "field": "metadata.namespace"}]
    return code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
                  "reason": reason, "message": f"{reason} (test)", "details": details}


CREATED = (201, {"kind": "ConfigMap", "metadata": {"name": "x"}})
CONFIGMAP = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}


@dataclass
class Seen:
    method: str
    path: str
    authorization: str | None
    content_type: str
    body: Any


@dataclass
class FakeApiserver:
    """Answers each request with the next scripted (status, body) and records what it got;
    a request past the script gets a 418 that no kube code path tolerates."""

    answers: list[tuple[int, Any]]
    seen: list[Seen] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        text = await request.text()
        self.seen.append(Seen(request.method, request.path, request.headers.get("Authorization"),
                              request.content_type, json.loads(text) if text else None))
        code, body = self.answers.pop(0) if self.answers else status(418, "Unscripted")
        return web.json_response(body, status=code)


def write_kubeconfig(path: Path, server: str, token: str) -> None:
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }))


class NoBackoff:
    """Stands in for the `asyncio` module inside kube only: records backoff sleeps, skips them."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    async def sleep(self, delay: float) -> None:
        self.delays.append(delay)


@pytest.fixture(autouse=True)
def fresh_kube_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test logs in from scratch; module state is restored afterwards. Outside a pod
    kube falls through to the kubeconfig; pretend we are outside one even in CI pods."""
    for name, value in (("_info", None), ("_session", None), ("_session_loop", None),
                        ("_login_kwargs", {})):
        monkeypatch.setattr(kube, name, value)
    monkeypatch.setattr(kopf, "login_with_service_account", lambda **_: None)


@pytest.fixture
def backoff(monkeypatch: pytest.MonkeyPatch) -> NoBackoff:
    fake = NoBackoff()
    monkeypatch.setattr(kube, "asyncio", fake)
    return fake


@pytest.fixture
def kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "kubeconfig"
    monkeypatch.setenv("KUBECONFIG", str(path))
    return path


@pytest.fixture
def serve(kubeconfig: Path) -> Callable[[FakeApiserver, Callable[[], Awaitable[T]]], T]:
    """Start `fake` on a free port, log kube in to it with token "t", run `call`, tear down."""
    login = kube.login  # the real one, even where a test replaces it for re-logins

    def run(fake: FakeApiserver, call: Callable[[], Awaitable[T]]) -> T:
        async def main() -> T:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", fake.handle)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]
            write_kubeconfig(kubeconfig, f"http://127.0.0.1:{port}", "t")
            login(settings=kopf.OperatorSettings(), logger=logging.getLogger("test"))
            try:
                return await call()
            finally:
                await kube.close()
                await runner.cleanup()

        return asyncio.run(main())

    return run


def test_create_sends_the_body_with_the_bearer_token(serve: Any) -> None:
    fake = FakeApiserver([CREATED])
    assert serve(fake, lambda: kube.create("ns", CONFIGMAP)) is True
    (request,) = fake.seen
    assert (request.method, request.path) == ("POST", "/api/v1/namespaces/ns/configmaps")
    assert request.authorization == "Bearer t"
    assert request.content_type == "application/json"
    assert request.body == CONFIGMAP


def test_create_of_a_trainjob_posts_to_the_plural(serve: Any) -> None:
    fake = FakeApiserver([(201, {})])
    body = {"apiVersion": "cogwork.dev/v1alpha1", "kind": "TrainJob", "metadata": {"name": "j"}}
    assert serve(fake, lambda: kube.create("ns", body)) is True
    assert fake.seen[0].path == "/apis/cogwork.dev/v1alpha1/namespaces/ns/trainjobs"


def test_existing_object_and_terminating_namespace_create_nothing(serve: Any) -> None:
    fake = FakeApiserver([status(409, "AlreadyExists")])
    assert serve(fake, lambda: kube.create("ns", CONFIGMAP)) is False
    fake = FakeApiserver([status(403, "Forbidden", "NamespaceTerminating")])
    assert serve(fake, lambda: kube.create("ns", CONFIGMAP)) is False
    assert len(fake.seen) == 1  # neither is retried


def test_other_forbidden_errors_are_raised(serve: Any) -> None:
    fake = FakeApiserver([status(403, "Forbidden")])
    with pytest.raises(kube.ApiError) as raised:
        serve(fake, lambda: kube.create("ns", CONFIGMAP))
    assert raised.value.status == 403
    assert "Forbidden" in raised.value.body
    assert len(fake.seen) == 1


def test_a_refused_create_is_rejected_with_the_apiservers_message_and_fields(
        serve: Any) -> None:
    """422 and 403 cannot be fixed by sending the object again: not retried, and what the
    apiserver said (its message, the fields its causes name) is what the job's condition
    quotes (plan/rejections.py)."""
    fake = FakeApiserver([status(422, "Invalid", "FieldValueInvalid")])
    with pytest.raises(kube.Rejected) as raised:
        serve(fake, lambda: kube.create("ns", CONFIGMAP))
    assert str(raised.value) == "Invalid (test)"
    assert raised.value.status == 422 and raised.value.fields == ("metadata.namespace",)
    assert len(fake.seen) == 1


def test_throttling_is_retried_with_backoff(serve: Any, backoff: NoBackoff) -> None:
    fake = FakeApiserver([status(429, "TooManyRequests"), CREATED])
    assert serve(fake, lambda: kube.create("ns", CONFIGMAP)) is True
    assert len(fake.seen) == 2
    assert fake.seen[1].body == CONFIGMAP
    assert backoff.delays == [0.2]


def test_unavailable_apiserver_raises_after_five_attempts(serve: Any, backoff: NoBackoff) -> None:
    fake = FakeApiserver([status(503, "ServiceUnavailable")] * 6 + [CREATED])
    with pytest.raises(kube.ApiError) as raised:
        serve(fake, lambda: kube.create("ns", CONFIGMAP))
    assert raised.value.status == 503
    assert len(fake.seen) == 5
    assert backoff.delays == [0.2, 0.4, 0.8, 1.6]  # doubling, no sleep after the last attempt


def test_a_dropped_connection_is_retried(serve: Any, backoff: NoBackoff) -> None:
    class Dropping(FakeApiserver):
        async def handle(self, request: web.Request) -> web.Response:
            if not self.seen:
                self.seen.append(Seen(request.method, request.path, None, "", None))
                assert request.transport is not None
                request.transport.close()  # the connection dies mid-request
                return web.Response()  # never delivered
            return await super().handle(request)

    fake = Dropping([CREATED])
    assert serve(fake, lambda: kube.create("ns", CONFIGMAP)) is True
    assert len(fake.seen) == 2
    assert backoff.delays == [0.2]


def relogin_with_token(monkeypatch: pytest.MonkeyPatch, kubeconfig: Path,
                       token: str) -> list[dict[str, Any]]:
    """Replace kube.login by one that rotates the kubeconfig's token first; returns its calls."""
    real_login = kube.login
    calls: list[dict[str, Any]] = []

    def rotating_login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        calls.append(kwargs)
        config = json.loads(kubeconfig.read_text())
        config["users"][0]["user"]["token"] = token
        kubeconfig.write_text(json.dumps(config))
        info: kopf.ConnectionInfo | None = real_login(**kwargs)
        return info

    monkeypatch.setattr(kube, "login", rotating_login)
    return calls


def test_unauthorized_logs_in_again_once(serve: Any, kubeconfig: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeApiserver([status(401, "Unauthorized"), CREATED])
    calls = relogin_with_token(monkeypatch, kubeconfig, "t2")
    assert serve(fake, lambda: kube.create("ns", CONFIGMAP)) is True
    assert len(calls) == 1
    assert "settings" in calls[0]  # the same arguments Kopf gave the first login
    assert [r.authorization for r in fake.seen] == ["Bearer t", "Bearer t2"]


def test_unauthorized_after_a_new_login_is_raised(serve: Any, kubeconfig: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeApiserver([status(401, "Unauthorized")] * 2 + [CREATED])
    calls = relogin_with_token(monkeypatch, kubeconfig, "t2")
    with pytest.raises(kube.ApiError) as raised:
        serve(fake, lambda: kube.create("ns", CONFIGMAP))
    assert raised.value.status == 401
    assert len(calls) == 1
    assert len(fake.seen) == 2


def test_a_new_login_closes_the_old_session(serve: Any, kubeconfig: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeApiserver([(200, {"metadata": {"name": "p"}}), status(401, "Unauthorized"),
                          (200, {"metadata": {"name": "p"}})])
    relogin_with_token(monkeypatch, kubeconfig, "t2")

    async def two_reads() -> bool:
        await kube.get_pod("ns", "p")
        first = kube._session
        await kube.get_pod("ns", "p")
        assert first is not None and first is not kube._session
        return bool(first.closed)

    assert serve(fake, two_reads) is True


def test_stale_status_patch_is_a_conflict(serve: Any) -> None:
    fake = FakeApiserver([status(409, "Conflict")])
    with pytest.raises(kube.Conflict):
        serve(fake, lambda: kube.patch_custom_status("trainjobs", "ns", "j", {"phase": "Running"},
                                                     resource_version="7"))
    (request,) = fake.seen
    assert (request.path, request.content_type) == (JOB_PATH + "/status",
                                                      "application/merge-patch+json")
    assert request.body == {"status": {"phase": "Running"}, "metadata": {"resourceVersion": "7"}}


def test_missing_objects_read_as_none(serve: Any) -> None:
    fake = FakeApiserver([status(404, "NotFound"), status(404, "NotFound")])

    async def reads() -> tuple[Any, Any]:
        return (await kube.get_pod("ns", "x"), await kube.get_custom("trainjobs", "ns", "x"))

    assert serve(fake, reads) == (None, None)


def test_unserved_resource_is_told_apart_from_a_missing_object(serve: Any) -> None:
    # The apiserver's 404 for an unknown resource names no object; for a missing object it does.
    unserved = (404, {"kind": "Status", "code": 404, "reason": "NotFound", "details": {}})
    fake = FakeApiserver([unserved, status(404, "NotFound")])

    async def reads() -> Any:
        with pytest.raises(kube.NotServed):
            await kube.create_namespaced_object("kubeflow.org", "v1beta1", "experiments", "ns",
                                                {"metadata": {"name": "e"}})
        return await kube.get_namespaced_object("kubeflow.org", "v1beta1", "experiments", "ns",
                                                "e")

    assert serve(fake, reads) is None
    assert fake.seen[0].path == "/apis/kubeflow.org/v1beta1/namespaces/ns/experiments"


def test_plugin_kubeconfig_logs_in_through_the_client(kubeconfig: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # An exec-plugin user (EKS, GKE) has no token in the file: only the official client can log in.
    write_kubeconfig(kubeconfig, "https://cluster.example", "unused")
    config = json.loads(kubeconfig.read_text())
    config["users"][0]["user"] = {"exec": {"apiVersion": "client.authentication.k8s.io/v1",
                                           "command": "get-token"}}
    kubeconfig.write_text(json.dumps(config))
    from_client = kopf.ConnectionInfo(server="https://cluster.example", token="from-plugin")
    calls: list[dict[str, Any]] = []

    def via_client(**kwargs: Any) -> kopf.ConnectionInfo:
        calls.append(kwargs)
        return from_client

    monkeypatch.setattr(kopf, "login_via_client", via_client)
    info = kube.login(settings=kopf.OperatorSettings(), logger=logging.getLogger("test"))
    assert info is from_client and kube._info is from_client
    assert len(calls) == 1


def test_token_login_needs_no_kubernetes_client(kubeconfig: Path) -> None:
    # The operator process: all controllers imported, logged in from a token kubeconfig.
    write_kubeconfig(kubeconfig, "https://cluster.example", "t")
    code = (
        "import logging, sys\n"
        "import cogwork.controllers.operator\n"
        "import kopf\n"
        "from cogwork import kube\n"
        "kopf.login_with_service_account = lambda **_: None\n"
        "info = kube.login(settings=kopf.OperatorSettings(), logger=logging.getLogger())\n"
        "assert info is not None and info.token == 't', info\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'kubernetes'))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "KUBECONFIG": str(kubeconfig)}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
