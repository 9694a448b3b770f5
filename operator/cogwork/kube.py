"""The one module that talks to the Kubernetes API (the official client, with retries).

Everything here is synchronous; async callers (Kopf handlers) run it with `asyncio.to_thread`.
Creates are idempotent (409 means the deterministic name already exists) and deletes tolerate 404,
so a retried or repeated reconcile is harmless.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)
GROUP = "cogwork.dev"
VERSION = "v1alpha1"
T = TypeVar("T")
_RETRYABLE = {429, 500, 502, 503, 504}
# Connections kept open to the apiserver: at least as many as calls the operator runs at once
# (its API threads), else each call past the pool's default (5 per CPU) pays a TLS handshake.
POOL_SIZE = 16


class Conflict(Exception):
    """An optimistic-concurrency conflict (HTTP 409 on update/patch)."""


def load() -> None:
    """In-cluster config when running in a pod, else KUBECONFIG / ~/.kube/config."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
    else:
        config.load_kube_config()


@functools.cache
def _api() -> client.ApiClient:
    configuration = client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = POOL_SIZE
    return client.ApiClient(configuration)


def core() -> client.CoreV1Api:
    return client.CoreV1Api(_api())


def custom() -> client.CustomObjectsApi:
    return client.CustomObjectsApi(_api())


def with_retries(fn: Callable[[], T], attempts: int = 5) -> T:
    """Retry transient API failures (throttling, 5xx, connection errors) with backoff."""
    delay = 0.2
    for attempt in range(attempts):
        try:
            return fn()
        except ApiException as err:
            if err.status not in _RETRYABLE or attempt == attempts - 1:
                raise
        except OSError:
            if attempt == attempts - 1:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 5.0)
    raise AssertionError("unreachable")


def _status(err: ApiException) -> int:
    return int(err.status or 0)


# -- core objects ---------------------------------------------------------------------------
# Creates skip decoding the response into client models (we never read it): that decoding
# was a good share of the operator's CPU per new job.
_RAW = {"_preload_content": False}
_CREATE = {
    "Pod": lambda ns, body: core().create_namespaced_pod(ns, body, **_RAW),
    "Service": lambda ns, body: core().create_namespaced_service(ns, body, **_RAW),
    "PersistentVolumeClaim": lambda ns, body: core().create_namespaced_persistent_volume_claim(
        ns, body, **_RAW
    ),
    "ConfigMap": lambda ns, body: core().create_namespaced_config_map(ns, body, **_RAW),
}


def _discard(response: Any) -> None:
    """Read an undecoded response to its end, so its connection goes back to the pool."""
    response.read()
    response.release_conn()


def _namespace_terminating(err: ApiException) -> bool:
    """403 because the namespace is being deleted: its objects are going away, ours too."""
    return _status(err) == 403 and "NamespaceTerminating" in str(err.body or "")


def create(namespace: str, body: dict[str, Any]) -> bool:
    """Create a core object or one of our custom resources; False if it already exists or
    its namespace is being deleted (the owner is about to go, nothing to create for it)."""
    kind = body["kind"]
    try:
        if kind in _CREATE:
            _discard(with_retries(lambda: _CREATE[kind](namespace, body)))
        else:
            plural = kind.lower() + "s"
            with_retries(
                lambda: custom().create_namespaced_custom_object(
                    GROUP, VERSION, namespace, plural, body
                )
            )
        return True
    except ApiException as err:
        if _status(err) == 409 or _namespace_terminating(err):
            return False
        raise


def delete_pod(namespace: str, name: str, grace_seconds: int | None = None) -> bool:
    try:
        with_retries(
            lambda: core().delete_namespaced_pod(
                name, namespace, grace_period_seconds=grace_seconds
            )
        )
        return True
    except ApiException as err:
        if _status(err) == 404:
            return False
        raise


def patch_pod_annotations(namespace: str, name: str, annotations: dict[str, str | None]) -> None:
    try:
        with_retries(
            lambda: core().patch_namespaced_pod(
                name, namespace, {"metadata": {"annotations": annotations}}
            )
        )
    except ApiException as err:
        if _status(err) != 404:
            raise


def get_pod(namespace: str, name: str) -> dict[str, Any] | None:
    try:
        pod = with_retries(lambda: core().read_namespaced_pod(name, namespace))
    except ApiException as err:
        if _status(err) == 404:
            return None
        raise
    return _api().sanitize_for_serialization(pod)  # type: ignore[no-any-return]


def token_review(token: str, audiences: list[str]) -> dict[str, Any]:
    """Ask the apiserver who a bearer token belongs to (TokenReview); returns its status."""
    body = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": token, "audiences": audiences},
    }
    result = with_retries(lambda: client.AuthenticationV1Api(_api()).create_token_review(body))
    return _api().sanitize_for_serialization(result.status) or {}


