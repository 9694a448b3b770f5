"""The one module that talks to the Kubernetes API: a small asyncio client on aiohttp.

Kopf already runs on aiohttp, and it logs in for us (`login`); these calls reuse those
credentials on one pooled session, on the event loop. The official client would add a thread
per call and ~40 MB of generated models to the operator for a dozen REST calls.
Creates are idempotent (409 means the deterministic name already exists) and deletes tolerate 404,
so a retried or repeated reconcile is harmless.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import kopf

from cogwork.api.common import GROUP, VERSION

_RETRYABLE = {429, 500, 502, 503, 504}
_TRANSIENT = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError)
POOL_SIZE = 32  # connections kept open: enough for a burst of creates without new handshakes
REQUEST_TIMEOUT_S = 60.0
MERGE_PATCH = "application/merge-patch+json"
_CORE_PLURALS = {"Pod": "pods", "Service": "services", "ConfigMap": "configmaps",
                 "PersistentVolumeClaim": "persistentvolumeclaims"}


class ApiError(Exception):
    """The apiserver answered with an error status; `body` is its Status object as text."""

    def __init__(self, status: int, reason: str, body: str) -> None:
        super().__init__(f"{status} {reason}: {body[:500]}")
        self.status, self.reason, self.body = status, reason, body


class Conflict(Exception):
    """An optimistic-concurrency conflict (HTTP 409 on update/patch)."""


class NotServed(Exception):
    """The API serves no such resource: its CRD is not installed."""


class Rejected(ApiError):
    """The apiserver or an admission plugin or webhook refused the object (400, 403, 422):
    sending it again as it is cannot help. `str()` is the apiserver's own message; `fields`
    the object's fields its Status names (details.causes[].field), if any."""

    def __init__(self, status: int, reason: str, body: str) -> None:
        super().__init__(status, reason, body)
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        answer: dict[str, Any] = parsed if isinstance(parsed, dict) else {}
        causes = (answer.get("details") or {}).get("causes") or []
        self.message = str(answer.get("message") or body or reason)
        self.fields = tuple(str(c["field"]) for c in causes
                            if isinstance(c, dict) and c.get("field"))

    @classmethod
    def of(cls, err: ApiError) -> Rejected:
        return cls(err.status, err.reason, err.body)

    def __str__(self) -> str:
        return self.message


_REFUSED = (400, 403, 422)  # bad request, forbidden (quota, limits, admission), invalid


# -- credentials --------------------------------------------------------------------------------
_login_kwargs: dict[str, Any] = {}
_info: kopf.ConnectionInfo | None = None
_session: aiohttp.ClientSession | None = None
_session_loop: asyncio.AbstractEventLoop | None = None
_session_info: kopf.ConnectionInfo | None = None


def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """Kopf's login handler, and ours: the pod's ServiceAccount in a cluster, else the
    kubeconfig. Kubeconfigs whose users need a plugin (exec, auth-provider: EKS, GKE, ...)
    go through the official client, loaded only then."""
    global _info
    _login_kwargs.update(kwargs)
    info = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
    if info is not None and not (info.token or info.username or info.certificate_path
                                 or info.certificate_data):
        info = kopf.login_via_client(**kwargs)
    _info = info  # the next call opens a session with these credentials
    return info


def _new_session(info: kopf.ConnectionInfo) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=POOL_SIZE, ssl=info.as_ssl_context())
    headers = {"Accept": "application/json", "User-Agent": "cogwork-operator",
               **info.as_http_headers()}
    return aiohttp.ClientSession(connector=connector, headers=headers,
                                 timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S))


async def _current_session() -> tuple[aiohttp.ClientSession, str]:
    """The pooled session for the current credentials on the running loop; a new login (or a
    new loop, in tests and the CLI) replaces it."""
    global _session, _session_loop, _session_info
    if _info is None:
        raise RuntimeError("kube.login() has not run: no credentials")
    loop = asyncio.get_running_loop()
    if _session is None or _session.closed or _session_loop is not loop or \
            _session_info is not _info:
        # Swap before closing: no await between the check and the swap, so concurrent calls
        # agree on one new session.
        old = _session if _session_loop is loop else None
        _session, _session_loop, _session_info = _new_session(_info), loop, _info
        if old is not None:
            await old.close()
    return _session, _info.server.rstrip("/")


