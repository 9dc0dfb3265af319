"""The replicated quarantine (issue #12 part 2): a request that takes down the active running
it is refused by a later active instead of taking it down too, and the handler watchdog
reports a handler over its budget and ends a process whose handler hangs.

A process dying inside a handler is modelled at the exact point it happens: the active's
`Replica.submit` (where the handler runs, before its entry is sent anywhere) raises and
that active is never used again; the next active is built from exactly the entries its fake
standby had received."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from gencluster import quarantine
from gencluster.handler_watchdog import SLOW_HANDLERS, HandlerWatchdog
from gencluster.log import CommandKind
from gencluster.machine import MachineLimits
from gencluster.replica import Replica
from gencluster.replies import RetryRefused
from gencluster.term import Term
from gencluster.wire import entry_from_message
from gencluster_testing.waiting import wait_for

from tests.runtime.replication_harness import CODEC, FakeStandby, connected_term
from tests.runtime.servers import Ledger

pytestmark = pytest.mark.unit

POISON = CODEC.encode(["add", 7])


class ProcessDied(Exception):
    """Stands for the active's process ending inside the handler."""


def dies_in_handler(term: Term) -> list[str]:
    """Make `term`'s active die when it runs a handler; returns the ids it died on."""
    died: list[str] = []

    def submit(kind: CommandKind, request_id: str, payload: bytes, **_: Any) -> Any:
        died.append(request_id)
        raise ProcessDied(request_id)

    term.replica.submit = submit  # type: ignore[method-assign]
    return died


def standby_of(standby: FakeStandby, base: Replica | None = None) -> Replica:
    """The replica a standby holds: `base` (or a fresh init) plus every entry it received."""
    replica = base or Replica.from_init(Ledger(), CODEC, 0)
    for message in standby.sent:
        if message.WhichOneof("message") == "entries":
            for entry in message.entries.entries:
                if entry.seq > replica.log.last_seq:
                    replica.receive(entry_from_message(entry))
    return replica


async def close(term: Term, server: asyncio.Task[None]) -> None:
    term.close()
    await asyncio.gather(server, return_exceptions=True)


def test_a_poison_request_takes_down_at_most_two_actives() -> None:
    async def scenario() -> None:
        # Active A: the client's first attempt (not suspect) kills it; nothing left A.
        to_b = FakeStandby()
        a, _, a_server = await connected_term(to_b)
        sent_at = a.started_at + 0.001
        died_a = dies_in_handler(a)
        with pytest.raises(ProcessDied):
            await a.submit(CommandKind.CALL, "p", POISON, first_attempt=sent_at)
        await close(a, a_server)
        assert died_a == ["p"] and standby_of(to_b).log.last_seq == 0

        # Active B (a later term): the retry is suspect, so B replicates its quarantine to
        # C before running it, and dies running it.
        to_c = FakeStandby()
        b, _, b_server = await connected_term(to_c, replica=standby_of(to_b))
        b.started_at = sent_at + 5
        died_b = dies_in_handler(b)
        with pytest.raises(ProcessDied):
            await b.submit(CommandKind.CALL, "p", POISON, first_attempt=sent_at)
        await close(b, b_server)
        assert died_b == ["p"]

        # Active C refuses the retry without running it: the sequence of deaths stops.
        c_replica = standby_of(to_c)
        c, _, c_server = await connected_term(FakeStandby(), replica=c_replica)
        c.started_at = sent_at + 10
        state_before = c_replica.machine.state
        outcome, _ = await c.submit(CommandKind.CALL, "p", POISON, first_attempt=sent_at)
        assert outcome.record.error is not None
        assert outcome.record.error.type == quarantine.QUARANTINED
        assert "'p'" in outcome.record.error.message
        assert "new request id" in outcome.record.error.message
        assert c_replica.machine.state is state_before
        assert c_replica.log.last_seq == 1  # only the quarantine entry: the call never ran
        # The same id with another request is not the quarantined one (it runs), and a new
        # id for the same request runs too (its sender decided it is safe).
        other, _ = await c.submit(CommandKind.CALL, "p", CODEC.encode(["add", 1]),
                                  first_attempt=sent_at)
        assert other.ok
        again, _ = await c.submit(CommandKind.CALL, "p2", POISON)
        assert again.ok
        await close(c, c_server)

    asyncio.run(scenario())


