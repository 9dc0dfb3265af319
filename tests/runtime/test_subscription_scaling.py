"""Subscriptions scale (issue #12 part 6): an acknowledged batch wakes only the feeds of its
topics, and each woken feed reads only its new events, so 1,000 subscribers of one topic
cost O(new events) each per batch however many events are retained. Work is counted (Python
lines executed in the runtime's feed and event store, and reads per topic), never timed.
A pod serves at most `max_subscribers` subscriptions at once (part 1)."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from gencluster import machine as machine_module
from gencluster import term as term_module
from gencluster.log import CommandKind
from gencluster.machine import EventRead
from gencluster.replica import Replica
from gencluster.term import TooManySubscribers
from gencluster_testing.waiting import wait_for_async

from tests.runtime.replication_harness import CODEC, FakeStandby, call, connected_term
from tests.runtime.servers import Ledger

pytestmark = pytest.mark.unit

SUBSCRIBERS = 1000
BATCH = 5
COUNTED = {Path(machine_module.__file__).resolve(), Path(term_module.__file__).resolve()}


class LineCounter:
    """Counts the Python lines executed in the feed's and the event store's modules."""

    def __init__(self) -> None:
        self.lines = 0
        self._files: dict[str, bool] = {}

    def _counted(self, filename: str) -> bool:
        known = self._files.get(filename)
        if known is None:
            known = self._files[filename] = Path(filename).resolve() in COUNTED
        return known

    def trace(self, frame: FrameType, event: str, arg: Any) -> Any:
        if not self._counted(frame.f_code.co_filename):
            return None
        if event == "line":
            self.lines += 1
        return self.trace


def history(retained: int) -> Replica:
    """A replica whose log published `retained` events on 'totals' (and one on 'other')."""
    replica = Replica.from_init(Ledger(), CODEC, 0)
    for number in range(retained):
        replica.submit(CommandKind.CALL, f"h{number}", CODEC.encode(["add", 1]),
                       epoch=1, time=1000.0, seed=number)
    replica.submit(CommandKind.CALL, "o", CODEC.encode(["publish_two", "other"]),
                   epoch=1, time=1000.0, seed=0)
    return replica


async def one_batch(retained: int) -> tuple[int, Counter[str], int]:
    """1,000 live subscribers of 'totals' and 100 of 'other'; returns the lines executed and
    the event reads by topic while a batch of `BATCH` calls is delivered, and the events each
    'totals' subscriber received."""
    replica = history(retained)
    term, _, server = await connected_term(FakeStandby(), replica=replica)
    reads: Counter[str] = Counter()
    read = replica.machine.events_from

    def counting(topic: str, from_event: int) -> EventRead:
        reads[topic] += 1
        return read(topic, from_event)

    replica.machine.events_from = counting  # type: ignore[method-assign]
    received: Counter[int] = Counter()

    async def follow(index: int, topic: str) -> None:
        async for _ in term.subscribe(topic, None, accept_gap=False).events():
            received[index] += 1

    tasks = [asyncio.create_task(follow(index, "totals")) for index in range(SUBSCRIBERS)]
    tasks += [asyncio.create_task(follow(-1 - index, "other")) for index in range(100)]
    await wait_for_async(lambda: reads["totals"] >= SUBSCRIBERS and reads["other"] >= 100, 30,
                         interval=0, message="every feed read its (empty) start")
    reads.clear()
    counter = LineCounter()
    sys.settrace(counter.trace)
    try:
        await asyncio.gather(*(call(term, number) for number in range(BATCH)))
        await wait_for_async(
            lambda: sum(received.values()) >= SUBSCRIBERS * BATCH, 30, interval=0,
            message="every subscriber received the batch",
        )
    finally:
        sys.settrace(None)
    per_subscriber = min(received[index] for index in range(SUBSCRIBERS))
    term.close()
    await asyncio.gather(server, *tasks, return_exceptions=True)
    return counter.lines, reads, per_subscriber


def test_a_batch_costs_the_same_work_with_10_or_8000_retained_events() -> None:
    small_lines, small_reads, small_got = asyncio.run(one_batch(10))
    large_lines, large_reads, large_got = asyncio.run(one_batch(8000))
    assert small_got == large_got == BATCH
    # Subscribers of a topic without new events are never woken.
    assert small_reads["other"] == large_reads["other"] == 0
    # At most one read per call of the batch and subscriber (calls acknowledged apart), and at
    # least one per subscriber.
    assert SUBSCRIBERS <= large_reads["totals"] <= SUBSCRIBERS * BATCH
    # The old feed rescanned every retained event on each wake: 8,000 retained events would be
    # millions of lines here. Work is the same whatever is retained (acknowledgements may
    # group the batch differently between the two runs: the bound allows for that).
    print(f"lines executed for one batch: {small_lines} (10 retained), "
          f"{large_lines} (8000 retained); reads {dict(large_reads)}")
    assert large_lines <= 2 * small_lines
    assert large_lines < SUBSCRIBERS * 200


def test_reading_new_events_is_independent_of_what_is_retained() -> None:
    machine = history(8000).machine
    counter = LineCounter()
    sys.settrace(counter.trace)
    try:
        read = machine.events_from("totals", 8000)
    finally:
        sys.settrace(None)
    assert [event.number for event in read.events] == [8000]
    assert (read.first_available, read.next_number) == (1, 8001)
    assert counter.lines < 30


def test_a_pod_refuses_subscribers_over_its_limit_until_one_leaves() -> None:
    async def scenario() -> None:
        term, _, server = await connected_term(FakeStandby(), max_subscribers=2)
        first = term.subscribe("totals", None, accept_gap=False)
        second = term.subscribe("totals", None, accept_gap=False)
        with pytest.raises(TooManySubscribers, match="serves 2 subscriptions, the limit is 2"):
            term.subscribe("totals", None, accept_gap=False)
        events = first.events()
        following = asyncio.create_task(anext(events))
        await call(term, 1)
        await following  # the feed is running: it delivered an event
        await events.aclose()
        assert term.subscribers == 1
        del second  # a feed whose stream ended before iterating gives its place back too
        assert term.subscribers == 0
        term.subscribe("totals", None, accept_gap=False)
        term.close()
        await asyncio.gather(server, return_exceptions=True)

    asyncio.run(scenario())
