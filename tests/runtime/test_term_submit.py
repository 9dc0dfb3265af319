"""`Term.submit`, the one call path of Call, Cast and Merge: it answers once the standby
acknowledged, and refuses with typed errors that the services map to gRPC codes (services.py
docstring): `NotServing` (UNAVAILABLE), `CodecMismatch` and other `CodecError`s
(INVALID_ARGUMENT, or RESOURCE_EXHAUSTED when too large). Subscribe's `EventFeed` shares its
rule: nothing reaches a client before its entry is acknowledged."""

from __future__ import annotations

import asyncio

import pytest
from gencluster.codec import CodecError
from gencluster.log import CommandKind
from gencluster.term import CodecMismatch, NotServing
from gencluster_testing.waiting import wait_for_async

from tests.runtime.replication_harness import CODEC, FakeStandby, call, connected_term

pytestmark = pytest.mark.unit

ADD = CODEC.encode(["add", 1])


def test_a_call_is_answered_once_acknowledged_and_a_retry_gets_the_same_reply() -> None:
    async def scenario() -> None:
        term, replica, server = await connected_term(FakeStandby())
        first, epoch = await term.submit(CommandKind.CALL, "r1", ADD)
        again, _ = await term.submit(CommandKind.CALL, "r1", ADD)
        assert epoch == 1
        assert not first.duplicate and again.duplicate
        assert again.record == first.record
        assert term.tracker.acknowledged_seq == replica.log.last_seq == 1
        term.close()
        await asyncio.gather(server, return_exceptions=True)

    asyncio.run(scenario())


def test_refusals_before_anything_is_applied() -> None:
    async def scenario() -> None:
        serving = True
        term, replica, server = await connected_term(FakeStandby(), lambda: serving)
        with pytest.raises(CodecMismatch, match="'msgpack'"):
            await term.submit(CommandKind.CALL, "r1", ADD, "msgpack")
        with pytest.raises(CodecError):
            await term.submit(CommandKind.CALL, "r2", b"{not json")
        serving = False
        with pytest.raises(NotServing, match="active is not the serving active"):
            await term.submit(CommandKind.CALL, "r3", ADD)
        assert replica.log.last_seq == 0
        term.close()
        await asyncio.gather(server, return_exceptions=True)

    asyncio.run(scenario())


def test_a_caller_waiting_when_the_term_closes_is_told_to_retry() -> None:
    async def scenario() -> None:
        term, _, server = await connected_term(FakeStandby(acking=False))
        waiting = asyncio.create_task(call(term, 1))
        # Appended means waiting: submit registers its waiter in the same step, with no await.
        await wait_for_async(lambda: term.tracker.last_seq >= 1, 5, interval=0,
                             message="the call's entry was appended")
        term.close()
        with pytest.raises(NotServing, match="stopped being active; retry with the same"):
            await waiting
        await asyncio.gather(server, return_exceptions=True)

    asyncio.run(scenario())


def test_fenced_while_waiting_for_the_ack_is_not_answered() -> None:
    """The entry may not survive where the Lease now is: the caller must retry (same id)."""

    async def scenario() -> None:
        serving = True
        standby = FakeStandby(acking=False)
        term, _, server = await connected_term(standby, lambda: serving)
        waiting = asyncio.create_task(call(term, 1))
        # Sent means waiting: submit registers its waiter as it appends, with no await between.
        await wait_for_async(lambda: standby.received_seqs(), 5, interval=0,
                             message="the call's entry reached the standby")
        serving = False
        standby.ack_all()
        with pytest.raises(NotServing, match="fenced before the reply"):
            await waiting
        term.close()
        await asyncio.gather(server, return_exceptions=True)

    asyncio.run(scenario())


def test_a_subscriber_gets_acknowledged_events_then_is_told_to_resubscribe() -> None:
    async def scenario() -> None:
        standby = FakeStandby(acking=False)
        term, _, server = await connected_term(standby)
        feed = term.subscribe("totals", None, accept_gap=False)
        assert feed.first_number == 1
        events = feed.events()
        waiting = asyncio.create_task(call(term, 1))
        following = asyncio.create_task(anext(events))
        await wait_for_async(lambda: standby.received_seqs(), 5, interval=0,
                             message="the call's entry reached the standby")
        for _ in range(10):  # loop turns, not time: the feed has every chance to (wrongly) yield
            await asyncio.sleep(0)
        assert not following.done()  # the entry is not acknowledged yet
        standby.ack_all()
        event, missed = await asyncio.wait_for(following, 5)
        await waiting
        assert (event.number, event.topic, missed) == (1, "totals", 0)
        term.close()
        with pytest.raises(NotServing, match="resubscribe"):
            await anext(events)
        await asyncio.gather(server, return_exceptions=True)

    asyncio.run(scenario())


RELAX_AFTER = 0.2
"""The Available policy's bound in these tests (seconds; the node passes the renew deadline)."""


def test_available_answers_without_acks_after_its_bound_then_tightens_when_they_return() -> None:
    """Degraded Sync: a call whose standby does not acknowledge is answered once callers waited
    `relax_after` without progress; later calls are answered at once; when the standby
    acknowledges again the term is strict again and no longer degraded."""

    async def scenario() -> None:
        standby = FakeStandby(acking=False)
        term, replica, server = await connected_term(standby, relax_after=RELAX_AFTER)
        assert term.degraded_seconds() is None
        first = await asyncio.wait_for(call(term, 1), 60)
        assert not first.duplicate
        assert term.tracker.degraded and term.tracker.unsynced_entries == 1
        seconds = term.degraded_seconds()
        assert seconds is not None and seconds >= 0
        await asyncio.wait_for(call(term, 2), 60)  # relaxed: no wait at all
        assert term.tracker.acknowledged_seq == replica.log.last_seq == 2
        standby.acking = True
        standby.ack_all()
        await wait_for_async(lambda: not term.tracker.degraded, 30, interval=0.01,
                             message="the standby's acks end the degradation")
        assert term.degraded_seconds() is None and not term.tracker.relaxed
        await asyncio.wait_for(call(term, 3), 60)  # strict again: acknowledged by the standby
        assert term.tracker.acked_by("standby") >= 3
        term.close()
        await asyncio.gather(server, return_exceptions=True)

    asyncio.run(scenario())


def test_without_a_bound_a_call_keeps_waiting_for_its_ack() -> None:
    """Fenced (no `relax_after`): a standby that does not acknowledge holds the call, however
    long it waits; nothing is answered on the active alone."""

    async def scenario() -> None:
        standby = FakeStandby(acking=False)
        term, _, server = await connected_term(standby)
        waiting = asyncio.create_task(call(term, 1))
        done, _ = await asyncio.wait({waiting}, timeout=5 * RELAX_AFTER)
        assert not done and not term.tracker.degraded and term.tracker.acknowledged_seq == 0
        standby.ack_all()
        await asyncio.wait_for(waiting, 60)
        term.close()
        await asyncio.gather(server, return_exceptions=True)

    asyncio.run(scenario())
