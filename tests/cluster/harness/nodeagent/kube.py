"""A thin dict-in/dict-out layer over the kubernetes client's ApiClient, plus a list/watch informer.

Raw JSON dicts instead of generated models: the agent reads a few fields of many objects, and
model deserialization is slow and loses unknown fields.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

log = logging.getLogger("nodeagent.kube")

Obj = dict[str, Any]
SMP = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str) -> float:
    """RFC3339 (with or without fraction) → epoch seconds."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def status_code(err: BaseException) -> int:
    return int(getattr(err, "status", 0) or 0)


class Kube:
    def __init__(self, kubeconfig: str) -> None:
        cfg = client.Configuration()
        config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
        # Three long-lived watches plus one request per pod worker share the pool.
        cfg.connection_pool_maxsize = 64
        # kubernetes 36.0.0: the kubeconfig loader stores the token under "authorization" but
        # auth_settings() only sends api_key["BearerToken"], so requests go out anonymous.
        if "authorization" in cfg.api_key and "BearerToken" not in cfg.api_key:
            cfg.api_key["BearerToken"] = cfg.api_key["authorization"]
        self.api = client.ApiClient(cfg)
        # Configuration() resets urllib3's logger to WARNING; its per-retry warnings are noise
        # while the apiserver restarts (our own loops log the failures that matter).
        logging.getLogger("urllib3").setLevel(logging.ERROR)

    def _call(self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None,
              content_type: str = "application/json", timeout: Any = 15) -> Any:
        return self.api.call_api(
            path, method, query_params=list((query or {}).items()),
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body, auth_settings=["BearerToken"], _preload_content=False,
            _return_http_data_only=True, _request_timeout=timeout,
        )

    def request(self, method: str, path: str, body: Any = None,
                query: dict[str, Any] | None = None, content_type: str = "application/json",
                timeout: float = 15) -> Obj:
        resp = self._call(method, path, body, query, content_type, timeout)
        data = resp.data
        return json.loads(data) if data else {}

    def get(self, path: str) -> Obj:
        return self.request("GET", path)

    def get_or_none(self, path: str) -> Obj | None:
        try:
            return self.get(path)
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def create(self, path: str, body: Obj) -> Obj:
        return self.request("POST", path, body)

    def patch(self, path: str, body: Obj, content_type: str = SMP) -> Obj:
        return self.request("PATCH", path, body, content_type=content_type)

    def delete(self, path: str, grace: int | None = None, uid: str | None = None) -> None:
        body: Obj = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if grace is not None:
            body["gracePeriodSeconds"] = grace
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            self.request("DELETE", path, body)
        except ApiException as err:
            if err.status not in (404, 409):  # gone already / precondition: a newer object
                raise

    def watch(self, path: str, resource_version: str, timeout_s: int = 290) -> Iterator[Obj]:
        query = {"watch": "true", "resourceVersion": resource_version,
                 "allowWatchBookmarks": "true", "timeoutSeconds": timeout_s}
        resp = self._call("GET", path, query=query, timeout=(5, timeout_s + 30))
        try:
            buf = b""
            for chunk in resp.stream(amt=None, decode_content=False):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        finally:
            resp.release_conn()


Handler = Callable[[str, Obj], None]


class Informer:
    """List, then watch from the list's resourceVersion; relist on 410 or any error.

    A relist diffs against the store and synthesizes DELETED for objects that vanished while we
    were disconnected (a pod force-deleted during an apiserver restart must still be killed).
    """

    def __init__(self, kube: Kube, path: str, handler: Handler, stop: threading.Event) -> None:
        self.kube, self.path, self.handler, self.stop = kube, path, handler, stop
        self.store: dict[str, Obj] = {}
        self.lock = threading.Lock()
        self.synced = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"watch{path}")

    def start(self) -> None:
        self.thread.start()

    def items(self) -> list[Obj]:
        with self.lock:
            return list(self.store.values())

    def _emit(self, kind: str, obj: Obj) -> None:
        uid = obj["metadata"]["uid"]
        with self.lock:
            if kind == "DELETED":
                self.store.pop(uid, None)
            else:
                self.store[uid] = obj
        try:
            self.handler(kind, obj)
        except Exception:  # one bad object must not stop the watch
            log.exception("handler failed for %s %s", kind, obj["metadata"].get("name"))

    def _relist(self) -> str:
        listed = self.kube.request("GET", self.path, timeout=30)
        seen: set[str] = set()
        for item in listed.get("items") or []:
            uid = item["metadata"]["uid"]
            seen.add(uid)
            with self.lock:
                old = self.store.get(uid)
            if old is None:
                self._emit("ADDED", item)
            elif old["metadata"].get("resourceVersion") != item["metadata"].get("resourceVersion"):
                self._emit("MODIFIED", item)
        with self.lock:
            gone = [obj for uid, obj in self.store.items() if uid not in seen]
        for obj in gone:
            self._emit("DELETED", obj)
        self.synced.set()
        return str(listed["metadata"]["resourceVersion"])

    def _run(self) -> None:
        rv: str | None = None
        backoff = 0.2
        while not self.stop.is_set():
            try:
                if rv is None:
                    rv = self._relist()
                for event in self.kube.watch(self.path, rv):
                    if self.stop.is_set():
                        return
                    kind, obj = event.get("type"), event.get("object") or {}
                    if kind == "ERROR":
                        if obj.get("code") == 410:  # resourceVersion too old: relist
                            rv = None
                            break
                        raise RuntimeError(f"watch error: {obj}")
                    rv = obj.get("metadata", {}).get("resourceVersion", rv)
                    if kind in ("ADDED", "MODIFIED", "DELETED"):
                        self._emit(kind, obj)
                backoff = 0.2
            except Exception as err:
                if self.stop.is_set():
                    return
                log.warning("watch %s: %s; relisting in %.1fs", self.path, _short(err), backoff)
                rv = None
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 3.0)


def _short(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return text[:200]


def retry_forever(fn: Callable[[], Any], stop: threading.Event, what: str) -> Any:
    """Retry an API call until it succeeds (the apiserver may be restarting) or we stop."""
    delay = 0.2
    while True:
        try:
            return fn()
        except Exception as err:
            if stop.is_set():
                raise
            log.warning("%s failed (%s); retrying", what, _short(err))
            stop.wait(delay)
            delay = min(delay * 2, 3.0)


__all__ = ["MERGE", "SMP", "ApiException", "Informer", "Kube", "Obj", "now_micro",
           "now_rfc3339", "parse_time", "retry_forever", "status_code"]