# -- custom resources -----------------------------------------------------------------------
def get_custom(plural: str, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return with_retries(  # type: ignore[no-any-return]
            lambda: custom().get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
        )
    except ApiException as err:
        if _status(err) == 404:
            return None
        raise


def list_custom(
    plural: str, namespace: str, label_selector: str | None = None
) -> list[dict[str, Any]]:
    result = with_retries(
        lambda: custom().list_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, label_selector=label_selector or ""
        )
    )
    return list(result.get("items", []))


def patch_custom_status(
    plural: str, namespace: str, name: str, patch: dict[str, Any],
    resource_version: str | None = None,
) -> dict[str, Any] | None:
    """Merge-patch the status subresource; with `resource_version`, fail on a concurrent write."""
    body = {"status": patch}
    if resource_version:
        body["metadata"] = {"resourceVersion": resource_version}
    try:
        return with_retries(  # type: ignore[no-any-return]
            lambda: custom().patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, plural, name, body
            )
        )
    except ApiException as err:
        if _status(err) == 404:
            return None
        if _status(err) == 409:
            raise Conflict(name) from err
        raise


def patch_custom(plural: str, namespace: str, name: str, patch: dict[str, Any]) -> None:
    try:
        with_retries(
            lambda: custom().patch_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name, patch
            )
        )
    except ApiException as err:
        if _status(err) != 404:
            raise


def remove_finalizer(plural: str, namespace: str, name: str, finalizer: str) -> None:
    """Drop one finalizer from a custom object (a JSON patch: a merge patch would have to
    rewrite the whole list and could drop another controller's entry added meanwhile)."""
    def drop() -> None:
        current = get_custom(plural, namespace, name)
        finalizers = ((current or {}).get("metadata") or {}).get("finalizers") or []
        if finalizer not in finalizers:
            return
        index = finalizers.index(finalizer)
        # The test guards the index: if the list moved under us, the patch fails (422).
        patch = [{"op": "test", "path": f"/metadata/finalizers/{index}", "value": finalizer},
                 {"op": "remove", "path": f"/metadata/finalizers/{index}"}]
        custom().patch_namespaced_custom_object(GROUP, VERSION, namespace, plural, name, patch,
                                                _content_type="application/json-patch+json")
    try:
        with_retries(drop)
    except ApiException as err:
        if _status(err) not in (404, 422):  # gone, or changed: the next event retries
            raise


def delete_custom(plural: str, namespace: str, name: str) -> bool:
    try:
        with_retries(
            lambda: custom().delete_namespaced_custom_object(
                GROUP, VERSION, namespace, plural, name, propagation_policy="Background"
            )
        )
        return True
    except ApiException as err:
        if _status(err) == 404:
            return False
        raise


# -- other groups' custom resources (Katib's Experiment) ---------------------------------------
class NotServed(Exception):
    """The API serves no such resource: its CRD is not installed."""


class Rejected(Exception):
    """The apiserver or an admission webhook refused the object; the message says why."""


def _not_served(err: ApiException) -> bool:
    # A missing object's 404 names it in `details`; a missing resource's 404 does not.
    return _status(err) == 404 and '"name"' not in (err.body or "")


def create_namespaced_object(group: str, version: str, plural: str, namespace: str,
                             body: dict[str, Any]) -> bool:
    """Create any namespaced custom object; False if it already exists."""
    try:
        with_retries(lambda: custom().create_namespaced_custom_object(
            group, version, namespace, plural, body))
        return True
    except ApiException as err:
        if _status(err) == 409:
            return False
        if _not_served(err):
            raise NotServed(f"{plural}.{group}/{version}") from err
        if _status(err) in (400, 403, 422):
            raise Rejected(str(err.body or err.reason)) from err
        raise


def get_namespaced_object(group: str, version: str, plural: str, namespace: str,
                          name: str) -> dict[str, Any] | None:
    """Read any namespaced custom object; None if absent, NotServed if the resource is."""
    try:
        return with_retries(  # type: ignore[no-any-return]
            lambda: custom().get_namespaced_custom_object(group, version, namespace, plural,
                                                          name))
    except ApiException as err:
        if _not_served(err):
            raise NotServed(f"{plural}.{group}/{version}") from err
        if _status(err) == 404:
            return None
        raise


def patch_namespaced_object(group: str, version: str, plural: str, namespace: str, name: str,
                            patch: dict[str, Any]) -> None:
    try:
        with_retries(lambda: custom().patch_namespaced_custom_object(
            group, version, namespace, plural, name, patch))
    except ApiException as err:
        if _status(err) in (400, 403, 422):
            raise Rejected(str(err.body or err.reason)) from err
        if _status(err) != 404:
            raise
