"""The active's adaptive batching on `Replicate` streams: the pure decision (`sender_step`)
and what a standby receives from a `Term` (every entry once, in order, in fewer messages than
entries under a burst), and how a stream ends when the term closes."""

from __future__ import annotations

import asyncio

import pytest
from gencluster.replication import SendStep, sender_step

from tests.runtime.replication_harness import FakeStandby, call, connected_term

pytestmark = pytest.mark.unit

GAP = 0.001
MAX_HOLD = 0.005


def decide(**changes: object) -> tuple[SendStep, float]:
    """`sender_step` for a loaded stream with entries pending, with `changes` applied."""
    arguments: dict[str, object] = {
        "pending": True,
        "in_flight": 1,
        "window": 2,
        "idle": False,
        "since_sent": 0.001,
        "since_append": 0.0002,
        "heartbeat_interval": 0.5,
        "gap": GAP,
        "max_hold": MAX_HOLD,
    }
    arguments.update(changes)
    decision = sender_step(**arguments)  # type: ignore[arg-type]
    return decision.step, decision.hold


def test_a_full_window_waits_for_an_ack() -> None:
    assert decide(in_flight=2)[0] is SendStep.WAIT
    assert decide(in_flight=2, idle=True, since_sent=1.0)[0] is SendStep.WAIT


def test_an_idle_stream_sends_at_once() -> None:
    assert decide(idle=True, in_flight=0) == (SendStep.SEND, 0.0)


def test_a_loaded_stream_holds_while_entries_keep_arriving() -> None:
    step, hold = decide(since_sent=0.001, since_append=0.0002)
    assert step is SendStep.HOLD
    assert hold == min(GAP - 0.0002, MAX_HOLD - 0.001)
    assert hold > 0


def test_a_loaded_stream_sends_once_arrivals_pause() -> None:
    assert decide(since_append=GAP)[0] is SendStep.SEND


def test_holding_never_exceeds_the_maximum() -> None:
    assert decide(since_sent=MAX_HOLD, since_append=0.0)[0] is SendStep.SEND
    step, hold = decide(since_sent=MAX_HOLD - 0.0001, since_append=0.0)
    assert step is SendStep.HOLD
    assert hold <= 0.0001 + 1e-12


def test_silence_gets_a_heartbeat_and_nothing_else_waits() -> None:
    assert decide(pending=False, since_sent=0.5)[0] is SendStep.HEARTBEAT
    assert decide(pending=False, since_sent=0.1)[0] is SendStep.WAIT
    assert decide(pending=False, in_flight=0, idle=True, since_sent=0.1)[0] is SendStep.WAIT


async def burst_then_close(calls: int) -> tuple[FakeStandby, asyncio.Task[None]]:
    standby = FakeStandby()
    term, _, server = await connected_term(standby)
    answers = []
    for number in range(calls):
        answers.append(asyncio.create_task(call(term, number)))
        if number % 10 == 9:
            await asyncio.sleep(0)  # calls arrive a few per event-loop iteration
    await asyncio.wait_for(asyncio.gather(*answers), 30)
    term.close()
    await asyncio.wait_for(asyncio.gather(server, return_exceptions=True), 30)
    return standby, server


def test_a_burst_arrives_complete_in_order_and_batched() -> None:
    standby, _ = asyncio.run(burst_then_close(200))
    assert standby.received_seqs() == list(range(1, 201))
    entry_messages = [m for m in standby.sent if m.WhichOneof("message") == "entries"]
    assert len(entry_messages) < 200 / 4


def test_closing_the_term_ends_an_idle_stream_normally() -> None:
    """The standby must see the stream end (status OK) at once to look for the new active;
    a cancelled handler left the RPC open on its side until its silence limit."""
    _, server = asyncio.run(burst_then_close(3))
    assert server.done() and not server.cancelled()
    assert server.exception() is None
