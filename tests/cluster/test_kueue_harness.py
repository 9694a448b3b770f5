"""A real Kueue (harness/kueue.py) against the real control plane: its webhook suspends a queued
batch/v1 Job, its Workload is admitted within the ClusterQueue's quota and the Job runs on the
node agent; a Job over the quota waits, suspended, until the first one finishes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from harness.cluster import Cluster
from harness.kueue import QUEUE_LABEL, Kueue

pytestmark = [pytest.mark.cluster]

Obj = dict[str, Any]


def wait_for(what: str, fn: Callable[[], Any], timeout: float = 90, interval: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def job(name: str, command: list[str], queue: str | None, cpu: str = "1") -> Obj:
    labels = {QUEUE_LABEL: queue} if queue else {}
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "template": {"spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 5,
                # An image not in the node agent's map: the project's environment (sh, sleep).
                "containers": [{"name": "main", "image": "cogwork/none", "command": command,
                                "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}],
            }},
        },
    }


def condition(obj: Obj, type_: str) -> Obj | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return c  # type: ignore[no-any-return]
    return None


def is_true(obj: Obj, type_: str) -> bool:
    c = condition(obj, type_)
    return bool(c and c["status"] == "True")


class Queued:
    """kubectl over one namespace for Jobs and the Workloads Kueue makes for them."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.cluster, self.namespace = cluster, namespace

    def create(self, manifest: Obj, dry_run: bool = False) -> Obj:
        args = ["create", "-n", self.namespace, "-f", "-", "-o", "json"]
        if dry_run:
            args.append("--dry-run=server")
        out = self.cluster.kubectl(*args, input=json.dumps(manifest))
        return json.loads(out.stdout)  # type: ignore[no-any-return]

    def job(self, name: str) -> Obj:
        return self.cluster.kubectl_json("get", "job", name, "-n", self.namespace)

    def workload(self, job_name: str, version: str = "v1beta2") -> Obj | None:
        """The Workload owned by the Job (Kueue names it job-<name>-<hash>)."""
        uid = self.job(job_name)["metadata"]["uid"]
        for wl in self.items("get", f"workloads.{version}.kueue.x-k8s.io", "-n", self.namespace):
            if any(o["uid"] == uid for o in wl["metadata"].get("ownerReferences", [])):
                return wl
        return None

    def wait_workload(self, job_name: str, what: str, pred: Callable[[Obj], bool],
                      timeout: float = 90) -> Obj:
        def check() -> Obj | None:
            wl = self.workload(job_name)
            return wl if wl and pred(wl) else None

        try:
            return wait_for(f"{job_name}'s workload {what}", check, timeout)  # type: ignore[no-any-return]
        except AssertionError:
            print(json.dumps(self.workload(job_name), indent=1)[:4000])
            raise

    def wait_complete(self, name: str, timeout: float = 120) -> Obj:
        def check() -> Obj | None:
            j = self.job(name)
            if is_true(j, "Failed"):
                raise AssertionError(f"job {name} failed: {j.get('status')}")
            return j if is_true(j, "Complete") else None

        try:
            return wait_for(f"job {name} Complete", check, timeout)  # type: ignore[no-any-return]
        except AssertionError:
            print(json.dumps(self.job(name).get("status"), indent=1))
            raise

    def event_reasons(self, name: str) -> set[str]:
        events = self.items("get", "events", "-n", self.namespace, "--field-selector",
                            f"involvedObject.name={name},involvedObject.kind=Job")
        return {e["reason"] for e in events}

    def items(self, *args: str) -> list[Obj]:
        return cast(list[Obj], self.cluster.kubectl_json(*args)["items"])


@pytest.fixture
def queued(cluster: Cluster, namespace: str) -> Queued:
    return Queued(cluster, namespace)


@pytest.fixture
def make_queue(kueue: Kueue, namespace: str) -> Iterator[Callable[..., str]]:
    """make_queue(name, cpu=...): a LocalQueue in the test's namespace and its ClusterQueue,
    deleted after the test."""
    made: list[tuple[str, str]] = []

    def make(name: str = "lq", **quota: Any) -> str:
        made.append((name, kueue.queue(namespace, name, **quota)))
        return name

    yield make
    for name, cq in made:
        kueue.delete_queue(namespace, name, cq)


def test_queued_job_is_suspended_admitted_and_runs(
    queued: Queued, make_queue: Callable[..., str]
) -> None:
    local_queue = make_queue(cpu="4", memory="4Gi")
    # Kueue's mutating webhook is what suspends it: the apiserver's dry run shows its answer.
    dry = queued.create(job("probe", ["true"], local_queue), dry_run=True)
    assert dry["spec"]["suspend"] is True
    # Without the queue-name label (manageJobsWithoutQueueName: false) Kueue leaves it alone.
    unqueued = queued.create(job("probe", ["true"], None), dry_run=True)
    assert not unqueued["spec"].get("suspend")

    created = queued.create(job("hello", ["sh", "-c", "echo hello from kueue"], local_queue))
    assert created["spec"]["suspend"] is True
    wl = queued.wait_workload("hello", "admitted",
                              lambda w: is_true(w, "QuotaReserved") and is_true(w, "Admitted"))
    assert wl["spec"]["queueName"] == local_queue
    assert wl["spec"]["podSets"][0]["count"] == 1
    assert wl["status"]["admission"]["clusterQueue"] == f"{queued.namespace}-lq"

    done = queued.wait_complete("hello")
    assert done["spec"]["suspend"] is False
    assert done["status"]["succeeded"] == 1
    # Kueue's job reconciler made the Workload and started the Job.
    assert {"CreatedWorkload", "Started"} <= queued.event_reasons("hello")
    queued.wait_workload("hello", "Finished", lambda w: is_true(w, "Finished"))
    # The CRD's conversion webhook (v1beta2 is stored, v1beta1 is converted by Kueue).
    old = queued.workload("hello", version="v1beta1")
    assert old is not None and old["apiVersion"] == "kueue.x-k8s.io/v1beta1"


def test_job_over_quota_waits_until_the_first_finishes(
    queued: Queued, make_queue: Callable[..., str], tmp_path: Path
) -> None:
    local_queue = make_queue(cpu="1", memory="4Gi")  # room for one of these Jobs
    # The node agent's containers see the host's files: the first Job runs until released.
    release = tmp_path / "release"
    first = ["sh", "-c", f"while [ ! -e {release} ]; do sleep 0.2; done"]
    queued.create(job("first", first, local_queue, cpu="1"))
    queued.wait_workload("first", "admitted", lambda w: is_true(w, "Admitted"))
    wait_for("first's pod running", lambda: (queued.job("first").get("status") or {})
             .get("active"))

    queued.create(job("second", ["true"], local_queue, cpu="1"))
    pending = queued.wait_workload(
        "second", "QuotaReserved=False",
        lambda w: (c := condition(w, "QuotaReserved")) is not None and c["status"] == "False")
    reserved = condition(pending, "QuotaReserved")
    assert reserved is not None and reserved["reason"] == "Pending", reserved
    assert "insufficient" in reserved["message"].lower(), reserved
    time.sleep(2)  # Kueue has had its chance: still waiting while the first holds the quota
    assert queued.job("second")["spec"]["suspend"] is True
    assert not is_true(queued.workload("second") or {}, "QuotaReserved")
    assert not is_true(queued.job("first"), "Complete")

    release.touch()
    queued.wait_complete("first")
    queued.wait_workload("second", "admitted", lambda w: is_true(w, "Admitted"))
    assert queued.wait_complete("second")["status"]["succeeded"] == 1
