"""The active's replication byte counters (exposed in /metrics, read by bench/replication.py)
count exactly what the `Replicate` stream wrote, so "bytes per call" can be measured without a
relay on the socket."""

from __future__ import annotations

import asyncio

import pytest
from gencluster.proto import gencluster_pb2 as pb
from gencluster.replication import COUNTERS

from tests.runtime.replication_harness import FakeStandby, call, connected_term

pytestmark = pytest.mark.unit


async def stream_entries(calls: int) -> list[pb.ReplicateDown]:
    """One Term serving one fake standby that acks everything; returns what it was sent
    (every entry waited for its ack, so all of them are on the stream before close())."""
    standby = FakeStandby()
    term, _, server = await connected_term(standby)
    for number in range(calls):
        await call(term, number)
    term.close()
    await asyncio.gather(server, return_exceptions=True)
    return standby.sent


def test_counters_add_up_what_the_stream_wrote() -> None:
    before = (COUNTERS.bytes_sent, COUNTERS.messages_sent, COUNTERS.entries_sent)
    sent = asyncio.run(stream_entries(20))
    assert sent, "the stream wrote nothing"
    assert COUNTERS.bytes_sent - before[0] == sum(message.ByteSize() for message in sent)
    assert COUNTERS.messages_sent - before[1] == len(sent)
    assert COUNTERS.entries_sent - before[2] == 20