async def close() -> None:
    global _session
    if _session is not None:
        await _session.close()
        _session = None


async def request(method: str, path: str, body: Any = None, params: dict[str, str] | None = None,
                  content_type: str = "application/json", attempts: int = 5) -> Any:
    """One API call with retries on throttling, 5xx and dropped connections; returns the
    decoded JSON answer. A 401 logs in again once (rotated ServiceAccount tokens)."""
    delay, relogged = 0.2, False
    data = None if body is None else json.dumps(body, separators=(",", ":"))
    attempt = 0
    while True:
        session, server = await _current_session()
        try:
            async with session.request(method, server + path, data=data, params=params,
                                       headers={"Content-Type": content_type}) as response:
                text = await response.text()
                if response.status < 400:
                    return json.loads(text) if text else None
                if response.status == 401 and not relogged and _login_kwargs:
                    relogged = True
                    await asyncio.to_thread(login, **_login_kwargs)
                    continue
                error = ApiError(response.status, response.reason or "", text)
        except _TRANSIENT:
            if attempt == attempts - 1:
                raise
        else:
            if error.status not in _RETRYABLE or attempt == attempts - 1:
                raise error
        attempt += 1
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)


def _path(group: str, version: str, namespace: str, plural: str, *rest: str) -> str:
    prefix = "/api/v1" if group == "" else f"/apis/{group}/{version}"
    return "/".join([f"{prefix}/namespaces/{namespace}/{plural}", *rest])


def _custom_path(plural: str, namespace: str, *rest: str) -> str:
    return _path(GROUP, VERSION, namespace, plural, *rest)


def _namespace_terminating(err: ApiError) -> bool:
    """403 because the namespace is being deleted: its objects are going away, ours too."""
    return err.status == 403 and "NamespaceTerminating" in err.body


def _not_served(err: ApiError) -> bool:
    # A missing object's 404 names it in `details`; a missing resource's 404 does not.
    return err.status == 404 and '"name"' not in err.body


# -- core objects and our own resources ----------------------------------------------------------
async def create(namespace: str, body: dict[str, Any]) -> bool:
    """Create a core object or one of our custom resources; False if it already exists or
    its namespace is being deleted (the owner is about to go, nothing to create for it)."""
    kind = body["kind"]
    if kind in _CORE_PLURALS:
        path = _path("", "v1", namespace, _CORE_PLURALS[kind])
    else:
        path = _custom_path(kind.lower() + "s", namespace)
    try:
        await request("POST", path, body)
        return True
    except ApiError as err:
        if err.status == 409 or _namespace_terminating(err):
            return False
        if err.status in _REFUSED:
            raise Rejected.of(err) from err
        raise


async def delete_pod(namespace: str, name: str, grace_seconds: int | None = None) -> bool:
    params = None if grace_seconds is None else {"gracePeriodSeconds": str(grace_seconds)}
    try:
        await request("DELETE", _path("", "v1", namespace, "pods", name), params=params)
        return True
    except ApiError as err:
        if err.status == 404:
            return False
        raise


async def patch_pod(namespace: str, name: str, patch: dict[str, Any]) -> None:
    """Merge-patch a pod (the operator patches only its annotations); a gone pod is fine."""
    try:
        await request("PATCH", _path("", "v1", namespace, "pods", name), patch,
                      content_type=MERGE_PATCH)
    except ApiError as err:
        if err.status != 404:
            raise


async def get_pod(namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return await request("GET", _path("", "v1", namespace, "pods", name))  # type: ignore[no-any-return]
    except ApiError as err:
        if err.status == 404:
            return None
        raise


async def list_pods(namespace: str | None, label_selector: str) -> list[dict[str, Any]]:
    """Every pod matching the selector, in one namespace or all (None), read in pages."""
    path = "/api/v1/pods" if namespace is None else _path("", "v1", namespace, "pods")
    pods: list[dict[str, Any]] = []
    params = {"labelSelector": label_selector, "limit": "500"}
    while True:
        page = await request("GET", path, params=params)
        pods.extend(page.get("items", []))
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return pods
        params = {**params, "continue": token}


async def token_review(token: str, audiences: list[str]) -> dict[str, Any]:
    """Ask the apiserver who a bearer token belongs to (TokenReview); returns its status."""
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "spec": {"token": token, "audiences": audiences}}
    result = await request("POST", "/apis/authentication.k8s.io/v1/tokenreviews", body)
    return dict(result.get("status") or {})


