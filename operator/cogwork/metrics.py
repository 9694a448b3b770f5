"""The operator's Prometheus series. No per-job labels: cardinality stays flat at any scale.

Counters and histograms are updated where the work happens (controllers/runtime.py). The
job-level gauges (jobs by kind and phase, trials by state, labeling rate) are computed at scrape
time from `JOB_TABLE`, a small cache of each job's phase and counters that the watch keeps
current (controllers/job_metrics.py); a restarted operator rebuilds it from its first list.
"""

from __future__ import annotations

import threading
from collections import Counter as Tally
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

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
    "cogwork_active_workers", "Objects with a live reconcile loop (the backlog each controller "
    "keeps watching)", ["controller"]
)
REPORTS = Counter("cogwork_reports_total", "Trainer progress reports by result", ["result"])
POD_ACTIONS = Counter(
    "cogwork_pod_actions_total", "Child pod creations and deletions", ["action"]
)

KINDS = ("TrainJob", "TuneJob", "LabelJob")
PHASES = ("Pending", "Suspended", "Running", "Restarting", "Succeeded", "Failed")
TRIAL_STATES = ("running", "completed", "pruned", "failed")
TERMINAL = ("Succeeded", "Failed")


@dataclass(frozen=True)
class JobSample:
    """What the gauges need from one job's status; nothing identifying survives aggregation."""

    phase: str
    trials: Mapping[str, int] = field(default_factory=dict)
    items_per_second: float = 0.0

    @staticmethod
    def from_status(status: Mapping[str, Any] | None) -> JobSample:
        status = status or {}
        trials = status.get("trials") or {}
        return JobSample(
            phase=str(status.get("phase") or "Pending"),
            trials={s: int(trials.get(s) or 0) for s in TRIAL_STATES},
            items_per_second=float(status.get("itemsPerSecond") or 0.0),
        )


class JobTable(Collector):
    """Latest sample per (kind, namespace, name); exported only as aggregates."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # scrapes run in the HTTP server's thread
        self._jobs: dict[tuple[str, str, str], JobSample] = {}

    def observe(self, kind: str, namespace: str, name: str,
                status: Mapping[str, Any] | None) -> None:
        with self._lock:
            self._jobs[(kind, namespace, name)] = JobSample.from_status(status)

    def forget(self, kind: str, namespace: str, name: str) -> None:
        with self._lock:
            self._jobs.pop((kind, namespace, name), None)

    def clear(self) -> None:
        with self._lock:
            self._jobs.clear()

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            items = list(self._jobs.items())
        by_phase = Tally((kind, sample.phase) for (kind, _, _), sample in items)
        jobs = GaugeMetricFamily("cogwork_jobs", "Jobs by kind and phase",
                                 labels=["kind", "phase"])
        for kind in KINDS:  # every known series exists from the start, so rate() and absent work
            for phase in PHASES:
                jobs.add_metric([kind, phase], by_phase.pop((kind, phase), 0))
        for (kind, phase), count in sorted(by_phase.items()):
            jobs.add_metric([kind, phase], count)
        yield jobs
        trials = GaugeMetricFamily("cogwork_trials", "TuneJob trials by state",
                                   labels=["state"])
        for state in TRIAL_STATES:
            trials.add_metric([state], sum(s.trials.get(state, 0) for (k, _, _), s in items
                                           if k == "TuneJob"))
        yield trials
        rate = GaugeMetricFamily("cogwork_labeling_items_per_second",
                                 "Pre-labeling throughput summed over unfinished LabelJobs")
        rate.add_metric([], sum(s.items_per_second for (k, _, _), s in items
                                if k == "LabelJob" and s.phase not in TERMINAL))
        yield rate


JOB_TABLE = JobTable()
REGISTRY.register(JOB_TABLE)


def serve(port: int, addr: str = "0.0.0.0",
          registry: CollectorRegistry = REGISTRY) -> WSGIServer:
    """Expose /metrics on `port` from a daemon thread; returns the server (port 0 picks one)."""
    server, _ = start_http_server(port, addr=addr, registry=registry)
    return server
