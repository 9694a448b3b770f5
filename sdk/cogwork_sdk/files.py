"""Files other processes read while they are written (checkpoints and their `latest` record,
the heartbeat, shards, labels, summaries), written once here for the trainer and the SDK.
Standard library only."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def replace_atomically(path: Path, write: Callable[[Path], object], suffix: str = ".tmp",
                       durable: bool = False) -> Path:
    """`write(tmp)` to a temporary file beside `path`, then rename it into place: a reader
    (another rank, the operator, a replaced pod resuming) sees the old file or the new one,
    never half of one. `suffix` keeps what a writer needs at the end of the name (np.savez
    adds .npz otherwise); `durable` fsyncs the file and its directory (a checkpoint's record
    must survive the node)."""
    tmp = path.with_name(path.name + suffix)
    write(tmp)
    if durable:
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if durable:
        fsync_dir(path.parent)
    return path


def write_text_atomically(path: Path, text: str, durable: bool = False) -> Path:
    return replace_atomically(path, lambda tmp: tmp.write_text(text), durable=durable)


def fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable (best effort: not every filesystem allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
