"""The operator's Prometheus series. No per-job labels: cardinality stays flat at any scale."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECONCILE_TOTAL = Counter(
    "cogwork_reconcile_total", "Reconcile passes by controller and result", ["controller", "result"]
)
RECONCILE_ERRORS = Counter(
    "cogwork_reconcile_errors_total", "Reconcile passes that raised", ["controller"]
)
RECONCILE_TIME = Histogram(
    "cogwork_reconcile_time_seconds", "Time spent in one reconcile pass", ["controller"]
)
ACTIVE_RECONCILERS = Gauge(
    "cogwork_active_workers", "Objects with a live reconcile loop", ["controller"]
)
JOBS = Gauge("cogwork_jobs", "Jobs by kind and phase", ["kind", "phase"])
REPORTS = Counter("cogwork_reports_total", "Trainer progress reports by result", ["result"])
POD_ACTIONS = Counter(
    "cogwork_pod_actions_total", "Child pod creations and deletions", ["action"]
)
