"""`cogwork run -f labeljob.yaml`: the LabelJob's steps on this machine, as local processes.

The steps are the ones the operator renders into pods (`cogwork.plan.labeljob_steps`), with
directories under the work dir in place of volumes: [fit], the score shards side by side, merge,
[push to Label Studio]. A `model.fromTrainJob` needs a cluster to resolve; locally the model is
fitted on the seed labels instead (said so on the console), or give `model.path`; a
`model.entrypoint` is imported in this Python (its image is a cluster's). Review rounds
(spec.review.maxRounds) run too: collect the batch's labels, then the next round refits that
model on the seed and human labels (in a cluster a TrainJob retrains it) and relabels.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from cogwork.api.labeljob import LabelJob
from cogwork.local.exits import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_INVALID, parsed
from cogwork.plan.labeljob_steps import (
    LABEL_STUDIO_KEY_ENV,
    Layout,
    ModelRef,
    Step,
    collect_step,
    model_version,
    omp_threads,
    steps,
)

LOGS = "logs"
FAILURE_LOG_LINES = 20


class _Failed(Exception):
    """A step exited non-zero; the message names it and its log."""


def _local_problem(job: LabelJob) -> str | None:
    spec = job.spec
    for field, claim in (("spec.pool.claimName", spec.pool.claim_name),
                         ("spec.model.claimName", spec.model.claim_name),
                         ("spec.output.claimName", spec.output.claim_name)):
        if claim:
            return (f"{field}={claim!r}: a PersistentVolumeClaim exists only in a cluster; "
                    "locally leave it out and give paths on this machine")
    if spec.model.from_train_job and spec.seed is None:
        return (f"spec.model.fromTrainJob={spec.model.from_train_job!r} is resolved by the "
                "operator; locally give spec.model.path, or spec.seed to fit a model on")
    return None


def _model(job: LabelJob, out: TextIO) -> ModelRef:
    spec = job.spec
    if spec.model.entrypoint is not None:
        print(f"note: spec.model.entrypoint {spec.model.entrypoint} runs in this Python, not in "
              f"spec.model.image {spec.model.image}: its module is imported from the working "
              "directory or PYTHONPATH", file=out, flush=True)
        return ModelRef(None, model_version(job), entrypoint=spec.model.entrypoint)
    if spec.model.path is not None and spec.model.from_train_job is None:
        return ModelRef(str(Path(spec.model.path).resolve()), model_version(job),
                        format=spec.model.format or "cogwork")
    print(f"note: spec.model.fromTrainJob={spec.model.from_train_job!r} needs a cluster; "
          "fitting a model on the seed labels instead", file=out, flush=True)
    return ModelRef(None, f"{model_version(job)}-local")


def _env(job: LabelJob, step: Step) -> dict[str, str]:
    env = dict(os.environ)
    env.update(step.env)
    env.update({"OMP_NUM_THREADS": str(omp_threads(job.spec.inference.cpu)),
                "PYTHONUNBUFFERED": "1"})
    return env


def _name(step: Step) -> str:
    name = f"{step.role}-{step.index}" if step.index is not None else step.role
    return f"r{step.round}-{name}" if step.round else name


def _run_together(job: LabelJob, group: list[Step], logs: Path, out: TextIO) -> None:
    """Start every step of `group` at once, wait for all; raise _Failed naming the first that
    failed (after the others finished, so no process is left behind)."""
    running: list[tuple[Step, Path, subprocess.Popen[bytes]]] = []
    try:
        for step in group:
            log = logs / f"{_name(step)}.log"
            with log.open("wb") as f:
                proc = subprocess.Popen([sys.executable, *step.args], env=_env(job, step),
                                        stdout=f, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
            running.append((step, log, proc))
        failed = []
        for step, log, proc in running:
            code = proc.wait()
            if code == 0:
                print(f"  {_name(step)}: done", file=out, flush=True)
            else:
                failed.append((step, log, code))
    finally:
        for _, _, proc in running:
            if proc.poll() is None:  # interrupted: stop the others too
                proc.kill()
                proc.wait()
    if failed:
        step, log, code = failed[0]
        tail = log.read_text(errors="replace").splitlines()[-FAILURE_LOG_LINES:]
        raise _Failed("\n".join([f"{_name(step)} exited with code {code}; last lines of {log}:",
                                 *("  " + line for line in tail)]))


def _print_summary(job: LabelJob, summary: dict[str, Any], output: Path, out: TextIO) -> None:
    print(f"total {summary.get('total')}  predicted {summary.get('predicted')}  auto-accepted "
          f"{summary.get('autoAccepted')}  routed to review {summary.get('routedToReview')}  "
          f"human-labeled {summary.get('humanLabeled')}  flagged errors "
          f"{summary.get('flaggedErrors')}", file=out)
    accept = job.spec.auto_accept
    if accept is not None:
        target = f"target {accept.target_precision} @ confidence {accept.confidence}"
        bound = float(summary.get("lowerBound") or 0.0)
        if summary.get("certified"):
            threshold = summary.get("threshold")
            shown = f"{threshold:.4f}" if isinstance(threshold, float) else "per class"
            print(f"certified: precision >= {bound:.4f} ({target}), threshold {shown}, "
                  f"coverage {summary.get('coverage', 0):.3f}", file=out)
        else:
            print(f"NOT certified ({target}): best lower bound {bound:.4f}; nothing "
                  "auto-accepted", file=out)
    rate = summary.get("itemsPerSecond")
    if rate:
        print(f"scoring: {rate:.0f} items/s per worker", file=out)
    print(f"outputs: {output}", file=out)


def run_labeljob(doc: Mapping[str, Any], workdir: Path | None = None, *,
                 out: TextIO | None = None) -> int:
    """Run one LabelJob manifest locally; returns the process exit code."""
    out = out or sys.stdout
    job = parsed(LabelJob, doc, out)
    if job is None:
        return EXIT_INVALID
    problem = _local_problem(job)
    if problem:
        print(f"cogwork run: {problem}", file=out, flush=True)
        return EXIT_INVALID
    root = Path(workdir or tempfile.mkdtemp(prefix=f"cogwork-{job.metadata.name}-")).resolve()
    output = root / job.spec.output.path
    (root / LOGS).mkdir(parents=True, exist_ok=True)
    model = _model(job, out)
    layout = Layout(output_dir=str(output), data_dir=None, summary_path=None)
    rounds = job.spec.review.max_rounds
    print(f"LabelJob {job.metadata.name}: {job.spec.inference.replicas} shard(s), model "
          f"{model.version}, {rounds} round(s); work dir {root}", file=out, flush=True)
    summary: dict[str, Any] = {}
    first = model
    try:
        for round_ in range(rounds):
            if round_ and first.path is None:  # each round's refit is a model version of its own
                model = ModelRef(None, f"{first.version}-r{round_}")
            if rounds > 1:
                print(f"round {round_ + 1} of {rounds}", file=out, flush=True)
            _run_round(job, steps(job, layout, model, round_), root / LOGS, out)
            summary = json.loads((output / "summary.json").read_text())
            if round_ + 1 >= rounds or not summary.get("routedToReview"):
                break
            print(f"collect: labels for {summary['routedToReview']} reviewed item(s)",
                  file=out, flush=True)
            _run_together(job, [collect_step(job, layout, model, round_)], root / LOGS, out)
    except _Failed as e:
        print(f"failed: {e}", file=out, flush=True)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted: stopped every step", file=out, flush=True)
        return EXIT_INTERRUPTED
    _print_summary(job, summary, output, out)
    print("succeeded", file=out, flush=True)
    return 0


def _run_round(job: LabelJob, plan: list[Step], logs: Path, out: TextIO) -> None:
    """[fit], the score shards together, merge, [push]: one labeling pass."""
    for role in ("fit", "score", "merge", "push"):
        group = [s for s in plan if s.role == role]
        if not group:
            continue
        if role == "push" and not os.environ.get(LABEL_STUDIO_KEY_ENV):
            print(f"push skipped: set {LABEL_STUDIO_KEY_ENV} to import the review batch "
                  "into Label Studio", file=out, flush=True)
            continue
        print(f"{role}: {len(group)} process(es)", file=out, flush=True)
        _run_together(job, group, logs, out)
