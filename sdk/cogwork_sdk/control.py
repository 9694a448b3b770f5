"""Operator -> ranks control through pod annotations (downward-API file, read at step boundaries).

The kubelet writes `$COGWORK_CONTROL_DIR/annotations` with one `key="value"` line per
annotation, the value quoted like Go's strconv.Quote. The file may change between any two reads,
so only rank 0 reads it and broadcasts the decision: every rank checkpoints or stops at the same
step, which the collectives inside a checkpoint require.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from . import contract
from . import dist as cdist

log = logging.getLogger(__name__)

_SIMPLE_ESCAPES = {
    "a": 0x07, "b": 0x08, "f": 0x0C, "n": 0x0A, "r": 0x0D, "t": 0x09, "v": 0x0B,
    "\\": 0x5C, '"': 0x22, "'": 0x27,
}


def go_unquote(quoted: str) -> str:
    """Invert Go's strconv.Quote. Raises ValueError on malformed input."""
    if len(quoted) < 2 or quoted[0] != '"' or quoted[-1] != '"':
        raise ValueError(f"not a Go-quoted string: {quoted!r}")
    s = quoted[1:-1]
    out = bytearray()  # \xNN escapes are raw bytes, so build bytes and decode UTF-8 at the end
    i = 0
    while i < len(s):
        c = s[i]
        if c == '"':
            raise ValueError(f"unescaped quote in {quoted!r}")
        if c != "\\":
            out += c.encode()
            i += 1
            continue
        if i + 1 >= len(s):
            raise ValueError(f"dangling backslash in {quoted!r}")
        e = s[i + 1]
        if e in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[e])
            i += 2
        elif e in "xuU":
            width = {"x": 2, "u": 4, "U": 8}[e]
            digits = s[i + 2 : i + 2 + width]
            if len(digits) != width:
                raise ValueError(f"short \\{e} escape in {quoted!r}")
            value = int(digits, 16)
            if e == "x":
                out.append(value)
            else:
                out += chr(value).encode()
            i += 2 + width
        elif e in "01234567":
            digits = s[i + 1 : i + 4]
            if len(digits) != 3 or any(d not in "01234567" for d in digits):
                raise ValueError(f"bad octal escape in {quoted!r}")
            out.append(int(digits, 8) & 0xFF)
            i += 4
        else:
            raise ValueError(f"unknown escape \\{e} in {quoted!r}")
    return out.decode("utf-8", errors="replace")


def parse_annotations(text: str) -> dict[str, str]:
    """Parse the downward-API annotations file; malformed lines are skipped, not fatal."""
    result: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        key, sep, value = line.partition("=")
        try:
            if not sep or not key:
                raise ValueError("no key=value")
            result[key.strip()] = go_unquote(value.strip())
        except ValueError as e:
            log.warning("control: skipping annotation line %r (%s)", line, e)
    return result


@dataclass(frozen=True)
class Decision:
    checkpoint: bool = False  # save now (a new checkpoint request)
    stop: bool = False  # save, report `stopped`, exit 0
    token: str | None = None  # the checkpoint request's token; meaningful on rank 0 only


class Control:
    def __init__(self, control_dir: str | None) -> None:
        self.path = Path(control_dir) / contract.CONTROL_FILE if control_dir else None
        self.handled_token: str | None = None

    def read(self) -> tuple[str | None, bool]:
        """(checkpoint-request token, stop flag) from the file; nothing when it is unreadable."""
        if self.path is None:
            return None, False
        try:
            annotations = parse_annotations(self.path.read_text())
        except FileNotFoundError:
            return None, False
        except OSError as e:  # mid-update by the kubelet: just look again at the next step
            log.debug("control: cannot read %s: %s", self.path, e)
            return None, False
        token = annotations.get(contract.ANNOTATION_CHECKPOINT_REQUEST) or None
        stop = annotations.get(contract.ANNOTATION_STOP, "").strip().lower() == "true"
        return token, stop

    def poll(self) -> Decision:
        """Collective when a process group is up (every rank must call it at the same step)."""
        if self.path is None:
            return Decision()  # same env on every rank, so every rank skips the collective
        token: str | None = None
        flags = [0, 0]
        if cdist.rank() == 0:
            token, stop = self.read()
            flags = [int(token is not None and token != self.handled_token), int(stop)]
        checkpoint, stop_flag = cdist.broadcast_ints(flags)
        return Decision(checkpoint=bool(checkpoint), stop=bool(stop_flag), token=token)

    def mark_handled(self, token: str | None) -> None:
        if token is not None:
            self.handled_token = token
