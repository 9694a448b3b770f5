"""Operator process: Kopf settings, the report endpoint, and all controllers' handlers."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from cogwork import kube, metrics
from cogwork.controllers import job_metrics as _job_metrics  # noqa: F401  (registers handlers)
from cogwork.controllers import labeljob as _labeljob  # noqa: F401  (registers handlers)
from cogwork.controllers import pod_cache, report, runtime
from cogwork.controllers import trainjob as _trainjob  # noqa: F401  (registers handlers)
from cogwork.controllers import tunejob as _tunejob  # noqa: F401  (registers handlers)

PREFIX = "cogwork.dev"


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    return kube.login(**kwargs)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger,
                    **_: Any) -> None:
    # Our own prefix for everything Kopf stores on objects, from the first release on.
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
    # Startup handlers run before Kopf's own login: log in here for the first API calls.
    kube.login(settings=settings, logger=logger)
    primed = await pod_cache.prime(_watched_namespaces)
    logger.info("pod cache primed with %d pods", primed)
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
    await kube.close()


_watched_namespaces: list[str] | None = None


def run(namespaces: list[str] | None = None, liveness: str | None = None) -> None:
    """Run until signalled: all namespaces unless some are named."""
    global _watched_namespaces
    _watched_namespaces = namespaces or None
    kopf.configure(verbose=False)
    kopf.run(
        standalone=True,
        clusterwide=not namespaces,
        namespaces=namespaces or [],
        liveness_endpoint=liveness,
    )
