"""torchrun, with the failing worker's exit code as the process exit code.

Plain torchrun exits 1 whatever its workers died of, which would hide a user script's exit code
from the TrainJob's failure policy. This runs torchrun's own `main` and, when the worker group
fails for good, exits with the first failure's code (a signal N becomes 128 + N, as a container
runtime reports it). Usage is torchrun's: `python -m cogwork_trainer.launch [torchrun args]`.

It also leaves the job's rendezvous open when this agent gives up. Plain torchrun closes the
rendezvous for every node when one agent fails for good, so a replacement pod (the operator's
RestartNode) could never join the group again and the survivors would fail too. Here the operator
owns the group's lifetime; only a successful agent closes the rendezvous (so late joiners exit).
"""

from __future__ import annotations

import sys

from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.elastic.rendezvous.dynamic_rendezvous import DynamicRendezvousHandler
from torch.distributed.run import main as torchrun_main

_close_rendezvous = DynamicRendezvousHandler.shutdown


def _shutdown_unless_failing(self: DynamicRendezvousHandler) -> bool:
    # torchrun calls shutdown() from launch_agent's `finally`; an exception in flight there
    # means the agent is failing (signals already skip the call), so the rendezvous stays open.
    if sys.exc_info()[0] is not None:
        return True
    return bool(_close_rendezvous(self))


def exit_code_of(err: ChildFailedError) -> int:
    _, first = err.get_first_failure()
    code = int(first.exitcode)
    return 128 - code if code < 0 else (code or 1)


def main(argv: list[str] | None = None) -> int:
    DynamicRendezvousHandler.shutdown = _shutdown_unless_failing  # type: ignore[method-assign]
    try:
        torchrun_main(argv)
    except ChildFailedError as err:
        return exit_code_of(err)
    return 0


if __name__ == "__main__":
    sys.exit(main())
