"""The trainer's push to Katib's DB manager, against a real grpcio server in this process.

The server decodes the request bytes with a protobuf reader written here from Katib's api.proto
(protobuf itself is not installed: grpcio does not need it), independent of the encoder.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
from cogwork_trainer import katib_push, train
from cogwork_trainer.katib_push import METHOD, KatibPusher

TRAINER_IMAGE = Path(katib_push.__file__).resolve().parents[1]

# -- a tiny protobuf reader (wire types 0 and 2 are all Katib's request uses) ------------------


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


def _fields(buf: bytes) -> list[tuple[int, bytes]]:
    out, i = [], 0
    while i < len(buf):
        key, i = _varint(buf, i)
        assert key & 7 == 2, f"unexpected wire type {key & 7}"
        size, i = _varint(buf, i)
        out.append((key >> 3, buf[i:i + size]))
        i += size
    assert i == len(buf)
    return out


def decode_request(buf: bytes) -> dict[str, Any]:
    """ReportObservationLogRequest{trial_name=1, observation_log=2{metric_logs=1{time_stamp=1,
    metric=2{name=1, value=2}}}} as a dict."""
    doc: dict[str, Any] = {"trial_name": "", "logs": []}
    for number, payload in _fields(buf):
        if number == 1:
            doc["trial_name"] = payload.decode()
        elif number == 2:
            for log_number, metric_log in _fields(payload):
                assert log_number == 1
                entry: dict[str, str] = {}
                for n, v in _fields(metric_log):
                    if n == 1:
                        entry["time_stamp"] = v.decode()
                    else:
                        metric = dict(_fields(v))
                        entry["name"], entry["value"] = metric[1].decode(), metric[2].decode()
                doc["logs"].append(entry)
    return doc


class DBManager:
    """A real gRPC server with Katib's DBManager/ReportObservationLog method."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.release = threading.Event()  # set: answer at once; clear: hold every call
        self.release.set()
        self.held = threading.Event()  # a call is being held
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handler = grpc.method_handlers_generic_handler("api.v1.beta1.DBManager", {
            "ReportObservationLog": grpc.unary_unary_rpc_method_handler(self._report)})
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    def _report(self, request: bytes, context: Any) -> bytes:
        self.requests.append(decode_request(request))
        if not self.release.is_set():
            self.held.set()
            self.release.wait(30)
        return b""  # ReportObservationLogReply{} serializes to nothing

    def metrics(self) -> list[tuple[str, str]]:
        return [(e["name"], e["value"]) for r in self.requests for e in r["logs"]]


@pytest.fixture
def db_manager() -> Iterator[DBManager]:
    db = DBManager()
    db.server.start()
    yield db
    db.release.set()
    db.server.stop(grace=None)


def _free_port() -> int:
    with socket.socket() as s:  # bound then closed: nothing listens there afterwards
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _is_rfc3339_utc(stamp: str) -> bool:
    return stamp.endswith("Z") and datetime.fromisoformat(stamp).utcoffset() is not None


# -- the module on its own -----------------------------------------------------------------------


def test_method_path_and_encoding_round_trip() -> None:
    assert METHOD == "/api.v1.beta1.DBManager/ReportObservationLog"
    name = "t-" + "x" * 200  # a length over 127 takes a two-byte varint
    raw = katib_push.encode_request(name, [("loss", "0.5"), ("acc", "0.9")], "2026-01-02T03:04:05Z")
    assert decode_request(raw) == {"trial_name": name, "logs": [
        {"time_stamp": "2026-01-02T03:04:05Z", "name": "loss", "value": "0.5"},
        {"time_stamp": "2026-01-02T03:04:05Z", "name": "acc", "value": "0.9"}]}


