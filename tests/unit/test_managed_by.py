"""spec.managedBy (as batch/v1 Job's): unset or cogwork.dev/operator, Cogwork's operator
reconciles the job; anything else (MultiKueue) and the operator leaves it alone: no loop, so no
pass, no child, no status write. The predicate, and runtime.object_event acting on it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import pytest
from cogwork.api.common import MANAGED_BY_COGWORK, managed_elsewhere
from cogwork.controllers import runtime

MULTIKUEUE = "kueue.x-k8s.io/multikueue"


def body(name: str, **spec: Any) -> dict[str, Any]:
    return {"kind": "TrainJob", "metadata": {"name": name, "namespace": "ns", "generation": 1},
            "spec": {"suspend": False, **spec}}


def test_the_constant_is_cogworks_own_domain_prefixed_name() -> None:
    assert MANAGED_BY_COGWORK == "cogwork.dev/operator"


@pytest.mark.parametrize(("doc", "elsewhere"), [
    (body("a"), False),
    (body("a", managedBy=MANAGED_BY_COGWORK), False),
    (body("a", managedBy=MULTIKUEUE), True),
    (body("a", managedBy="example.com/other"), True),
    ({"metadata": {"name": "a"}}, False),  # no spec at all: not ours to judge here
    ({"metadata": {"name": "a"}, "spec": None}, False),
])
def test_managed_elsewhere(doc: Mapping[str, Any], elsewhere: bool) -> None:
    assert managed_elsewhere(doc) is elsewhere


class Passes:
    """A pass that counts its runs (it would plan, create children and write status)."""

    def __init__(self) -> None:
        self.runs = 0

    async def __call__(self, latest: Mapping[str, Any]) -> float | None:
        self.runs += 1
        return 30.0


def test_a_job_managed_elsewhere_gets_no_loop_and_is_logged_once(
        caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        one_pass = Passes()
        doc = body("mk", managedBy=MULTIKUEUE)
        for event in ("ADDED", "MODIFIED", "MODIFIED"):  # MultiKueue copies status back
            runtime.object_event("unit", event, "ns", "mk", doc, one_pass)
        await asyncio.sleep(0.05)
        assert one_pass.runs == 0
        assert ("unit", "ns", "mk") not in runtime._loops
        assert ("unit", "ns", "mk") not in runtime._bodies
        runtime.object_event("unit", "DELETED", "ns", "mk", doc, one_pass)
        assert ("unit", "ns", "mk") not in runtime._elsewhere

    with caplog.at_level(logging.DEBUG, logger=runtime.log.name):
        asyncio.run(scenario())
    lines = [r for r in caplog.records if "managed by" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.DEBUG
    assert MULTIKUEUE in lines[0].getMessage()


@pytest.mark.parametrize("spec", [{}, {"managedBy": MANAGED_BY_COGWORK}],
                         ids=["unset", "cogwork"])
def test_a_job_managed_by_cogwork_is_reconciled(spec: dict[str, Any]) -> None:
    async def scenario() -> None:
        one_pass = Passes()
        doc = body("ours", **spec)
        runtime.object_event("unit", "ADDED", "ns", "ours", doc, one_pass)
        for _ in range(100):
            if one_pass.runs:
                break
            await asyncio.sleep(0.01)
        assert one_pass.runs >= 1  # (a wake kept from the ADDED event may add a second)
        runtime.object_event("unit", "DELETED", "ns", "ours", doc, one_pass)
        await asyncio.sleep(0)

    asyncio.run(scenario())
    assert ("unit", "ns", "ours") not in runtime._loops


def test_an_event_managed_elsewhere_stops_a_running_loop_as_a_deletion_does() -> None:
    # managedBy is immutable, so this needs a body the apiserver would refuse; the loop still
    # must not outlive it.
    async def scenario() -> None:
        one_pass = Passes()
        runtime.object_event("unit", "ADDED", "ns", "moved", body("moved"), one_pass)
        for _ in range(100):
            if one_pass.runs:
                break
            await asyncio.sleep(0.01)
        task = runtime._loops[("unit", "ns", "moved")]
        runtime.object_event("unit", "MODIFIED", "ns", "moved",
                             body("moved", managedBy=MULTIKUEUE), one_pass)
        await asyncio.sleep(0.05)
        assert task.cancelled() and ("unit", "ns", "moved") not in runtime._loops
        before = one_pass.runs
        runtime.wake("unit", "ns", "moved")
        await asyncio.sleep(0.05)
        assert one_pass.runs == before  # no loop is left to wake

    asyncio.run(scenario())
