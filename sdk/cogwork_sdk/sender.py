"""What the trainer's two best-effort senders share (progress reports to the operator, metrics to
Katib): a background thread that drains a queue, logs an outage once, retries what matters with
back-off, and never holds the trainer longer than drain() allows.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

_STOP = object()  # sentinel that ends the sender thread


class BackgroundSender:
    """Subclasses implement `_deliver(item)`; `submit` queues, `drain` delivers within a bound."""

    def __init__(self, name: str, log: logging.Logger) -> None:
        self.sent = 0  # successful sends (for tests and logs)
        self.failed = 0
        self._name = name
        self._log = log
        self._failing = False
        self._close_by = float("inf")  # drain() bounds how long retries may go on
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None

    def pending(self) -> int:
        return self._queue.qsize()

    def submit(self, item: Any) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
        self._queue.put(item)

    def drain(self, timeout_s: float = 10.0) -> bool:
        """Deliver what is queued within `timeout_s` and stop the thread; False if some was
        left undelivered."""
        if self._thread is None:
            return True
        self._close_by = time.monotonic() + timeout_s
        self._queue.put(_STOP)
        self._thread.join(timeout_s)
        done = not self._thread.is_alive()
        self._thread = None
        return done

    def seconds_left(self) -> float:
        """Until drain()'s bound (infinite until it is called)."""
        return self._close_by - time.monotonic()

    def failure(self, message: str, *args: Any) -> None:
        """Count a failed send; log only the first of an outage."""
        self.failed += 1
        if not self._failing:
            self._log.warning(message, *args)
        self._failing = True

    def success(self, recovered: str) -> None:
        if self._failing:
            self._log.info(recovered)
        self._failing = False
        self.sent += 1

    def retry(self, attempt: Callable[[], bool], retry_for_s: float) -> None:
        """Call `attempt` until it returns True (done, or not worth retrying), with back-off,
        for at most `retry_for_s` and never past drain()'s bound."""
        deadline = time.monotonic() + retry_for_s
        delay = 0.5
        while not attempt():
            if time.monotonic() + delay > min(deadline, self._close_by):
                return
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            self._deliver(item)

    def _deliver(self, item: Any) -> None:
        raise NotImplementedError
