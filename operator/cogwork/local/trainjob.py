"""`cogwork run -f job.yaml`: the same manifest on this machine, through torchx's local scheduler.

A TrainJob becomes the AppDef the operator would render into pods (`cogwork.local.local_app`);
torchx's local scheduler runs each replica as a local process: the rendezvous store first, then
one torchrun agent per node. Rank 0's progress reports are read from the workers' stdout logs and
printed live; the exit code is 0 only when every node succeeded.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

from torchx.runner import Runner, get_runner
from torchx.schedulers.local_scheduler import COMBINED_LOG, STDOUT_LOG, SignalException
from torchx.specs import AppState, AppStatus, is_terminal

from cogwork.api.trainjob import TrainJob
from cogwork.local.console import evaluation_lines, parse_report, progress_line
from cogwork.local.exits import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_INVALID, parsed
from cogwork.local.local_app import (
    CHECKPOINTS,
    LOGS,
    LOOPBACK,
    NODES,
    LocalApps,
    LocalPlanError,
    check_runnable,
    local_apps,
)
from cogwork.local.processes import LogTail, ProcessTracker, free_port, port_open, wait_until
from cogwork.plan.progress import ProgressReport
from cogwork.plan.torchx_app import WORKER_ROLE, PlanError
from cogwork.plan.trainjob_render import desired_node_count

SCHEDULER = "local_cwd"  # torchx's local scheduler; images are ignored, this Python runs them
STORE_START_TIMEOUT_S = 60.0
FAILURE_LOG_LINES = 25


def run_trainjob(doc: Mapping[str, Any], workdir: Path | None = None, *,
                 out: TextIO | None = None) -> int:
    """Run one TrainJob manifest locally; returns the process exit code."""
    out = out or sys.stdout
    job = parsed(TrainJob, doc, out)
    return EXIT_INVALID if job is None else run_validated(job, workdir, out=out)


@contextlib.contextmanager
def _signal_handlers_restored() -> Iterator[None]:
    """torchx's local scheduler installs SIGINT/SIGTERM handlers; give the caller theirs back."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            # Off the main thread torchx installed none, and signal.signal raises ValueError.
            with contextlib.suppress(ValueError):
                signal.signal(sig, handler)


def prepare_workdir(job: TrainJob, workdir: Path | None, nodes: int) -> Path:
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix=f"cogwork-{job.metadata.name}-"))
    root = Path(workdir)
    for sub in (CHECKPOINTS, LOGS, *(f"{NODES}/{i}" for i in range(nodes))):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return root.resolve()


def run_validated(job: TrainJob, workdir: Path | None = None, *, out: TextIO,
                  poll_interval_s: float = 0.1) -> int:
    """Run a validated TrainJob to completion with the local scheduler; Ctrl-C stops it all."""
    port = free_port(LOOPBACK)
    uid = job.metadata.uid or str(uuid.uuid4())  # a fresh rendezvous id, as a new object gets
    try:
        check_runnable(job)  # before creating a work dir for a job that cannot run here
        root = prepare_workdir(job, workdir, desired_node_count(job.spec))
        apps = local_apps(job, workdir=root, port=port, python=sys.executable, job_uid=uid,
                          path=os.environ.get("PATH", ""))
    except (LocalPlanError, PlanError) as e:
        print(f"cogwork run: {e}", file=out, flush=True)
        return EXIT_INVALID

    spec = job.spec
    print(f"TrainJob {job.metadata.name}: {apps.nodes} node(s) x {spec.nproc_per_node} "
          f"process(es), rendezvous {LOOPBACK}:{port}", file=out)
    print(f"work dir: {root}  (checkpoints: {apps.checkpoint_dir}, logs: {root / LOGS})",
          file=out, flush=True)
    tracker = ProcessTracker(marker=str(root))
    with _signal_handlers_restored(), get_runner() as runner:
        try:
            return _run(runner, apps, root, tracker, out, poll_interval_s)
        except (KeyboardInterrupt, SignalException):
            print("interrupted: stopping every process of the job", file=out, flush=True)
            return EXIT_INTERRUPTED
        finally:
            tracker.snapshot()  # before the agents go: their workers run in their own sessions
            runner.close()
            tracker.kill_leftovers()


def _status(runner: Runner, handle: str) -> AppStatus:
    status = runner.status(handle)
    if status is None:  # only after the scheduler forgot the app, which we never ask it to
        raise RuntimeError(f"torchx lost track of {handle}")
    return status


def _run(runner: Runner, apps: LocalApps, root: Path, tracker: ProcessTracker, out: TextIO,
         poll_interval_s: float) -> int:
    cfg = {"log_dir": str(root / LOGS)}
    store = runner.run(apps.store, scheduler=SCHEDULER, cfg=cfg)
    # The store must listen before torchrun agents try to join (in a cluster: its Service).
    ready = wait_until(lambda: port_open(LOOPBACK, apps.port)
                       or _status(runner, store).is_terminal(), STORE_START_TIMEOUT_S)
    if not ready or _status(runner, store).is_terminal():
        print(f"rendezvous store did not start on {LOOPBACK}:{apps.port}; see "
              f"{_status(runner, store).ui_url}", file=out, flush=True)
        return EXIT_FAILED
    workers = runner.run(apps.workers, scheduler=SCHEDULER, cfg=cfg)
    app_dir = Path(_status(runner, workers).ui_url.removeprefix("file://"))
    replica_dirs = [app_dir / WORKER_ROLE / str(i) for i in range(apps.nodes)]
    tails = [LogTail(d / STDOUT_LOG) for d in replica_dirs]

    completed: ProgressReport | None = None
    last_snapshot = 0.0
    while True:
        state = _status(runner, workers).state
        for tail in tails:  # rank 0 may live on any node, and move after a restart
            for line in tail.read_lines():
                report = parse_report(line)
                if report is None:
                    continue
                print(progress_line(report), file=out, flush=True)
                if report.event == "completed":
                    completed = report
        if is_terminal(state):
            break
        if _status(runner, store).is_terminal():
            print("rendezvous store exited; stopping the job", file=out, flush=True)
            state = AppState.FAILED
            break
        if time.monotonic() - last_snapshot > 1.0:
            tracker.snapshot()
            last_snapshot = time.monotonic()
        time.sleep(poll_interval_s)

    if state != AppState.SUCCEEDED:
        _print_failure(replica_dirs, state, out)
        return EXIT_FAILED
    _print_result(completed, apps.checkpoint_dir, out)
    return 0


def _print_result(completed: ProgressReport | None, checkpoint_dir: Path, out: TextIO) -> None:
    if completed is not None and completed.evaluation:
        print("evaluation on the held-out split:", file=out)
        for line in evaluation_lines(completed.evaluation):
            print("  " + line, file=out)
    else:
        print("succeeded (the program reported no evaluation)", file=out)
    for name in ("model.pt", "evaluation.json"):
        if (checkpoint_dir / name).exists():
            print(f"{name}: {checkpoint_dir / name}", file=out)
    print("succeeded", file=out, flush=True)


def _print_failure(replica_dirs: list[Path], state: AppState, out: TextIO) -> None:
    print(f"failed ({state.name}); last lines of each node's log:", file=out)
    for index, replica_dir in enumerate(replica_dirs):
        log = replica_dir / COMBINED_LOG
        lines = log.read_text(errors="replace").splitlines() if log.exists() else []
        print(f"--- node {index} ({log}) ---", file=out)
        for line in lines[-FAILURE_LOG_LINES:]:
            print("  " + line, file=out)
    out.flush()
