"""torchrun, with the failing worker's exit code as the process exit code.

Plain torchrun exits 1 whatever its workers died of, which would hide a user script's exit code
from the TrainJob's failure policy. This runs torchrun's own `main` and, when the worker group
fails for good, exits with the first failure's code (a signal N becomes 128 + N, as a container
runtime reports it). Usage is torchrun's: `python -m cogwork_trainer.launch [torchrun args]`.
"""

from __future__ import annotations

import sys

from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import main as torchrun_main


def exit_code_of(err: ChildFailedError) -> int:
    _, first = err.get_first_failure()
    code = int(first.exitcode)
    return 128 - code if code < 0 else (code or 1)


def main(argv: list[str] | None = None) -> int:
    try:
        torchrun_main(argv)
    except ChildFailedError as err:
        return exit_code_of(err)
    return 0


if __name__ == "__main__":
    sys.exit(main())