def test_from_env_reads_the_trial_address_and_namespace() -> None:
    assert KatibPusher.from_env({}) is None
    assert KatibPusher.from_env({"KATIB_TRIAL_NAME": "t1"}, enabled=False) is None
    p = KatibPusher.from_env({"KATIB_TRIAL_NAME": "t1", "COGWORK_JOB_NAMESPACE": "ml"})
    assert p is not None
    assert (p.trial_name, p.address, p.trial) == ("t1", "katib-db-manager.kubeflow:6789", "ml/t1")
    p = KatibPusher.from_env({"KATIB_TRIAL_NAME": "t1", "POD_NAMESPACE": "team",
                              "KATIB_DB_MANAGER_ADDRESS": "db.katib:7000"})
    assert p is not None and (p.address, p.trial) == ("db.katib:7000", "team/t1")


def test_push_reaches_the_db_manager(db_manager: DBManager) -> None:
    p = KatibPusher("exp-abc12345", f"127.0.0.1:{db_manager.port}")
    assert p.push({"loss": 0.25, "val_accuracy": "0.91"})
    assert not p.push({"skipped": None})  # nothing to log
    p.push({"accuracy": 0.9777777}, final=True)
    p.close()
    assert p.sent == 2 and p.failed == 0
    assert [r["trial_name"] for r in db_manager.requests] == ["exp-abc12345"] * 2
    assert db_manager.metrics() == [("loss", "0.25"), ("val_accuracy", "0.91"),
                                    ("accuracy", "0.977778")]
    stamps = [e["time_stamp"] for r in db_manager.requests for e in r["logs"]]
    assert all(_is_rfc3339_utc(s) for s in stamps)
    assert stamps[0] == stamps[1] <= stamps[2]  # one observation shares its time


def test_final_values_ride_out_a_late_db_manager() -> None:
    """Katib's DB manager comes up after the first try: the final push still lands."""
    port = _free_port()
    p = KatibPusher("t", f"127.0.0.1:{port}", timeout_s=1.0)
    assert p.send(katib_push.encode_request("t", [("a", "1")], katib_push.rfc3339())) is not None
    db = DBManager()
    db.port = db.server.add_insecure_port(f"127.0.0.1:{port}")
    db.server.start()
    try:
        p.push({"accuracy": 0.5}, final=True)
        p.close(timeout_s=20)
    finally:
        db.server.stop(grace=None)
    assert db.metrics() == [("accuracy", "0.5")]
    assert p.failed >= 1 and p.sent == 1


def test_close_is_bounded_when_the_db_manager_hangs(
        db_manager: DBManager, caplog: pytest.LogCaptureFixture) -> None:
    db_manager.release.clear()  # accept calls, never answer
    p = KatibPusher("t", f"127.0.0.1:{db_manager.port}", timeout_s=60)
    p.push({"accuracy": 0.5}, final=True)
    assert db_manager.held.wait(10)
    p.close(timeout_s=0.2)  # returns although the call is still held by the server
    assert db_manager.held.is_set() and not db_manager.release.is_set()
    assert p.sent == 0
    assert "not all delivered" in caplog.text


def test_intermediate_values_are_dropped_while_katib_lags(db_manager: DBManager) -> None:
    db_manager.release.clear()
    p = KatibPusher("t", f"127.0.0.1:{db_manager.port}", max_pending=2, timeout_s=30)
    assert p.push({"loss": 1.0})
    assert db_manager.held.wait(10)  # the first is in flight; two may wait behind it
    assert p.push({"loss": 0.9}) and p.push({"loss": 0.8})
    assert not p.push({"loss": 0.7})
    assert p.push({"accuracy": 0.5}, final=True)  # final values are never dropped
    db_manager.release.set()
    p.close()
    assert p.dropped == 1
    assert db_manager.metrics() == [("loss", "1"), ("loss", "0.9"), ("loss", "0.8"),
                                    ("accuracy", "0.5")]


# -- wired into the trainer ----------------------------------------------------------------------


@pytest.fixture
def trainer_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "COGWORK_CONTROL_DIR", "COGWORK_REPORT_URL",
              "KATIB_TRIAL_NAME", "KATIB_DB_MANAGER_ADDRESS"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("COGWORK_TASK", json.dumps({"epochs": 2, "hiddenSize": 16}))
    monkeypatch.setenv("COGWORK_CHECKPOINT_DIR", str(tmp_path / "ckpt"))
    monkeypatch.setenv("COGWORK_HEARTBEAT_FILE", str(tmp_path / "heartbeat"))
    monkeypatch.setenv("COGWORK_JOB_NAMESPACE", "ml")
    return monkeypatch


