"""runtime.follow: one reconcile loop per object, kept alive by its watch events, without a
Kopf daemon (so without a finalizer). Driven here by hand-made events on a real event loop."""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Mapping
from typing import Any

from cogwork.controllers import runtime

CAUSE = contextvars.ContextVar[str]("cause_var")  # same name as Kopf's per-event variable
QUEUE = contextvars.ContextVar[str]("event_queue_var")  # Kopf's event-posting queue


def body(name: str, replicas: int, **metadata: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "managedFields": [{"manager": "kubectl"}], **metadata},
            "spec": {"replicas": replicas}}


class Recorder:
    """A pass that records what it saw and asks to run again soon (or ends the loop)."""

    def __init__(self, delay: float | None = 30.0) -> None:
        self.seen: list[Mapping[str, Any]] = []
        self.contexts: list[dict[str, str]] = []
        self.delay = delay
        self.ran = asyncio.Event()

    async def __call__(self, latest: Mapping[str, Any]) -> float | None:
        self.seen.append(latest)
        self.contexts.append({v.name: val for v, val in contextvars.copy_context().items()
                              if v in (CAUSE, QUEUE)})
        self.ran.set()
        return self.delay

    async def next_pass(self) -> None:
        self.ran.clear()
        await asyncio.wait_for(self.ran.wait(), timeout=5)


def test_events_start_one_loop_and_passes_read_the_newest_body() -> None:
    async def scenario() -> None:
        one_pass = Recorder()
        CAUSE.set("first event's cause")
        QUEUE.set("posting queue")
        runtime.follow("unit", "ns", "a", body("a", 1), False, one_pass)
        await one_pass.next_pass()
        runtime.follow("unit", "ns", "a", body("a", 2), False, one_pass)  # no second loop
        runtime.wake("unit", "ns", "a")
        await one_pass.next_pass()
        assert [b["spec"]["replicas"] for b in one_pass.seen] == [1, 2]
        assert "managedFields" not in one_pass.seen[-1]["metadata"]
        # Kopf's per-event cause is not kept alive by the loop; its posting queue is.
        assert one_pass.contexts[0] == {"event_queue_var": "posting queue"}
        runtime.follow("unit", "ns", "a", body("a", 2), True, one_pass)
        await asyncio.sleep(0)

    asyncio.run(scenario())
    assert ("unit", "ns", "a") not in runtime._loops


def test_deletion_stops_the_loop() -> None:
    async def scenario() -> None:
        one_pass = Recorder()
        runtime.follow("unit", "ns", "b", body("b", 1), False, one_pass)
        await one_pass.next_pass()
        task = runtime._loops[("unit", "ns", "b")]
        deleting = body("b", 1, deletionTimestamp="2026-11-24T00:00:00Z")
        runtime.follow("unit", "ns", "b", deleting, False, one_pass)
        await asyncio.sleep(0.05)
        assert task.cancelled()
        assert ("unit", "ns", "b") not in runtime._loops
        assert ("unit", "ns", "b") not in runtime._bodies
        runtime.wake("unit", "ns", "b")  # nothing left to wake: no pass runs
        await asyncio.sleep(0.05)
        assert len(one_pass.seen) == 1

    asyncio.run(scenario())


def test_a_loop_that_ended_starts_again_on_the_next_event() -> None:
    async def scenario() -> None:
        one_pass = Recorder(delay=None)  # None: the object is gone (e.g. TTL deleted it)
        runtime.follow("unit", "ns", "c", body("c", 1), False, one_pass)
        await one_pass.next_pass()
        await asyncio.sleep(0.05)
        assert ("unit", "ns", "c") not in runtime._loops
        runtime.follow("unit", "ns", "c", body("c", 3), False, one_pass)
        await one_pass.next_pass()
        assert [b["spec"]["replicas"] for b in one_pass.seen] == [1, 3]

    asyncio.run(scenario())


