"""torchrun, with the failing worker's exit code as the process exit code, and the workers'
stdout metrics reported to the operator.

Plain torchrun exits 1 whatever its workers died of, which would hide a user script's exit code
from the TrainJob's failure policy. This runs torchrun's own `main` and, when the worker group
fails for good, exits with the first failure's code (a signal N becomes 128 + N, as a container
runtime reports it). Usage is torchrun's: `python -m cogwork_sdk.launch [torchrun args]`.

It also leaves the job's rendezvous open when this agent gives up. Plain torchrun closes the
rendezvous for every node when one agent fails for good, so a replacement pod (the operator's
RestartNode) could never join the group again and the survivors would fail too. Here the operator
owns the group's lifetime; only a successful agent closes the rendezvous (so late joiners exit).

A `--no-python` command that is not in the image ends the pod at once with exit code 127
(contract.EXIT_COMMAND_NOT_FOUND) and "command not found: X" as its termination message.

A worker that exits with contract.EXIT_NON_FINITE_LOSS (its loss became NaN or infinite) ends
the agent without torchrun's in-pod restarts: restarted from the checkpoint, the run would
diverge again (docs/pod-contract.md, "Divergence").

With COGWORK_METRICS_FORMAT set (script jobs), the workers' stdout passes through a pipe that
this process copies to its own stdout line by line, reporting `name=value` lines (see
stdout_metrics) as progress: zero-code metrics, as Katib's StdOut collector, but with torchrun
still PID 1 and no shell in between. Only stdout is read: library warnings on stderr must not
become metrics. Needs torch; the rest of the SDK does not.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import threading
from typing import IO

from torch.distributed.elastic.agent.server.api import RunResult, WorkerGroup
from torch.distributed.elastic.agent.server.local_elastic_agent import LocalElasticAgent
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.elastic.rendezvous.dynamic_rendezvous import DynamicRendezvousHandler
from torch.distributed.run import get_args_parser
from torch.distributed.run import main as torchrun_main

from . import contract
from .divergence import write_termination_message
from .report import Reporter
from .stdout_metrics import MetricLines, formats_from_env

_close_rendezvous = DynamicRendezvousHandler.shutdown


def _shutdown_unless_failing(self: DynamicRendezvousHandler) -> bool:
    # torchrun calls shutdown() from launch_agent's `finally`; an exception in flight there
    # means the agent is failing (signals already skip the call), so the rendezvous stays open.
    if sys.exc_info()[0] is not None:
        return True
    return bool(_close_rendezvous(self))


_monitor_workers = LocalElasticAgent._monitor_workers


def _monitor_without_restarting_a_divergence(self: LocalElasticAgent,
                                             worker_group: WorkerGroup) -> RunResult:
    # torchrun restarts a failed worker group while restarts remain; for a diverged worker
    # none remain, so the agent stops its workers and fails with that worker's exit code.
    result: RunResult = _monitor_workers(self, worker_group)
    if any(failure.exitcode == contract.EXIT_NON_FINITE_LOSS
           for failure in (result.failures or {}).values()):
        self._remaining_restarts = 0
    return result


def exit_code_of(err: ChildFailedError) -> int:
    _, first = err.get_first_failure()
    code = int(first.exitcode)
    return 128 - code if code < 0 else (code or 1)


class StdoutMetrics:
    """Puts a pipe under fd 1 (which the workers inherit) and copies it to the real stdout,
    reporting the metric lines it sees. This process's own prints keep the real stdout."""

    def __init__(self, lines: MetricLines, reporter: Reporter) -> None:
        self.lines, self.reporter = lines, reporter
        self._unsent = False
        self._last_epoch: int | None = None
        read_fd, write_fd = os.pipe()
        self._stdout_fd = os.dup(1)
        sys.stdout.flush()
        os.dup2(write_fd, 1)
        os.close(write_fd)
        sys.stdout = os.fdopen(os.dup(self._stdout_fd), "w", buffering=1)
        self._out: IO[bytes] = os.fdopen(self._stdout_fd, "wb", buffering=0)
        self._thread = threading.Thread(target=self._copy, args=(os.fdopen(read_fd, "rb"),),
                                        name="cogwork-stdout", daemon=True)
        self._thread.start()

    def _copy(self, pipe: IO[bytes]) -> None:
        for raw in pipe:
            with contextlib.suppress(OSError):  # nobody reads it: keep draining the workers'
                self._out.write(raw)
            if self.lines.feed(raw.decode("utf-8", errors="replace")):
                epoch = self.lines.epoch
                sent = self.reporter.emit(contract.EVENT_PROGRESS, force=epoch != self._last_epoch,
                                          **self.lines.report_fields())
                self._last_epoch = epoch
                self._unsent = not sent

    def close(self, timeout_s: float = 5.0) -> None:
        """Restore fd 1 (the pipe's last writer once the workers are gone), copy what is left,
        send the newest values if rate-limiting held them back, and deliver the queue."""
        sys.stdout.flush()
        os.dup2(self._out.fileno(), 1)
        self._thread.join(timeout_s)
        if self._unsent:
            self.reporter.emit(contract.EVENT_PROGRESS, force=True, **self.lines.report_fields())
        self.reporter.close()


def _stdout_metrics() -> StdoutMetrics | None:
    value = os.environ.get(contract.ENV_METRICS_FORMAT)
    if value is None:
        return None
    try:
        formats = formats_from_env(value)
    except (ValueError, TypeError, re.error) as e:  # checked at apply; never fail training
        print(f"cogwork: ignoring {contract.ENV_METRICS_FORMAT} ({e})", file=sys.stderr)
        return None
    if not formats:
        return None  # an empty list turns zero-code metrics off
    reporter = Reporter(os.environ.get(contract.ENV_REPORT_URL),
                        os.environ.get(contract.ENV_REPORT_TOKEN_FILE),
                        os.environ.get(contract.ENV_REPORT_CA),
                        )  # without a URL (`cogwork run`) it prints COGWORK_PROGRESS lines
    return StdoutMetrics(MetricLines(formats), reporter)


def missing_command(argv: list[str]) -> str | None:
    """With --no-python, the program torchrun would exec when it is not there: every worker
    would fail to start with a traceback and torchrun would exit 1, naming nothing."""
    try:
        args = get_args_parser().parse_args(argv)
    except SystemExit:
        return None  # torchrun reports its own usage errors
    command = str(args.training_script)
    if not args.no_python:
        return None
    if os.sep in command:
        return None if os.path.isfile(command) and os.access(command, os.X_OK) else command
    return None if shutil.which(command) else command


def main(argv: list[str] | None = None) -> int:
    missing = missing_command(sys.argv[1:] if argv is None else argv)
    if missing is not None:
        text = f"command not found: {missing} (spec.script.command)"
        write_termination_message(text)
        print(f"cogwork: {text}", file=sys.stderr, flush=True)
        return contract.EXIT_COMMAND_NOT_FOUND
    DynamicRendezvousHandler.shutdown = _shutdown_unless_failing  # type: ignore[method-assign]
    LocalElasticAgent._monitor_workers = (  # type: ignore[method-assign]
        _monitor_without_restarting_a_divergence)
    metrics = _stdout_metrics()
    try:
        torchrun_main(argv)
    except ChildFailedError as err:
        return exit_code_of(err)
    finally:
        if metrics is not None:
            metrics.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
