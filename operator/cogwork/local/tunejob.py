"""`cogwork run -f tunejob.yaml`: the same search on this machine, trials as local TrainJob runs.

The operator's own pieces drive it: trials are observed as TrainJob-shaped dicts (status built
from the trainer's progress reports with the operator's `status_patch`), the builtin engine
proposes parameters, the TuneJob planner decides creates and status. Up to `parallelTrials`
trials run at once, each through `cogwork.local.trainjob.run_trainjob` in its own work dir.

Local runs cannot stop a trial mid-way (there is no control file to write), so the pruner is
not applied here: every trial trains to the end. The promoted TrainJob is written as a manifest
to run next, not started.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import yaml

from cogwork.api.common import rfc3339
from cogwork.api.tunejob import TuneJob
from cogwork.api.tunejob_spec import Pruner
from cogwork.local.console import parse_report
from cogwork.local.exits import EXIT_FAILED, EXIT_INVALID, parsed
from cogwork.local.local_app import LOGS
from cogwork.local.trainjob import run_trainjob
from cogwork.plan.progress import status_patch
from cogwork.plan.tunejob_observe import (
    LABEL_TUNEJOB,
    TrialObservation,
    observe_trial,
    params_text,
)
from cogwork.plan.tunejob_reconcile import reconcile
from cogwork.tuning.builtin import decide

POLL_SECONDS = 1.0


def _reports_status(trial_dir: Path) -> dict[str, Any]:
    """The TrainJob status the operator would have built from this trial's reports."""
    status: dict[str, Any] = {}
    for log in sorted((trial_dir / LOGS).glob("**/stdout.log")):
        for line in log.read_text(errors="replace").splitlines():
            report = parse_report(line)
            if report is not None:
                status.update(status_patch(status, report, rfc3339()))
    return status


def _shown(value: float | None) -> str:
    return f"{value:.4f}" if value is not None else "-"


def _table(job: TuneJob, trials: list[TrialObservation], out: TextIO) -> None:
    """One row per trial: state, every objective's latest value, parameters."""
    metrics = job.spec.objective.metrics
    header = " ".join(f"{m:>14}" for m in metrics)
    print(f"{'TRIAL':<24} {'STATE':<9} {header}  PARAMS", file=out)
    for trial in sorted(trials, key=lambda t: t.index):
        primary = trial.value if trial.value is not None else (
            trial.curve[max(trial.curve)] if trial.curve else trial.metrics.get(metrics[0]))
        values = [primary, *(trial.metrics.get(m) for m in metrics[1:])]
        shown = " ".join(f"{_shown(v):>14}" for v in values)
        params = ", ".join(f"{k}={v}" for k, v in params_text(trial.params).items())
        print(f"{trial.name:<24} {trial.state:<9} {shown}  {params}", file=out)
    print(file=out, flush=True)


def _print_pareto(job: TuneJob, status: dict[str, Any], out: TextIO) -> None:
    """The Pareto front of a multi-objective search, best primary value first."""
    front = status.get("paretoFront") or []
    metrics = job.spec.objective.metrics
    print(f"Pareto front ({status.get('paretoFrontSize', len(front))} trial(s)):", file=out)
    print(f"{'TRIAL':<24} " + " ".join(f"{m:>14}" for m in metrics), file=out)
    for entry in front:
        values = " ".join(f"{_shown(entry['values'].get(m)):>14}" for m in metrics)
        print(f"{entry['name']:<24} {values}", file=out)
    print(file=out, flush=True)


def _validate(doc: Mapping[str, Any], out: TextIO) -> TuneJob | None:
    job = parsed(TuneJob, doc, out)
    if job is None:
        return None
    if job.spec.engine != "builtin":
        print(f"cogwork run: spec.engine {job.spec.engine} needs a cluster; use builtin",
              file=out, flush=True)
        return None
    if job.spec.pruner.algorithm != "none":
        print(f"note: spec.pruner {job.spec.pruner.algorithm} is not applied locally; every "
              "trial trains to the end", file=out)
    local_spec = job.spec.model_copy(update={"pruner": Pruner()})
    return job.model_copy(update={"spec": local_spec})


def run_tunejob(doc: Mapping[str, Any], workdir: Path | None = None, *,
                out: TextIO | None = None) -> int:
    """Run the search to the end; 0 when it succeeded."""
    out = out or sys.stdout
    job = _validate(doc, out)
    if job is None:
        return EXIT_INVALID
    root = Path(workdir or tempfile.mkdtemp(prefix=f"cogwork-{job.metadata.name}-")).resolve()
    print(f"TuneJob {job.metadata.name}: {job.spec.budget.max_trials} trial(s), "
          f"{job.spec.budget.parallel_trials} at a time; work dir {root}", file=out, flush=True)
    bodies: dict[str, dict[str, Any]] = {}
    running: dict[str, Future[int]] = {}
    status: dict[str, Any] = {}
    objective = job.spec.objective
    with ThreadPoolExecutor(max_workers=job.spec.budget.parallel_trials) as pool:
        while status.get("phase") not in ("Succeeded", "Failed"):
            changed = _collect(bodies, running, root)
            trials = [t for t in (observe_trial(b, objective.metric, "epoch")
                                  for b in bodies.values()) if t is not None]
            current = job.model_copy(update={"status": type(job.status).model_validate(status)})
            actions = reconcile(current, trials, decide(current, trials), datetime.now(UTC))
            status.update(actions.status)
            for child in actions.create:
                name = child["metadata"]["name"]
                if LABEL_TUNEJOB not in child["metadata"]["labels"]:
                    path = root / f"{name}.yaml"
                    path.write_text(yaml.safe_dump(child, sort_keys=False))
                    print(f"best parameters written to {path} (cogwork run -f {path})",
                          file=out)
                    continue
                bodies[name] = {**child, "status": {}}
                running[name] = pool.submit(_run_trial, child, root / name)
                changed = True
            if changed and trials:
                _table(job, trials, out)
            if status.get("phase") not in ("Succeeded", "Failed"):
                time.sleep(POLL_SECONDS)
    if job.spec.objective.additional:
        _print_pareto(job, status, out)
    print(json.dumps({k: status.get(k) for k in ("phase", "trials", "bestTrial")}, indent=1),
          file=out, flush=True)
    return 0 if status.get("phase") == "Succeeded" else EXIT_FAILED


def _run_trial(manifest: dict[str, Any], trial_dir: Path) -> int:
    trial_dir.mkdir(parents=True, exist_ok=True)
    with (trial_dir / "run.log").open("w") as log:
        return run_trainjob(manifest, trial_dir, out=log)


def _collect(bodies: dict[str, dict[str, Any]], running: dict[str, Future[int]],
             root: Path) -> bool:
    """Refresh the trials' status from their reports; mark finished ones. True if any ended."""
    ended = False
    for name, body in bodies.items():
        future = running.get(name)
        if future is None:
            continue
        body["status"] = _reports_status(root / name)
        if future.done():
            failed = future.exception() is not None or future.result() != 0
            kind, reason = ("Failed", "LocalRunFailed") if failed else ("Succeeded", "Completed")
            body["status"]["conditions"] = [{"type": kind, "status": "True", "reason": reason}]
            del running[name]
            ended = True
    return ended
