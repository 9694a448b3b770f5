"""kube.create's error mapping, with the client call replaced by one that raises what the
apiserver answers (the request itself is exercised by every e2e test)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cogwork import kube
from kubernetes.client.exceptions import ApiException


def api_error(status: int, reason: str, cause: str) -> ApiException:
    err = ApiException(status=status, reason=reason)
    err.body = json.dumps({"kind": "Status", "code": status, "reason": reason,
                           "details": {"causes": [{"reason": cause}]}})
    return err


def create_raising(monkeypatch: pytest.MonkeyPatch, err: ApiException) -> bool:
    def fail(namespace: str, body: dict[str, Any]) -> None:
        raise err

    monkeypatch.setitem(kube._CREATE, "ConfigMap", fail)
    return kube.create("ns", {"kind": "ConfigMap", "metadata": {"name": "x"}})


def test_existing_object_and_terminating_namespace_create_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert create_raising(monkeypatch, api_error(409, "AlreadyExists", "")) is False
    terminating = api_error(403, "Forbidden", "NamespaceTerminating")
    assert create_raising(monkeypatch, terminating) is False


def test_other_forbidden_errors_are_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ApiException):
        create_raising(monkeypatch, api_error(403, "Forbidden", "RBAC"))