def test_trainer_pushes_each_epoch_and_the_final_evaluation(
        trainer_env: pytest.MonkeyPatch, db_manager: DBManager, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    trainer_env.setenv("KATIB_TRIAL_NAME", "tune-x7k2p9qz")
    trainer_env.setenv("KATIB_DB_MANAGER_ADDRESS", f"127.0.0.1:{db_manager.port}")
    assert train.main() == 0
    reports = [json.loads(x.split(" ", 1)[1]) for x in capsys.readouterr().out.splitlines()
               if x.startswith("COGWORK_PROGRESS ")]
    epoch_ends = {e["epoch"]: e["metrics"] for e in reports
                  if e["event"] == "progress" and e.get("metrics")}
    evaluation = json.loads((tmp_path / "ckpt" / "evaluation.json").read_text())

    assert {r["trial_name"] for r in db_manager.requests} == {"tune-x7k2p9qz"}
    observed = [{e["name"]: e["value"] for e in r["logs"]} for r in db_manager.requests]
    # One observation per epoch, with the values the operator got, then the final one.
    assert observed[:2] == [{m["name"]: m["value"] for m in epoch_ends[n]} for n in (1, 2)]
    final = observed[2]
    assert len(observed) == 3
    assert float(final["accuracy"]) == pytest.approx(evaluation["accuracy"], abs=1e-6)
    assert float(final["macroF1"]) == pytest.approx(evaluation["macroF1"], abs=1e-6)
    assert final["val_accuracy"] == final["accuracy"]  # the last report: the final evaluation
    assert "loss" in final
    assert all(_is_rfc3339_utc(e["time_stamp"]) for r in db_manager.requests for e in r["logs"])


def test_unreachable_katib_never_fails_training(
        trainer_env: pytest.MonkeyPatch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trainer_env.setenv("KATIB_TRIAL_NAME", "tune-x7k2p9qz")
    trainer_env.setenv("KATIB_DB_MANAGER_ADDRESS", f"127.0.0.1:{_free_port()}")
    monkeypatch.setattr(katib_push, "RETRY_FOR_S", 1.0)  # give up sooner than in a pod
    pushers: list[KatibPusher] = []
    real = KatibPusher.from_env

    def spy(*a: Any, **kw: Any) -> KatibPusher | None:
        p = real(*a, **kw)
        if p is not None:
            p.timeout_s = 1.0
            pushers.append(p)
        return p

    monkeypatch.setattr(KatibPusher, "from_env", staticmethod(spy))
    assert train.main() == 0
    assert (tmp_path / "ckpt" / "evaluation.json").is_file()
    (p,) = pushers
    assert p.sent == 0 and p.failed >= 3  # two epochs and at least one final try
    assert p._thread is None  # close() returned: the sender gave up within its bound


def test_no_trial_name_means_no_grpc_at_all(tmp_path: Path) -> None:
    """A normal trainer run never imports grpc (fresh interpreter: this one already has it)."""
    code = f"""
import json, os, sys
sys.path.insert(0, {str(TRAINER_IMAGE)!r})
os.environ.update(COGWORK_TASK=json.dumps({{"epochs": 1, "hiddenSize": 8}}),
                  COGWORK_CHECKPOINT_DIR={str(tmp_path / "ckpt")!r},
                  COGWORK_HEARTBEAT_FILE={str(tmp_path / "hb")!r})
for k in ("KATIB_TRIAL_NAME", "RANK", "WORLD_SIZE", "COGWORK_REPORT_URL"):
    os.environ.pop(k, None)
from cogwork_trainer import train
rc = train.main()
print("RESULT", rc, "grpc" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, check=True).stdout
    assert "RESULT 0 False" in out.splitlines()
