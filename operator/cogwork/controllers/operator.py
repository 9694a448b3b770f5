"""Operator process: Kopf settings, the report endpoint, and all controllers' handlers."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf

from cogwork import kube, metrics
from cogwork.controllers import job_metrics as _job_metrics  # noqa: F401  (registers handlers)
from cogwork.controllers import labeljob as _labeljob  # noqa: F401  (registers handlers)
from cogwork.controllers import report, runtime
from cogwork.controllers import trainjob as _trainjob  # noqa: F401  (registers handlers)
from cogwork.controllers import tunejob as _tunejob  # noqa: F401  (registers handlers)

PREFIX = "cogwork.dev"
API_THREADS = kube.POOL_SIZE  # one pooled apiserver connection per thread


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Our own prefix for everything Kopf stores on objects, from the first release on.
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PREFIX, key="last-handled-configuration"
    )
    # Silent watch stalls are Kopf's best-known failure: make every watch time out and renew.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 60
    # Discover resources from the API, not by watching CRDs: no CRD read permission needed.
    settings.scanning.disabled = True
    settings.posting.reporting_component = "cogwork-operator"
    settings.posting.level = logging.INFO
    kube.load()
    # Every API call runs in a worker thread and mostly waits on the apiserver: asyncio's
    # default pool (CPU count + 4 threads) caps the create rate of a burst of new jobs.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=API_THREADS, thread_name_prefix="kube"))
    cfg = runtime.config()
    memo.report_runner = await report.serve(
        cfg.report_listen_host, cfg.report_listen_port, cfg.report_cert_file, cfg.report_key_file
    )
    if cfg.metrics_port:
        metrics.serve(cfg.metrics_port)


@kopf.on.cleanup()
async def shutdown(memo: kopf.Memo, **_: Any) -> None:
    runner = memo.get("report_runner")
    if runner is not None:
        await runner.cleanup()


def run(namespaces: list[str] | None = None, liveness: str | None = None) -> None:
    """Run until signalled: all namespaces unless some are named."""
    kopf.configure(verbose=False)
    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces or [],
        liveness_endpoint=liveness,
    )
