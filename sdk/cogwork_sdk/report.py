"""Rank 0's progress reports to the operator (push; training pods need no RBAC).

Reports never stall or fail training: POSTs run on a background thread and errors are logged
once per outage, never raised. Plain progress is best effort (the next report supersedes it);
the events status depends on (resumed, checkpoint, completed, stopped) are retried with back-off
for a while, since a busy operator must not lose the step a job resumed from. Without
COGWORK_REPORT_URL (local mode) each event is printed as one `COGWORK_PROGRESS {json}` line.
"""

from __future__ import annotations

import json
import logging
import ssl
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, TextIO

from . import contract
from .sender import BackgroundSender

log = logging.getLogger(__name__)

RETRY_FOR_S = 60.0  # how long an important event is retried before it is given up


def ssl_context(ca: str | None) -> ssl.SSLContext:
    """Verify the endpoint against the given CA: PEM text (the contract) or a path to a PEM."""
    if not ca:
        return ssl.create_default_context()
    if "-----BEGIN" in ca:
        return ssl.create_default_context(cadata=ca)
    return ssl.create_default_context(cafile=ca)


class Reporter(BackgroundSender):
    def __init__(
        self,
        url: str | None = None,
        token_file: str | None = None,
        ca: str | None = None,
        *,
        enabled: bool = True,
        min_interval_s: float = 1.0,
        timeout_s: float = 5.0,
        stream: TextIO | None = None,
        max_pending_progress: int = 2,
    ) -> None:
        self.url = url
        self.token_file = token_file
        self.enabled = enabled
        self.min_interval_s = min_interval_s
        self.timeout_s = timeout_s
        self.stream = stream
        self.max_pending_progress = max_pending_progress
        super().__init__("cogwork-report", log)
        self._last_progress = float("-inf")
        self._permanent = False  # the last failure cannot be fixed by retrying (4xx, bad cert)
        self._ctx: ssl.SSLContext | None = None
        if enabled and url and url.startswith("https:"):
            try:
                self._ctx = ssl_context(ca)
            except (ssl.SSLError, OSError, ValueError) as e:
                # A broken CA must not stop training; every POST will then fail verification.
                log.warning("report: cannot load %s (%s); using system CAs",
                            contract.ENV_REPORT_CA, e)
                self._ctx = ssl.create_default_context()

    @classmethod
    def from_config(cls, cfg: Any, enabled: bool) -> Reporter:
        return cls(cfg.report_url, cfg.report_token_file, cfg.report_ca, enabled=enabled)

    def progress_due(self) -> bool:
        """Whether a plain progress event would go out now (saves building one that would not)."""
        return self.enabled and time.monotonic() - self._last_progress >= self.min_interval_s

    def emit(self, event: str, force: bool = False, **fields: Any) -> bool:
        """Queue (or print) one event; returns False when a progress event was rate-limited.

        Only plain progress is rate-limited; resumed/checkpoint/completed/stopped always go out.
        """
        if not self.enabled:
            return False
        if event not in contract.REPORT_EVENTS:
            raise ValueError(f"unknown report event {event!r}")
        now = time.monotonic()
        if event == contract.EVENT_PROGRESS and not force:
            if now - self._last_progress < self.min_interval_s:
                return False
            if self.url and self.pending() >= self.max_pending_progress:
                return False  # endpoint slower than training: drop, the next one supersedes it
        if event == contract.EVENT_PROGRESS:
            self._last_progress = now
        payload = {"event": event, **{k: v for k, v in fields.items() if v is not None}}
        if not self.url:
            out = self.stream or sys.stdout
            out.write(contract.PROGRESS_PREFIX + json.dumps(payload, separators=(",", ":")) + "\n")
            out.flush()
            return True
        self.submit(payload)
        return True

    def close(self, timeout_s: float = 10.0) -> None:
        """Deliver what is queued (bounded by `timeout_s`) and stop the sender thread."""
        left = self.pending()
        if not self.drain(timeout_s):
            log.warning("report: %d event(s) not delivered before exit", left)

    def post(self, payload: dict[str, Any]) -> bool:
        """One synchronous POST; True on a 2xx answer. Never raises."""
        assert self.url
        try:
            headers = {"Content-Type": "application/json"}
            if self.token_file:
                # Read every time: the projected ServiceAccount token is rotated by the kubelet.
                token = Path(self.token_file).read_text().strip()
                headers["Authorization"] = f"Bearer {token}"
            req = urllib.request.Request(
                self.url, data=json.dumps(payload).encode(), headers=headers, method="POST"
            )
            with urllib.request.urlopen(req, timeout=self.timeout_s, context=self._ctx) as resp:
                resp.read()
        except Exception as e:  # best effort by contract: nothing here may fail training
            code = getattr(e, "code", None)  # urllib's HTTPError
            self._permanent = isinstance(getattr(e, "reason", None), ssl.SSLError) or (
                isinstance(code, int) and 400 <= code < 500 and code not in (408, 429))
            self.failure("report to %s failed (%s); training goes on", self.url, e)
            return False
        self.success("report endpoint reachable again")
        return True

    def _deliver(self, payload: dict[str, Any]) -> None:
        """POST once; retry with back-off what status depends on, within close()'s bound."""
        important = payload["event"] != contract.EVENT_PROGRESS
        self.retry(lambda: self.post(payload) or not important or self._permanent, RETRY_FOR_S)
