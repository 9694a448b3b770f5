"""Helpers for end-to-end tests: kubectl over one namespace, and a digits TrainJob manifest."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from .cluster import Cluster


class Jobs:
    """Small helpers over kubectl for one test namespace."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.cluster, self.namespace = cluster, namespace

    def apply(self, manifest: dict[str, Any], check: bool = True) -> Any:
        return self.cluster.kubectl("apply", "-n", self.namespace, "-f", "-",
                                    input=json.dumps(manifest), check=check)

    def get(self, name: str, kind: str = "trainjob") -> dict[str, Any]:
        return self.cluster.kubectl_json("get", kind, name, "-n", self.namespace)

    def status(self, name: str) -> dict[str, Any]:
        return self.get(name).get("status") or {}

    def pods(self, selector: str = "") -> list[dict[str, Any]]:
        args = ["get", "pods", "-n", self.namespace]
        if selector:
            args += ["-l", selector]
        return self.cluster.kubectl_json(*args)["items"]  # type: ignore[return-value]

    def wait_for(self, what: str, predicate: Callable[[], Any], timeout: float = 300) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.5)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")

    def wait_phase(self, name: str, *phases: str, timeout: float = 300) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            status = self.status(name)
            return status if status.get("phase") in phases else None

        try:
            return self.wait_for(f"{name} phase in {phases}", reached, timeout)  # type: ignore[no-any-return]
        except AssertionError:
            print(json.dumps(self.status(name), indent=1)[:4000])
            raise

    def events(self, name: str) -> list[dict[str, Any]]:
        items = self.cluster.kubectl_json(
            "get", "events", "-n", self.namespace, "--field-selector",
            f"involvedObject.name={name}")["items"]
        return items  # type: ignore[return-value]


def digits_job(name: str, **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "task": {"name": "image-classification", "epochs": 12, "batchSize": 64,
                 "learningRate": "0.05"},
        "data": {"dataset": "digits"},
        "nodes": {"min": 1, "max": 3, "count": 2},
        "resources": {"cpu": "1", "memory": "1Gi"},
        "checkpoint": {"everySteps": 10},
        "rendezvous": {"joinTimeoutSeconds": 60, "lastCallTimeoutSeconds": 2},
    }
    for key, value in overrides.items():
        spec[key] = value
    return {"apiVersion": "cogwork.dev/v1alpha1", "kind": "TrainJob",
            "metadata": {"name": name}, "spec": spec}


def script_job(name: str, command: list[str], **spec: Any) -> dict[str, Any]:
    """A one-node TrainJob that runs `command` (spec.script) on the trainer image, small and
    with no in-pod restarts: for tests of what the operator does with a program's exit."""
    job = digits_job(name)
    del job["spec"]["task"], job["spec"]["data"], job["spec"]["checkpoint"]
    job["spec"].update({
        "script": {"command": command},
        "nodes": {"min": 1, "max": 1},
        "resources": {"cpu": "100m", "memory": "256Mi"},
        "rendezvous": {"joinTimeoutSeconds": 120, "lastCallTimeoutSeconds": 1, "maxRestarts": 0},
        **spec,
    })
    return job
