"""The active's replication byte counters (exposed in /metrics, read by bench/replication.py)
count exactly what the `Replicate` stream wrote, so "bytes per call" can be measured without a
relay on the socket."""

from __future__ import annotations

import asyncio

from gencluster.acks import AckTracker, ReplicationMode
from gencluster.codec import JsonCodec
from gencluster.log import CommandKind
from gencluster.proto import gencluster_pb2 as pb
from gencluster.replica import Replica
from gencluster.replication import COUNTERS, Term

from tests.runtime.servers import Ledger

CODEC = JsonCodec()


async def stream_entries(calls: int) -> list[pb.ReplicateDown]:
    """One Term serving one fake standby that acks everything; returns what it was sent."""
    replica = Replica.from_init(Ledger(), CODEC, 0)
    # Sync with no minimum: no Lease to publish an in-sync set in, yet every entry waits
    # for the connected standby's ack (so all of them are on the stream before close()).
    tracker = AckTracker(
        me="active", mode=ReplicationMode.SYNC, min_sync_standbys=0, max_lag_entries=1000,
        last_seq=0,
    )
    term = Term(replica=replica, tracker=tracker, epoch=1, heartbeat_interval=5.0,
                on_change=lambda: None)
    sent: list[pb.ReplicateDown] = []
    acks: asyncio.Queue[pb.ReplicateUp] = asyncio.Queue()

    async def write(message: pb.ReplicateDown) -> None:
        sent.append(message)
        if message.WhichOneof("message") == "entries":
            ack = pb.Ack(epoch=1, applied_seq=message.entries.last_seq)
            await acks.put(pb.ReplicateUp(ack=ack))

    hello = pb.Hello(identity="standby", address="127.0.0.1:1", epoch=1)
    server = asyncio.create_task(term.serve_standby(hello, acks.get, write))
    while not any(standby.connected for standby in tracker.standbys()):
        await asyncio.sleep(0)
    for number in range(calls):
        submission = replica.submit(CommandKind.CALL, f"r{number}", CODEC.encode(["add", 1]),
                                    epoch=1, time=1.0, seed=1)
        assert submission.entry is not None
        term.appended(submission.entry.seq)
        await term.wait_acknowledged(submission.entry.seq)
    term.close()
    await asyncio.gather(server, return_exceptions=True)
    return sent


def test_counters_add_up_what_the_stream_wrote() -> None:
    before = (COUNTERS.bytes_sent, COUNTERS.messages_sent, COUNTERS.entries_sent)
    sent = asyncio.run(stream_entries(20))
    assert sent, "the stream wrote nothing"
    assert COUNTERS.bytes_sent - before[0] == sum(message.ByteSize() for message in sent)
    assert COUNTERS.messages_sent - before[1] == len(sent)
    assert COUNTERS.entries_sent - before[2] == 20
