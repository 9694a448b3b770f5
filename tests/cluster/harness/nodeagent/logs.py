"""The kubelet's `containerLogs` endpoint, which kube-apiserver proxies `kubectl logs` to:

    GET https://<node InternalIP>:<daemonEndpoints.kubeletEndpoint.Port>
        /containerLogs/<namespace>/<pod>/<container>?follow=&tailLines=&limitBytes=&previous=

HTTPS with a serving certificate from the harness CA; every client must present a certificate
from that CA (the handshake fails otherwise) whose CN is an authorized one (403 otherwise): the
apiserver's `--kubelet-client-certificate`. A container's output is its log file, one per pod
and container, appended to by every run; the agent remembers where each run began, so the
current run is served, and `previous=true` the run before it. `timestamps`, `sinceSeconds` and
`sinceTime` are accepted and ignored (lines carry no times).
"""

from __future__ import annotations

import contextlib
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

log = logging.getLogger("nodeagent.logs")

FOLLOW_POLL_S = 0.1
CHUNK = 64 * 1024


class LogError(Exception):
    """An answer other than 200: status code and the message the user sees."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class LogRun:
    """One run of a container: bytes [start, end) of its log file; end None: to EOF."""

    path: Path
    start: int
    end: int | None
    live: Callable[[], bool]  # True while the run may still write (follow waits for more)


@dataclass
class LogRequest:
    follow: bool = False
    previous: bool = False
    tail_lines: int | None = None
    limit_bytes: int | None = None

    @classmethod
    def parse(cls, query: str) -> LogRequest:
        q = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}

        def flag(name: str) -> bool:
            value = q.get(name, "false").lower()
            if value not in ("true", "false", "1", "0", ""):
                raise LogError(400, f"invalid {name}={value!r}: want true or false")
            return value in ("true", "1")

        def count(name: str, minimum: int) -> int | None:
            if not q.get(name):
                return None
            try:
                value = int(q[name])
            except ValueError:
                raise LogError(400, f"invalid {name}={q[name]!r}: not an integer") from None
            if value < minimum:
                raise LogError(400, f"invalid {name}={value}: must be >= {minimum}")
            return value

        return cls(follow=flag("follow"), previous=flag("previous"),
                   tail_lines=count("tailLines", 0), limit_bytes=count("limitBytes", 1))


def tail_offset(f: Any, start: int, end: int, lines: int) -> int:
    """Offset in [start, end] of the beginning of the last `lines` lines (a final line without
    its newline counts as a line), reading backwards in blocks."""
    if lines <= 0:
        return end
    pos, seen = end, 0
    first = True
    while pos > start:
        size = min(CHUNK, pos - start)
        f.seek(pos - size)
        block = f.read(size)
        if first and block.endswith(b"\n"):
            block = block[:-1]  # the newline that ends the last line starts no new line
        first = False
        i = len(block)
        while True:
            i = block.rfind(b"\n", 0, i)
            if i < 0:
                break
            seen += 1
            if seen == lines:
                return pos - size + i + 1
        pos -= size
    return start


def stream(run: LogRun, req: LogRequest, write: Callable[[bytes], None],
           stop: threading.Event) -> None:
    """Write the run's selected bytes; with follow, keep writing until the run is over."""
    budget = req.limit_bytes
    try:
        f = run.path.open("rb")
    except FileNotFoundError:
        return
    with f:
        end = run.end if run.end is not None else os.fstat(f.fileno()).st_size
        pos = run.start if req.tail_lines is None else tail_offset(f, run.start, end,
                                                                  req.tail_lines)

        def send_to(limit: int) -> None:
            nonlocal pos, budget
            f.seek(pos)
            while pos < limit and (budget is None or budget > 0):
                want = min(CHUNK, limit - pos, budget if budget is not None else CHUNK)
                data = f.read(want)
                if not data:
                    return
                write(data)
                pos += len(data)
                if budget is not None:
                    budget -= len(data)

        send_to(end)
        if not req.follow or run.end is not None:
            return
        while not stop.is_set() and (budget is None or budget > 0):
            done = not run.live()  # checked before reading: what it wrote until then is read
            size = os.fstat(f.fileno()).st_size
            if size > pos:
                send_to(size)
            elif done:
                return
            else:
                time.sleep(FOLLOW_POLL_S)


Lookup = Callable[[str, str, str, bool], LogRun]  # namespace, pod, container, previous


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], owner: LogServer) -> None:
        self.owner = owner
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = self.socket.accept()
        # The TLS handshake happens in the request's thread (first read), not in accept().
        return self.owner.tls.wrap_socket(sock, server_side=True,
                                          do_handshake_on_connect=False), addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.info("log request from %s failed: %s", client_address[0],
                 _short_exc())


def _short_exc() -> str:
    import sys

    err = sys.exc_info()[1]
    return f"{type(err).__name__}: {err}" if err else "?"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 60  # per blocking socket operation

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.client_address[0], *args)

    def setup(self) -> None:
        super().setup()
        self.connection.do_handshake()  # type: ignore[attr-defined]

    def _reply(self, status: int, body: str, close: bool = False) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def _client_cn(self) -> str:
        cert = self.connection.getpeercert() or {}  # type: ignore[attr-defined]
        for rdn in cert.get("subject", ()):
            for key, value in rdn:
                if key == "commonName":
                    return str(value)
        return ""

    def do_GET(self) -> None:
        owner = self.server.owner
        cn = self._client_cn()
        if cn not in owner.authorized:
            self._reply(403, f'Forbidden (user={cn}, verb=get, resource=nodes, '
                             f'subresource=proxy)\n')
            return
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.split("/") if p]
        if parts == ["healthz"]:
            self._reply(200, "ok")
            return
        if len(parts) != 4 or parts[0] != "containerLogs":
            self._reply(404, f"404 page not found: {url.path}\n")
            return
        _, namespace, pod, container = parts
        try:
            req = LogRequest.parse(url.query)
            run = owner.lookup(namespace, pod, container, req.previous)
        except LogError as err:
            self._reply(err.status, err.message + "\n")
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def write(data: bytes) -> None:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            if req.follow:
                self.wfile.flush()

        try:
            stream(run, req, write, owner.stop)
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, TimeoutError):
            self.close_connection = True  # the client went away (kubectl logs -f, Ctrl-C)


class LogServer:
    """Serves containerLogs on (host, port) (port 0: any free one; `port` says which)."""

    def __init__(self, host: str, port: int, cert: Path, key: Path, client_ca: Path,
                 authorized: set[str], lookup: Lookup, stop: threading.Event) -> None:
        self.authorized, self.lookup, self.stop = authorized, lookup, stop
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls.minimum_version = ssl.TLSVersion.TLSv1_2
        self.tls.load_cert_chain(str(cert), str(key))
        self.tls.load_verify_locations(cafile=str(client_ca))
        self.tls.verify_mode = ssl.CERT_REQUIRED  # no valid client certificate, no connection
        self.httpd = _Server((host, port), self)
        self.port = int(self.httpd.server_address[1])
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True,
                                       name="containerLogs")

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.httpd.shutdown()
            self.httpd.server_close()
