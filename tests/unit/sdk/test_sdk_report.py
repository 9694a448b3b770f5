from __future__ import annotations

import datetime as dt
import io
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cogwork_sdk.contract import PROGRESS_PREFIX
from cogwork_sdk.report import Reporter
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _cert(subject: str, key: Any, issuer: x509.Name, issuer_key: Any, ca: bool) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
         .issuer_name(issuer).public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5))
         .not_valid_after(now + dt.timedelta(hours=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        b = b.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    return b.sign(issuer_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A CA and a server certificate for 127.0.0.1 signed by it (like the operator's)."""
    d = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    srv_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-ca")])
    ca = _cert("test-ca", ca_key, ca_name, ca_key, ca=True)
    srv = _cert("127.0.0.1", srv_key, ca_name, ca_key, ca=False)
    (d / "srv.pem").write_bytes(srv.public_bytes(serialization.Encoding.PEM))
    (d / "srv.key").write_bytes(srv_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    other_key = ec.generate_private_key(ec.SECP256R1())
    other = _cert("other-ca", other_key, x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "other-ca")]), other_key, ca=True)
    return {"dir": d, "ca_pem": ca.public_bytes(serialization.Encoding.PEM).decode(),
            "other_ca_pem": other.public_bytes(serialization.Encoding.PEM).decode()}


@pytest.fixture
def server(pki: dict[str, Any]) -> Iterator[dict[str, Any]]:
    received: list[dict[str, Any]] = []
    status = {"code": 200}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"path": self.path, "auth": self.headers.get("Authorization"),
                             "type": self.headers.get("Content-Type"),
                             "body": json.loads(body)})
            self.send_response(status["code"])
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki["dir"] / "srv.pem", pki["dir"] / "srv.key")
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield {"url": f"https://127.0.0.1:{httpd.server_address[1]}/v1/report",
               "received": received, "status": status}
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_posts_json_with_a_fresh_bearer_token(
        server: dict[str, Any], pki: dict[str, Any], tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("token-one\n")
    r = Reporter(server["url"], str(token), pki["ca_pem"])
    assert r.emit("resumed", resumedFromStep=100, step=100, totalSteps=300, epoch=None)
    r.close()
    token.write_text("token-two")  # the kubelet rotated the projected token
    r.emit("checkpoint", checkpointStep=120, checkpointRequest="tok-9")
    r.close()
    got = server["received"]
    assert [g["auth"] for g in got] == ["Bearer token-one", "Bearer token-two"]
    assert got[0]["path"] == "/v1/report" and got[0]["type"] == "application/json"
    assert got[0]["body"] == {"event": "resumed", "resumedFromStep": 100, "step": 100,
                              "totalSteps": 300}  # None fields are left out
    assert got[1]["body"] == {"event": "checkpoint", "checkpointStep": 120,
                              "checkpointRequest": "tok-9"}
    assert (r.sent, r.failed) == (2, 0)


def test_progress_is_rate_limited_but_other_events_are_not(
        server: dict[str, Any], pki: dict[str, Any]) -> None:
    r = Reporter(server["url"], None, pki["ca_pem"], min_interval_s=60)
    assert r.emit("progress", step=1)
    assert not r.emit("progress", step=2)
    assert not r.progress_due()
    assert r.emit("progress", force=True, step=3)
    assert r.emit("stopped", step=3)
    r.close()
    assert [g["body"]["step"] for g in server["received"]] == [1, 3, 3]
    assert server["received"][0]["auth"] is None  # no token file: no header


def test_wrong_ca_fails_verification_quietly(server: dict[str, Any], pki: dict[str, Any]) -> None:
    r = Reporter(server["url"], None, pki["other_ca_pem"])
    r.emit("completed", step=1)
    r.close()
    assert (r.sent, r.failed) == (0, 1)
    assert server["received"] == []


def test_http_error_is_not_raised(server: dict[str, Any], pki: dict[str, Any]) -> None:
    server["status"]["code"] = 403
    r = Reporter(server["url"], None, pki["ca_pem"])
    r.emit("completed", step=1)
    r.close()
    assert (r.sent, r.failed) == (0, 1)
    assert len(server["received"]) == 1


def test_dead_endpoint_never_raises_or_blocks(pki: dict[str, Any]) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = Reporter(f"https://127.0.0.1:{port}/v1/report", "/nonexistent/token", pki["ca_pem"])
    t0 = time.monotonic()
    for step in range(5):
        r.emit("progress", force=True, step=step)  # queued: training is not held up
    assert time.monotonic() - t0 < 0.5
    r.emit("completed", step=5)
    r.close(timeout_s=2)  # retries of `completed` stop at close()'s bound
    assert r.sent == 0 and r.failed >= 2


def test_important_events_are_retried_until_delivered(
        server: dict[str, Any], pki: dict[str, Any]) -> None:
    server["status"]["code"] = 503  # the operator is busy or restarting

    def recover() -> None:
        time.sleep(1.2)
        server["status"]["code"] = 200

    threading.Thread(target=recover, daemon=True).start()
    r = Reporter(server["url"], None, pki["ca_pem"])
    r.emit("progress", force=True, step=50)  # superseded by the next one: not retried
    r.emit("resumed", resumedFromStep=50, step=50)
    r.close()
    bodies = [(g["body"]["event"], g["body"]["step"]) for g in server["received"]]
    assert bodies.count(("progress", 50)) == 1
    assert bodies.count(("resumed", 50)) >= 2  # failed at least once, then delivered
    assert r.sent == 1


def test_local_mode_prints_parseable_lines() -> None:
    out = io.StringIO()
    r = Reporter(None, stream=out)
    r.emit("progress", step=7, totalSteps=10, metrics=[{"name": "loss", "value": "0.5"}])
    r.close()
    line = out.getvalue().strip()
    assert line.startswith(PROGRESS_PREFIX)
    assert json.loads(line[len(PROGRESS_PREFIX):]) == {
        "event": "progress", "step": 7, "totalSteps": 10,
        "metrics": [{"name": "loss", "value": "0.5"}]}


def test_disabled_reporter_sends_nothing() -> None:
    out = io.StringIO()
    r = Reporter(None, enabled=False, stream=out)
    assert not r.emit("completed", step=1)
    assert out.getvalue() == ""
