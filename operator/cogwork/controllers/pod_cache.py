"""Our jobs' pods, kept in memory from the pod watch: what each reconcile pass observes.

Kopf's indexes would do this, but while any object of an indexed resource is new to Kopf, Kopf
holds the handlers of every resource, and each new object wakes every held handler. A burst of
jobs creates pods faster than that clears: TrainJob passes then wait on each other's pods, at a
quadratic CPU cost. So a plain event handler fills this cache, and one LIST at start-up, before
Kopf's watches begin, primes it: no pass ever runs on a cold cache, which would read existing
pods as missing. Later watch events are never older than that LIST, so the cache only moves on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from cogwork import kube
from cogwork.api import contract

T = TypeVar("T")


class PodCache(Generic[T]):
    """Condensed observations of one job kind's pods, by (namespace, job) and pod name."""

    def __init__(self, kind: str, condense: Callable[[Mapping[str, Any]], T]) -> None:
        self._condense = condense
        self._by_job: dict[tuple[str, str], dict[str, T]] = {}
        _CACHES[kind] = self

    def update(self, body: Mapping[str, Any], deleted: bool) -> tuple[str, str]:
        """Record one watch event of a pod; returns its (namespace, job)."""
        metadata = body.get("metadata") or {}
        key = (str(metadata.get("namespace", "")),
               str((metadata.get("labels") or {}).get(contract.LABEL_JOB_NAME, "")))
        name = str(metadata.get("name", ""))
        if deleted:
            pods = self._by_job.get(key, {})
            pods.pop(name, None)
            if not pods:
                self._by_job.pop(key, None)
        else:
            self._by_job.setdefault(key, {})[name] = self._condense(body)
        return key

    def get(self, namespace: str, job: str) -> list[T]:
        return list(self._by_job.get((namespace, job), {}).values())


_CACHES: dict[str, PodCache[Any]] = {}


async def prime(namespaces: list[str] | None) -> int:
    """Fill every cache from one LIST per namespace (all namespaces when None); returns the
    number of pods read. Run it at start-up, before Kopf's watches deliver anything."""
    selector = f"{contract.LABEL_KIND} in ({','.join(sorted(_CACHES))})"
    count = 0
    scopes: list[str | None] = list(namespaces) if namespaces else [None]
    for namespace in scopes:
        for pod in await kube.list_pods(namespace, selector):  # each pod has one of the kinds
            _CACHES[pod["metadata"]["labels"][contract.LABEL_KIND]].update(pod, deleted=False)
            count += 1
    return count