async def get_custom(plural: str, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return await request("GET", _custom_path(plural, namespace, name))  # type: ignore[no-any-return]
    except ApiError as err:
        if err.status == 404:
            return None
        raise


async def list_custom(plural: str, namespace: str,
                      label_selector: str | None = None) -> list[dict[str, Any]]:
    params = {"labelSelector": label_selector} if label_selector else None
    result = await request("GET", _custom_path(plural, namespace), params=params)
    return list(result.get("items", []))


async def patch_custom_status(plural: str, namespace: str, name: str, patch: dict[str, Any],
                              resource_version: str | None = None) -> dict[str, Any] | None:
    """Merge-patch the status subresource; with `resource_version`, fail on a concurrent write."""
    body: dict[str, Any] = {"status": patch}
    if resource_version:
        body["metadata"] = {"resourceVersion": resource_version}
    try:
        return await request("PATCH", _custom_path(plural, namespace, name, "status"),  # type: ignore[no-any-return]
                             body, content_type=MERGE_PATCH)
    except ApiError as err:
        if err.status == 404:
            return None
        if err.status == 409:
            raise Conflict(name) from err
        raise


async def patch_custom(plural: str, namespace: str, name: str, patch: dict[str, Any]) -> None:
    try:
        await request("PATCH", _custom_path(plural, namespace, name), patch,
                      content_type=MERGE_PATCH)
    except ApiError as err:
        if err.status != 404:
            raise


async def delete_custom(plural: str, namespace: str, name: str) -> bool:
    """Delete one of our objects (its children go with it, in the background)."""
    return await delete_namespaced_object(GROUP, VERSION, plural, namespace, name)


# -- other groups' custom resources (Katib's Experiment) ----------------------------------------
async def create_namespaced_object(group: str, version: str, plural: str, namespace: str,
                                   body: dict[str, Any]) -> bool:
    """Create any namespaced custom object; False if it already exists."""
    try:
        await request("POST", _path(group, version, namespace, plural), body)
        return True
    except ApiError as err:
        if err.status == 409:
            return False
        if _not_served(err):
            raise NotServed(f"{plural}.{group}/{version}") from err
        if err.status in _REFUSED:
            raise Rejected.of(err) from err
        raise


async def get_namespaced_object(group: str, version: str, plural: str, namespace: str,
                                name: str) -> dict[str, Any] | None:
    """Read any namespaced custom object; None if absent, NotServed if the resource is."""
    try:
        return await request("GET", _path(group, version, namespace, plural, name))  # type: ignore[no-any-return]
    except ApiError as err:
        if _not_served(err):
            raise NotServed(f"{plural}.{group}/{version}") from err
        if err.status == 404:
            return None
        raise


async def patch_namespaced_object(group: str, version: str, plural: str, namespace: str,
                                  name: str, patch: dict[str, Any], subresource: str = ""
                                  ) -> bool:
    """Merge-patch any namespaced custom object (or its `subresource`, e.g. status); False if it
    is gone or the patch carried a resourceVersion that is no longer current (409)."""
    rest = (name, subresource) if subresource else (name,)
    try:
        await request("PATCH", _path(group, version, namespace, plural, *rest), patch,
                      content_type=MERGE_PATCH)
        return True
    except ApiError as err:
        if err.status in _REFUSED:
            raise Rejected.of(err) from err
        if err.status not in (404, 409):
            raise
        return False


async def get_cluster_object(group: str, version: str, plural: str, name: str
                             ) -> dict[str, Any] | None:
    """Read a cluster-scoped custom object (Kueue's ResourceFlavor); None if absent."""
    try:
        return await request("GET", f"/apis/{group}/{version}/{plural}/{name}")  # type: ignore[no-any-return]
    except ApiError as err:
        if err.status == 404:
            return None
        raise


async def delete_namespaced_object(group: str, version: str, plural: str, namespace: str,
                                   name: str) -> bool:
    """Delete any namespaced custom object (and, in the background, what it owns)."""
    try:
        await request("DELETE", _path(group, version, namespace, plural, name),
                      params={"propagationPolicy": "Background"})
        return True
    except ApiError as err:
        if err.status == 404:
            return False
        raise
