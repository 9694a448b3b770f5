"""The Argo CD health checks in charts/cogwork/argocd, run in Lua 5.1 (what Argo CD's gopher-lua
implements) through lupa: Argo CD's own health_test.yaml cases, then statuses the planners
really write."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

lua51 = pytest.importorskip("lupa.lua51")

SCRIPT = Path(__file__).parents[2] / "charts/cogwork/argocd/health.lua"  # one for all kinds
ARGOCD = SCRIPT.parent / "cogwork.dev"  # per-kind cases in Argo CD's own layout
KINDS = ("TrainJob", "TuneJob", "LabelJob")


def to_lua(runtime: Any, value: Any) -> Any:
    """JSON-like Python -> Lua tables, lists 1-indexed (as Argo CD converts objects)."""
    if isinstance(value, dict):
        return runtime.table_from({k: to_lua(runtime, v) for k, v in value.items()})
    if isinstance(value, list):
        return runtime.table_from([to_lua(runtime, v) for v in value])
    return value


def health(kind: str, obj: dict[str, Any]) -> dict[str, str]:
    runtime = lua51.LuaRuntime()
    runtime.globals().obj = to_lua(runtime, obj)
    assert obj.get("kind") == kind  # the script names the kind from the object
    result = runtime.execute(SCRIPT.read_text())
    return {"status": result["status"], "message": result["message"]}


def cases() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for kind in KINDS:
        spec = yaml.safe_load((ARGOCD / kind / "health_test.yaml").read_text())
        out += [(kind, case) for case in spec["tests"]]
    return out


def test_every_kind_has_cases() -> None:
    for kind in KINDS:
        assert (ARGOCD / kind / "health_test.yaml").is_file()
    statuses = {case["healthStatus"]["status"] for _, case in cases()}
    assert statuses == {"Progressing", "Suspended", "Healthy", "Degraded"}


@pytest.mark.parametrize(("kind", "case"), cases(),
                         ids=[f"{k}-{Path(c['inputPath']).stem}" for k, c in cases()])
def test_argocd_cases(kind: str, case: dict[str, Any]) -> None:
    obj = yaml.safe_load((ARGOCD / kind / case["inputPath"]).read_text())
    assert health(kind, obj) == case["healthStatus"]


def test_planner_statuses_map_to_argo_health() -> None:
    """What the TrainJob planner writes, pass by pass, reads right in Argo CD."""
    sys.path.insert(0, str(Path(__file__).parent / "plan"))
    from cogwork.plan.lifecycle import StatusPatch
    from test_trainjob_reconcile import advance, job, pod, running_pods, step

    def as_obj(status: StatusPatch, generation: int = 1) -> dict[str, Any]:
        return {"kind": "TrainJob", "metadata": {"name": "digits", "generation": generation},
                "status": status.wire()}

    running = step(job(), running_pods())
    assert health("TrainJob", as_obj(running.status)) == {
        "status": "Progressing", "message": "TrainJob is Running, nodes 2/2"}
    assert health("TrainJob", as_obj(running.status, generation=2))["message"] == (
        "Waiting for the operator to observe generation 2")
    done = step(job({"activeNodes": [0, 1]}),
                [pod("rdzv"), pod("worker", 0, "Succeeded"), pod("worker", 1, "Succeeded")])
    assert health("TrainJob", as_obj(done.status))["status"] == "Healthy"
    failed = step(job({"activeNodes": [0, 1]}),
                  [pod("rdzv"), pod("worker", 0), pod("worker", 1, "Failed", exit_code=2)])
    verdict = health("TrainJob", as_obj(failed.status))
    assert verdict["status"] == "Degraded" and "exited with code 2" in verdict["message"]
    again = step(advance(job(), running), running_pods())  # a later pass, same verdict
    assert health("TrainJob", as_obj(again.status))["status"] == "Progressing"
    paused = step(job(suspend=True), running_pods())
    assert health("TrainJob", as_obj(paused.status))["status"] == "Suspended"
