"""The job's rendezvous store: `python -m cogwork_trainer.rdzv_store --port 29400`.

A standalone c10d TCPStore in its own small pod, so no worker is special: torchrun's agents
connect to it as clients (`--rdzv-backend=c10d --rdzv-conf=is_host=false`), and losing any
worker, worker 0 included, only triggers a new rendezvous round.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from datetime import timedelta
from types import FrameType

import torch.distributed as dist
from cogwork_sdk import contract

log = logging.getLogger("cogwork_trainer.rdzv_store")


def serve(host: str, port: int, ready: threading.Event | None = None,
          stop: threading.Event | None = None) -> None:
    """Host the store until `stop` is set (or forever)."""
    store = dist.TCPStore(  # type: ignore[attr-defined]
        host_name=host,
        port=port,
        is_master=True,
        # Clients come and go with every rendezvous round: never wait for a fixed number.
        wait_for_workers=False,
        timeout=timedelta(seconds=30),
        use_libuv=True,
    )
    log.info("c10d TCPStore listening on %s:%d", host, store.port)
    if ready is not None:
        ready.set()
    (stop or threading.Event()).wait()
    del store  # closes the listening socket


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=contract.RDZV_PORT)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: shutting down", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    serve(args.host, args.port, stop=stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
