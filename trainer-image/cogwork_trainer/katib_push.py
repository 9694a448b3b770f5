"""Rank 0 pushes its metrics to Katib's DB manager (Katib's `Push` metrics collector).

A TuneJob with `spec.engine: katib` runs its trials as TrainJobs under an Experiment whose
collector is `Push`: Katib injects `KATIB_TRIAL_NAME` into the primary container and then waits
for the trial itself to write its observation log, as `kubeflow.katib.report_metrics` does. We
do the same gRPC call without that package (it pulls kubeflow-training, protobuf<5 and reads the
ServiceAccount namespace file, which our pods do not mount): grpcio with raw bytes, the few
messages encoded here by hand.

Like report.py: never fails or stalls training. Calls run on a background thread with a deadline,
an outage is logged once, intermediate values are dropped when Katib is slower than training,
and the final values are retried until close()'s bound. Without KATIB_TRIAL_NAME nothing here
runs and `grpc` is never imported (normal start-up does not pay for it).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from cogwork_sdk import contract
from cogwork_sdk.sender import BackgroundSender

log = logging.getLogger(__name__)

ENV_ADDRESS = "KATIB_DB_MANAGER_ADDRESS"  # host:port; users set it in the trial template's env
DEFAULT_ADDRESS = "katib-db-manager.kubeflow:6789"  # the katib SDK's default
METHOD = "/api.v1.beta1.DBManager/ReportObservationLog"
RETRY_FOR_S = 30.0  # how long the final values are retried (within close()'s bound)
# gRPC status codes a retry cannot fix (grpc.StatusCode names; compared by name: lazy import).
_PERMANENT = {"INVALID_ARGUMENT", "UNIMPLEMENTED", "NOT_FOUND", "PERMISSION_DENIED",
              "UNAUTHENTICATED"}


# -- wire format -------------------------------------------------------------------------------
# Katib pkg/apis/manager/v1beta1/api.proto (package api.v1.beta1), all fields length-delimited:
#   ReportObservationLogRequest { string trial_name = 1; ObservationLog observation_log = 2; }
#   ObservationLog { repeated MetricLog metric_logs = 1; }
#   MetricLog { string time_stamp = 1; /* RFC 3339 */ Metric metric = 2; }
#   Metric { string name = 1; string value = 2; }
# ReportObservationLogReply is empty; its body is ignored.

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited field (wire type 2: strings and sub-messages alike)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def encode_request(trial_name: str, metrics: Iterable[tuple[str, str]], time_stamp: str) -> bytes:
    """A serialized ReportObservationLogRequest: every metric logged at `time_stamp`."""
    logs = b"".join(
        _field(1, _field(1, time_stamp.encode()) + _field(2, _field(1, name.encode())
                                                        + _field(2, value.encode())))
        for name, value in metrics
    )
    return _field(1, trial_name.encode()) + _field(2, logs)


def rfc3339(t: float | None = None) -> str:
    """UTC with microseconds: Katib parses RFC3339Nano, and `latest` orders by this time."""
    when = datetime.now(UTC) if t is None else datetime.fromtimestamp(t, UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def format_value(value: Any) -> str:
    """Katib compares metric values as floats; keep strings (already formatted) as they are."""
    return value if isinstance(value, str) else f"{float(value):.6g}"


# -- the pusher --------------------------------------------------------------------------------

class KatibPusher(BackgroundSender):
    """Sends observation logs for one trial from a background thread; see the module doc."""

    def __init__(
        self,
        trial_name: str,
        address: str = DEFAULT_ADDRESS,
        namespace: str = "",
        *,
        timeout_s: float = 5.0,
        max_pending: int = 2,
    ) -> None:
        self.trial_name = trial_name
        self.address = address
        self.trial = f"{namespace}/{trial_name}" if namespace else trial_name  # for logs only
        self.timeout_s = timeout_s
        self.max_pending = max_pending
        super().__init__("cogwork-katib", log)
        self.dropped = 0  # intermediate values skipped because Katib was slower than training
        self._channel: Any = None
        self._call: Any = None

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, enabled: bool = True
    ) -> KatibPusher | None:
        """A pusher when this is a Katib trial (KATIB_TRIAL_NAME set) and `enabled`, else None."""
        env = os.environ if env is None else env
        trial = env.get(contract.ENV_KATIB_TRIAL_NAME, "").strip()
        if not enabled or not trial:
            return None
        namespace = (env.get(contract.ENV_POD_NAMESPACE, "")
                     or env.get(contract.ENV_JOB_NAMESPACE, ""))
        address = env.get(ENV_ADDRESS, "").strip() or DEFAULT_ADDRESS
        log.info("katib: pushing metrics of trial %s to %s",
                 f"{namespace}/{trial}" if namespace else trial, address)
        return cls(trial, address, namespace)

    def push(self, metrics: Mapping[str, Any], final: bool = False) -> bool:
        """Queue one observation (all metrics share a timestamp, taken now).

        Returns False when nothing was queued: no metrics, or an intermediate one dropped because
        earlier ones are still pending. Final values are never dropped.
        """
        values = [(name, format_value(v)) for name, v in metrics.items() if v is not None]
        if not values:
            return False
        if not final and self.pending() >= self.max_pending:
            self.dropped += 1
            return False
        request = encode_request(self.trial_name, values, rfc3339())
        self.submit((request, final))
        return True

    def close(self, timeout_s: float = 10.0) -> None:
        """Deliver what is queued within `timeout_s`, then stop the thread and the channel."""
        if not self.drain(timeout_s):
            log.warning("katib: metrics of trial %s not all delivered before exit", self.trial)
        if self._channel is not None:
            self._channel.close()  # also cancels a call still in flight

    def send(self, request: bytes, wait_for_ready: bool = False) -> str | None:
        """One call; None on success, else the gRPC status name. Never raises."""
        import grpc  # lazy: only Katib trials pay for it

        timeout = min(self.timeout_s, self.seconds_left())
        if timeout <= 0:
            return "DEADLINE_EXCEEDED"
        try:
            if self._call is None:
                self._channel = grpc.insecure_channel(self.address, options=[
                    # Reconnect soon after an outage instead of gRPC's default of up to 120 s.
                    ("grpc.initial_reconnect_backoff_ms", 500),
                    ("grpc.max_reconnect_backoff_ms", 5000),
                ])
                # No (de)serializers: the request is bytes already, the reply body is ignored.
                self._call = self._channel.unary_unary(METHOD)
            self._call(request, timeout=timeout, wait_for_ready=wait_for_ready)
        except Exception as e:  # best effort by contract: nothing here may fail training
            code_of = getattr(e, "code", None)  # grpc.RpcError raised by a call is a grpc.Call
            code = code_of().name if callable(code_of) else type(e).__name__
            self.failure("katib: pushing metrics of trial %s to %s failed (%s: %s); training "
                         "goes on", self.trial, self.address, code, e)
            return str(code)
        self.success(f"katib: DB manager {self.address} reachable again")
        return None

    def _deliver(self, item: tuple[bytes, bool]) -> None:
        """Intermediate values: one try. Final values: retried with back-off, bounded."""
        request, final = item
        if not final:
            self.send(request)
            return
        # wait_for_ready: ride out the channel's reconnect back-off instead of failing fast.
        self.retry(lambda: self.send(request, wait_for_ready=True) in (None, *_PERMANENT),
                   RETRY_FOR_S)
