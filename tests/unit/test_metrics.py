"""The operator's Prometheus series: names dashboards rely on, aggregation without per-job labels,
the HTTP endpoint, and the Grafana dashboard in the chart naming only exported series."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from cogwork import metrics
from cogwork.controllers import runtime
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

DASHBOARDS = Path(__file__).parents[2] / "charts/cogwork/dashboards"
REQUIRED = {
    "cogwork_reconcile_total", "cogwork_reconcile_errors_total",
    "cogwork_reconcile_time_seconds_bucket", "cogwork_active_workers", "cogwork_jobs",
    "cogwork_trials", "cogwork_labeling_items_per_second",
}


def exported_series() -> set[str]:
    """Every sample name the default registry can produce, labelled series included."""
    names: set[str] = set()
    for family in metrics.REGISTRY.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
        names.update(family.name + s for s in suffixes.get(family.type, [""]))
    return names


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(name: str, **labels: str) -> float:
    got = metrics.REGISTRY.get_sample_value(name, labels)
    return got or 0.0


def test_required_series_are_exported() -> None:
    assert exported_series() >= REQUIRED


def test_reconcile_loop_counts_errors_and_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reconcile loop every controller uses (runtime.follow) records errors, results and
    pass times; it ends when the pass says the job is gone."""
    before_errors = value("cogwork_reconcile_errors_total", controller="unit")
    before_passes = value("cogwork_reconcile_time_seconds_count", controller="unit")
    calls: list[int] = []

    async def one_pass() -> float | None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return None

    async def scenario() -> None:
        runtime.follow("unit", "ns", "job", {"metadata": {"name": "job"}}, False,
                       lambda body: one_pass())
        await asyncio.wait_for(runtime._loops[("unit", "ns", "job")], timeout=5)

    monkeypatch.setattr(runtime, "ERROR_RETRY_S", 0.0)
    asyncio.run(scenario())
    assert len(calls) == 2
    assert value("cogwork_reconcile_errors_total", controller="unit") == before_errors + 1
    assert value("cogwork_reconcile_total", controller="unit", result="error") >= 1
    assert value("cogwork_reconcile_time_seconds_count", controller="unit") == before_passes + 2
    assert value("cogwork_active_workers", controller="unit") == 0  # the loop ended


def test_job_table_aggregates_without_job_labels() -> None:
    table = metrics.JobTable()
    registry = CollectorRegistry()
    registry.register(table)
    status: dict[str, Any] = {"phase": "Running"}
    for i in range(3):
        table.observe("TrainJob", "ns", f"t{i}", status)
    table.observe("TrainJob", "ns", "done", {"phase": "Succeeded"})
    table.observe("TrainJob", "ns", "fresh", None)  # no status yet: Pending
    table.observe("TuneJob", "ns", "search", {"phase": "Running", "trials": {
        "running": 2, "completed": 5, "pruned": 1, "failed": 0}})
    table.observe("LabelJob", "ns", "pool", {"phase": "Running", "itemsPerSecond": 120.5})
    table.observe("LabelJob", "ns", "old", {"phase": "Succeeded", "itemsPerSecond": 99.0})
    table.observe("TrainJob", "ns", "t0", {"phase": "Failed"})  # a transition replaces
    table.forget("TrainJob", "ns", "t1")
    got = samples(generate_latest(registry).decode())
    assert got[("cogwork_jobs", (("kind", "TrainJob"), ("phase", "Running")))] == 1
    assert got[("cogwork_jobs", (("kind", "TrainJob"), ("phase", "Failed")))] == 1
    assert got[("cogwork_jobs", (("kind", "TrainJob"), ("phase", "Succeeded")))] == 1
    assert got[("cogwork_jobs", (("kind", "TrainJob"), ("phase", "Pending")))] == 1
    assert got[("cogwork_jobs", (("kind", "LabelJob"), ("phase", "Restarting")))] == 0
    assert got[("cogwork_trials", (("state", "completed"),))] == 5
    assert got[("cogwork_trials", (("state", "running"),))] == 2
    assert got[("cogwork_labeling_items_per_second", ())] == 120.5  # finished jobs excluded
    assert all(set(dict(labels)) <= {"kind", "phase", "state"} for _, labels in got)


def test_endpoint_serves_the_series() -> None:
    metrics.RECONCILE_TOTAL.labels("trainjob", "ok").inc()
    metrics.RECONCILE_TIME.labels("trainjob").observe(0.01)
    metrics.ACTIVE_RECONCILERS.labels("trainjob")
    metrics.JOB_TABLE.observe("TrainJob", "ns", "endpoint-test", {"phase": "Running"})
    server = metrics.serve(0, addr="127.0.0.1")
    try:
        port = server.server_address[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
    finally:
        server.shutdown()
        server.server_close()
        metrics.JOB_TABLE.forget("TrainJob", "ns", "endpoint-test")
    names = {name for name, _ in samples(text)}
    assert names >= REQUIRED - {"cogwork_reconcile_errors_total"}  # no error has happened here
    assert 'cogwork_reconcile_total{controller="trainjob",result="ok"}' in text


@pytest.mark.parametrize("path", sorted(DASHBOARDS.glob("*.json")), ids=lambda p: p.name)
def test_dashboard_queries_name_exported_series(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 7
    used = {name for e in exprs for name in re.findall(r"\bcogwork_[a-z_]+", e)}
    assert used, "no cogwork series in the dashboard"
    assert used <= exported_series(), used - exported_series()
    assert used >= REQUIRED  # every series people asked for has a panel


def test_dashboard_files_exist() -> None:
    assert list(DASHBOARDS.glob("*.json"))