def test_a_wake_racing_a_deletion_never_leaves_an_orphan_loop() -> None:
    """A wake-up and a deletion in the same tick: Python 3.11's wait_for can swallow the
    cancellation, so the loop itself must notice it was stopped (it once spun on a KeyError)."""
    async def scenario() -> None:
        one_pass = Recorder(delay=0.01)
        runtime.follow("unit", "ns", "d", body("d", 1), False, one_pass)
        await one_pass.next_pass()
        task = runtime._loops[("unit", "ns", "d")]
        runtime.wake("unit", "ns", "d")
        runtime.follow("unit", "ns", "d", body("d", 1), True, one_pass)
        await asyncio.sleep(0.1)
        assert task.done()
        assert len(one_pass.seen) == 1
        # The same name created again gets exactly one new loop.
        runtime.follow("unit", "ns", "d", body("d", 2), False, one_pass)
        await one_pass.next_pass()
        await asyncio.sleep(0.05)
        assert {b["spec"]["replicas"] for b in one_pass.seen[1:]} == {2}
        runtime.follow("unit", "ns", "d", body("d", 2), True, one_pass)
        await asyncio.sleep(0)

    asyncio.run(scenario())


def test_a_pass_waits_until_the_watch_delivers_our_own_status_write() -> None:
    """A pass on a body older than our last status write would act on a state the job has
    left: a job this operator just failed would get its store pod created again."""
    async def scenario() -> None:
        one_pass = Recorder(delay=0.05)
        old = {**body("w", 1, resourceVersion="7"), "kind": "TrainJob"}
        runtime.follow("unit", "ns", "w", old, False, one_pass)
        await one_pass.next_pass()
        # What runtime.apply records after a status write based on resourceVersion 7.
        runtime._unseen_writes[("TrainJob", "ns", "w")] = ("7", time.monotonic())
        assert runtime.behind_our_write("TrainJob", "ns", "w")
        seen = len(one_pass.seen)
        await asyncio.sleep(0.5)  # the loop retries, but never on the stale body
        assert len(one_pass.seen) == seen
        runtime.follow("unit", "ns", "w", {**body("w", 1, resourceVersion="8"),
                                           "kind": "TrainJob"}, False, one_pass)
        await one_pass.next_pass()
        assert one_pass.seen[-1]["metadata"]["resourceVersion"] == "8"
        assert not runtime.behind_our_write("TrainJob", "ns", "w")
        runtime.follow("unit", "ns", "w", old, True, one_pass)
        await asyncio.sleep(0)

    asyncio.run(scenario())


def test_a_missed_watch_event_delays_a_pass_by_at_most_the_wait() -> None:
    runtime._unseen_writes[("TrainJob", "ns", "m")] = ("3", time.monotonic() - 60)
    assert not runtime.behind_our_write("TrainJob", "ns", "m")
    assert ("TrainJob", "ns", "m") not in runtime._unseen_writes


def test_a_wake_during_the_first_pass_is_kept_for_the_sleep_after_it() -> None:
    """An admission (or a pod event) seen while the first pass runs must not wait for the
    pass's 30 s timer: the loop's first sleep returns at once."""
    async def scenario() -> None:
        started, release = asyncio.Event(), asyncio.Event()
        passes: list[float] = []

        async def one_pass(latest: Mapping[str, Any]) -> float | None:
            passes.append(time.monotonic())
            if len(passes) == 1:
                started.set()
                await release.wait()
            return 30.0

        runtime.follow("unit", "ns", "first", body("first", 1), False, one_pass)
        await asyncio.wait_for(started.wait(), timeout=5)
        runtime.wake("unit", "ns", "first")  # arrives mid-pass, before any sleep
        release.set()
        for _ in range(100):
            if len(passes) >= 2:
                break
            await asyncio.sleep(0.05)
        assert len(passes) == 2, "the wake during the first pass was lost"
        runtime.follow("unit", "ns", "first", body("first", 1), True, one_pass)
        await asyncio.sleep(0)

    asyncio.run(scenario())