def test_a_suspect_request_that_succeeds_is_answered_and_its_retry_gets_the_reply() -> None:
    async def scenario() -> None:
        to_b = FakeStandby()
        a, replica, server = await connected_term(to_b)
        old = a.started_at - 1
        first, _ = await a.submit(CommandKind.CALL, "s", POISON, first_attempt=old)
        assert first.ok
        kinds = [entry.command.kind for entry in replica.log.entries_after(0).entries]  # type: ignore[union-attr]
        assert kinds == [CommandKind.QUARANTINE, CommandKind.CALL]
        # On the standby, the request's own outcome wins over its quarantine.
        b_replica = standby_of(to_b)
        assert b_replica.reply_for("s") == first.record
        retry = b_replica.submit(CommandKind.CALL, "s", POISON, epoch=1, time=2e9, seed=1)
        assert retry.outcome.duplicate and retry.outcome.record == first.record
        # A request first sent in this term is not marked.
        fresh, _ = await a.submit(CommandKind.CALL, "f", POISON, first_attempt=a.started_at + 1)
        assert fresh.ok and replica.log.last_seq == 3
        await close(a, server)

    asyncio.run(scenario())


def test_concurrent_retries_of_a_suspect_request_run_it_once() -> None:
    async def scenario() -> None:
        a, replica, server = await connected_term(FakeStandby())
        old = a.started_at - 1
        outcomes = await asyncio.gather(
            *(a.submit(CommandKind.CALL, "c", POISON, first_attempt=old) for _ in range(3))
        )
        records = {outcome.record for outcome, _ in outcomes}
        assert len(records) == 1 and next(iter(records)).error is None
        assert replica.machine.state["total"] == 7
        await close(a, server)

    asyncio.run(scenario())


def test_the_watchdog_reports_a_slow_handler_and_ends_a_hung_one() -> None:
    now = [0.0]
    hung: list[str] = []
    stopped = threading.Event()

    def on_hung(request_id: str) -> None:
        hung.append(request_id)
        stopped.set()

    watchdog = HandlerWatchdog(0.04, 0.2, on_hung=on_hung, clock=lambda: now[0])
    before = SLOW_HANDLERS._value.get()
    quick = watchdog.started("quick")
    now[0] += 0.01
    watchdog.finished(quick)
    slow = watchdog.started("slow")
    now[0] += 0.05
    wait_for(lambda: SLOW_HANDLERS._value.get() == before + 1, 5,
             message="the watchdog reported the slow handler while it ran")
    watchdog.finished(slow)
    assert SLOW_HANDLERS._value.get() == before + 1  # reported once
    assert hung == []
    watchdog.started("stuck")
    now[0] += 1.0
    wait_for(stopped.is_set, 5, message="the watchdog ended the hung handler's process")
    assert hung == ["stuck"]
    watchdog.close()


def test_watchdog_limits_must_make_sense() -> None:
    with pytest.raises(ValueError, match="hang limit at least the budget"):
        HandlerWatchdog(2.0, 1.0)


def test_a_retry_older_than_the_reply_table_is_refused_as_such_not_marked() -> None:
    replica = Replica.from_init(Ledger(), CODEC, 0, limits=MachineLimits(deduplication_window=1))
    replica.submit(CommandKind.CALL, "old", POISON, epoch=1, time=1000.0, seed=1)
    replica.submit(CommandKind.CALL, "later", POISON, epoch=1, time=2000.0, seed=2)
    assert replica.reply_for("old") is None  # expired
    last = replica.log.last_seq
    for _ in range(2):
        assert replica.mark(CommandKind.CALL, "old", POISON, epoch=1, time=2001.0,
                            first_attempt=1000.0) is None
        with pytest.raises(RetryRefused):
            replica.submit(CommandKind.CALL, "old", POISON, epoch=1, time=2001.0, seed=3,
                           first_attempt=1000.0)
    assert replica.log.last_seq == last
