"""The shared lifecycle on the real control plane, the same for every kind: activeDeadlineSeconds
ends a job Failed (kstatus Stalled) and stops its children, ttlSecondsAfterFinished then deletes
it (garbage collection takes its children), and a status write from a stale view is refused."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from datetime import datetime
from typing import Any, TypeVar

import kopf
import pytest
from cogwork import kube
from cogwork.api.crdgen import RESOURCES
from cogwork.controllers import runtime
from cogwork.plan.lifecycle import Actions, StatusPatch
from harness.jobs import Jobs, digits_job

pytestmark = pytest.mark.cluster

T = TypeVar("T")
PLURALS = {r.kind: r.plural for r in RESOURCES}
TRIAL_LABEL = "cogwork.dev/tunejob"


def trainjob(name: str) -> dict[str, Any]:
    """Long enough never to finish by itself within the test."""
    job = digits_job(name)
    job["spec"]["task"]["epochs"] = 200
    job["spec"]["nodes"] = {"min": 1, "max": 1}
    return job


def tunejob(name: str) -> dict[str, Any]:
    template = trainjob("unused")["spec"]
    return {"apiVersion": "cogwork.dev/v1alpha1", "kind": "TuneJob", "metadata": {"name": name},
            "spec": {"parameters": [{"name": "lr", "field": "task.learningRate",
                                     "logUniform": {"min": "0.001", "max": "0.1"}}],
                     "budget": {"maxTrials": 2, "parallelTrials": 1},
                     "trialTemplate": template}}


def labeljob(name: str) -> dict[str, Any]:
    """Waits for a TrainJob that never comes: the deadline counts the wait, as a Job's does."""
    return {"apiVersion": "cogwork.dev/v1alpha1", "kind": "LabelJob", "metadata": {"name": name},
            "spec": {"model": {"fromTrainJob": "never-created"},
                     "pool": {"dataset": "digits"}}}


BUILD = {"TrainJob": trainjob, "TuneJob": tunejob, "LabelJob": labeljob}


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), {})


def listed(jobs: Jobs, plural: str, selector: str = "") -> list[dict[str, Any]]:
    args = ["get", plural, "-n", jobs.namespace] + (["-l", selector] if selector else [])
    return jobs.cluster.kubectl_json(*args)["items"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("kind", list(BUILD))
def test_active_deadline_fails_the_job_then_its_ttl_deletes_it(jobs: Jobs, kind: str) -> None:
    name = f"deadline-{kind.lower()}"
    manifest = BUILD[kind](name)
    manifest["spec"].update({"activeDeadlineSeconds": 15, "ttlSecondsAfterFinished": 10})
    jobs.apply(manifest)
    plural = PLURALS[kind]
    if kind == "TuneJob":  # a trial runs before the deadline passes
        jobs.wait_for("a trial", lambda: listed(jobs, "trainjobs", f"{TRIAL_LABEL}={name}"),
                      timeout=60)
    status = jobs.wait_phase(name, "Failed", "Succeeded", timeout=120) if kind == "TrainJob" \
        else jobs.wait_for(f"{name} Failed", lambda: _failed(jobs, name, plural), timeout=120)
    failed = condition(status, "Failed")
    assert status["phase"] == "Failed" and failed["reason"] == "DeadlineExceeded", status
    assert "spec.activeDeadlineSeconds (15s)" in failed["message"]
    assert condition(status, "Stalled")["status"] == "True"
    started = datetime.fromisoformat(status["startTime"].replace("Z", "+00:00"))
    ended = datetime.fromisoformat(status["completionTime"].replace("Z", "+00:00"))
    assert (ended - started).total_seconds() >= 15
    if kind == "TuneJob":  # its running trial was told to stop
        trial = listed(jobs, "trainjobs", f"{TRIAL_LABEL}={name}")[0]
        assert trial["spec"].get("stop") is True
    if kind == "TrainJob":  # nothing keeps running (a finished pod may stay for its logs)
        jobs.wait_for("no running pod", lambda: not [
            p for p in jobs.pods(f"cogwork.dev/job-name={name}")
            if p["status"].get("phase") in ("Pending", "Running")
            and not p["metadata"].get("deletionTimestamp")], timeout=60)
    jobs.wait_for(f"{name} deleted after its TTL",
                  lambda: name not in {i["metadata"]["name"] for i in listed(jobs, plural)},
                  timeout=90)
    if kind == "TuneJob":  # the trials went with their owner
        jobs.wait_for("trials garbage-collected",
                      lambda: not listed(jobs, "trainjobs", f"{TRIAL_LABEL}={name}"), timeout=90)


def _failed(jobs: Jobs, name: str, plural: str) -> dict[str, Any] | None:
    status = jobs.get(name, kind=plural.removesuffix("s")).get("status") or {}
    return status if status.get("phase") == "Failed" else None


def run(call: Coroutine[Any, Any, T]) -> T:
    async def main() -> T:
        try:
            return await call
        finally:
            await kube.close()

    return asyncio.run(main())


@pytest.mark.parametrize("kind", list(BUILD))
def test_a_status_write_from_a_stale_view_is_refused(jobs: Jobs, kind: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """runtime.apply writes status with the resourceVersion the pass read: a write from an
    older view is refused (the pass is redone), whichever kind it is."""
    name = f"stale-{kind.lower()}"
    field, value = UNWRITTEN[kind]
    manifest = BUILD[kind](name)
    manifest["spec"]["suspend"] = True  # nothing runs; the operator only writes conditions
    jobs.apply(manifest)
    plural = PLURALS[kind]
    singular = plural.removesuffix("s")
    jobs.wait_for(f"{name} suspended",
                  lambda: (jobs.get(name, kind=singular).get("status") or {}).get("phase")
                  == "Suspended", timeout=60)
    old = jobs.get(name, kind=singular)
    jobs.cluster.kubectl("annotate", singular, name, "-n", jobs.namespace, "example.com/touch=1")
    resource = next(r for r in RESOURCES if r.kind == kind)
    status = StatusPatch(resource.status_model)
    status.set(**{field: value})
    wire_key = next(iter(status))
    login_as_admin(jobs, monkeypatch)
    applied = run(runtime.apply(resource, jobs.namespace, name, old, Actions(status=status)))
    assert applied is False
    assert wire_key not in (jobs.get(name, kind=singular).get("status") or {})
    fresh = jobs.get(name, kind=singular)
    assert run(runtime.apply(resource, jobs.namespace, name, fresh, Actions(status=status)))
    assert (jobs.get(name, kind=singular).get("status") or {}).get(wire_key) == value


# A status field the operator never writes while the job is suspended, per kind.
UNWRITTEN: dict[str, tuple[str, Any]] = {"TrainJob": ("last_checkpoint_step", 7),
                                         "TuneJob": ("pareto_front_size", 7),
                                         "LabelJob": ("coverage", 0.5)}


def login_as_admin(jobs: Jobs, monkeypatch: pytest.MonkeyPatch) -> None:
    """kube.py logged in as the harness's admin, as tests/e2e/test_kube_client.py does."""
    for attr, initial in (("_info", None), ("_session", None), ("_session_loop", None),
                          ("_login_kwargs", {})):
        monkeypatch.setattr(kube, attr, initial)  # restored after the test
    monkeypatch.setattr(kopf, "login_with_service_account", lambda **_: None)
    monkeypatch.setenv("KUBECONFIG", str(jobs.cluster.control_plane.kubeconfig("admin")))
    assert kube.login(settings=kopf.OperatorSettings(), logger=logging.getLogger("test"))
