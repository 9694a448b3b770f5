"""kube.remove_finalizer sends a guarded JSON patch for exactly the one finalizer, and
kube.create hands undecoded responses back to the pool (no client model decoding)."""

from __future__ import annotations

from typing import Any

import pytest
from cogwork import kube


class FakeCustom:
    def __init__(self, finalizers: list[str]) -> None:
        self.body = {"metadata": {"name": "j", "finalizers": finalizers}}
        self.patches: list[tuple[Any, dict[str, Any]]] = []

    def get_namespaced_custom_object(self, *args: Any) -> dict[str, Any]:
        return self.body

    def patch_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> None:
        self.patches.append((args[-1], kwargs))


def test_removes_only_the_named_finalizer(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCustom(["other.io/keep", "cogwork.dev/finalizer"])
    monkeypatch.setattr(kube, "custom", lambda: fake)
    kube.remove_finalizer("trainjobs", "ns", "j", "cogwork.dev/finalizer")
    (patch, kwargs), = fake.patches
    assert patch == [{"op": "test", "path": "/metadata/finalizers/1",
                      "value": "cogwork.dev/finalizer"},
                     {"op": "remove", "path": "/metadata/finalizers/1"}]
    assert kwargs["_content_type"] == "application/json-patch+json"


def test_absent_finalizer_writes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCustom(["other.io/keep"])
    monkeypatch.setattr(kube, "custom", lambda: fake)
    kube.remove_finalizer("trainjobs", "ns", "j", "cogwork.dev/finalizer")
    assert fake.patches == []


def test_create_reads_and_releases_the_raw_response(monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []

    class Raw:
        def read(self) -> bytes:
            events.append("read")
            return b"{}"

        def release_conn(self) -> None:
            events.append("released")

    monkeypatch.setitem(kube._CREATE, "ConfigMap", lambda namespace, body: Raw())
    assert kube.create("ns", {"kind": "ConfigMap", "metadata": {"name": "x"}}) is True
    assert events == ["read", "released"]
