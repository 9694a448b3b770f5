from __future__ import annotations

from pathlib import Path

import pytest
from cogwork_sdk.contract import ANNOTATION_CHECKPOINT_REQUEST, ANNOTATION_STOP
from cogwork_sdk.control import Control, Decision, go_unquote, parse_annotations

# What the kubelet writes for a pod's annotations: sorted `key="Go-quoted value"` lines.
KUBELET_FILE = '''cogwork.dev/checkpoint-request="scale-down-3"
cogwork.dev/stop="true"
kubectl.kubernetes.io/last-applied-configuration="{\\"apiVersion\\":\\"v1\\",\\"kind\\":\\"Pod\\"}\\n"
note="tab\\there \\u00e9t\\xc3\\xa9 \\U0001F600 \\101 back\\\\slash"
'''


def test_parse_kubelet_annotations_file() -> None:
    a = parse_annotations(KUBELET_FILE)
    assert a[ANNOTATION_CHECKPOINT_REQUEST] == "scale-down-3"
    assert a[ANNOTATION_STOP] == "true"
    assert a["kubectl.kubernetes.io/last-applied-configuration"] == (
        '{"apiVersion":"v1","kind":"Pod"}\n')
    assert a["note"] == "tab\there été 😀 A back\\slash"


def test_malformed_lines_are_skipped() -> None:
    a = parse_annotations('good="1"\nno-equals\nbad="unterminated\nesc="\\q"\n\nlast="2"\n')
    assert a == {"good": "1", "last": "2"}


@pytest.mark.parametrize("bad", ['"a"b"', "a", '"\\x4"', '"\\'])
def test_go_unquote_rejects_garbage(bad: str) -> None:
    with pytest.raises(ValueError):
        go_unquote(bad)


def test_poll_single_process(tmp_path: Path) -> None:
    control = Control(str(tmp_path))
    assert control.poll() == Decision()  # no file yet: nothing to do

    (tmp_path / "annotations").write_text(f'{ANNOTATION_CHECKPOINT_REQUEST}="tok-1"\n')
    d = control.poll()
    assert (d.checkpoint, d.stop, d.token) == (True, False, "tok-1")
    control.mark_handled(d.token)
    assert not control.poll().checkpoint  # the same request is served once

    (tmp_path / "annotations").write_text(
        f'{ANNOTATION_CHECKPOINT_REQUEST}="tok-2"\n{ANNOTATION_STOP}="true"\n')
    d = control.poll()
    assert (d.checkpoint, d.stop, d.token) == (True, True, "tok-2")

    (tmp_path / "annotations").write_text(f'{ANNOTATION_STOP}="false"\n')
    assert control.poll() == Decision()


def test_no_control_dir_means_no_control() -> None:
    control = Control(None)
    assert control.read() == (None, False)
    assert control.poll() == Decision()
