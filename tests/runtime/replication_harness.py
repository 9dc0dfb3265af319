"""One active `Term` serving one in-process fake standby: the replication stream without
sockets, shared by the tests of batching and of the replication counters."""

from __future__ import annotations

import asyncio

from gencluster.acks import AckTracker, ReplicationMode
from gencluster.codec import JsonCodec
from gencluster.log import CommandKind
from gencluster.machine import Outcome
from gencluster.proto import gencluster_pb2 as pb
from gencluster.replica import Replica
from gencluster.term import Term

from tests.runtime.servers import Ledger

CODEC = JsonCodec()


class FakeStandby:
    """Acks every batch it is sent, as a standby that applied it would."""

    def __init__(self) -> None:
        self.sent: list[pb.ReplicateDown] = []
        self.acks: asyncio.Queue[pb.ReplicateUp] = asyncio.Queue()

    async def write(self, message: pb.ReplicateDown) -> None:
        self.sent.append(message)
        if message.WhichOneof("message") == "entries" and message.entries.entries:
            ack = pb.Ack(epoch=1, applied_seq=message.entries.entries[-1].seq)
            await self.acks.put(pb.ReplicateUp(ack=ack))

    def received_seqs(self) -> list[int]:
        return [
            entry.seq
            for message in self.sent
            if message.WhichOneof("message") == "entries"
            for entry in message.entries.entries
        ]


async def connected_term(standby: FakeStandby) -> tuple[Term, Replica, asyncio.Task[None]]:
    """A term whose standby is connected. Sync with no minimum: no Lease to publish an in-sync
    set in, yet every entry waits for the connected standby's ack."""
    replica = Replica.from_init(Ledger(), CODEC, 0)
    tracker = AckTracker(
        me="active", mode=ReplicationMode.SYNC, min_sync_standbys=0, max_lag_entries=1000,
        last_seq=0,
    )
    term = Term(replica=replica, tracker=tracker, epoch=1, heartbeat_interval=5.0,
                codec_name=CODEC.name, identity="active", may_serve=lambda: True,
                on_change=lambda: None)
    hello = pb.Hello(identity="standby", address="127.0.0.1:1", epoch=1)
    server = asyncio.create_task(term.serve_standby(hello, standby.acks.get, standby.write))
    while not any(progress.connected for progress in tracker.standbys()):
        await asyncio.sleep(0)
    return term, replica, server


async def call(term: Term, number: int) -> Outcome:
    """One call through the active's call path (`Term.submit`), as the Client service makes
    it: answered once the standby acknowledged it."""
    outcome, _ = await term.submit(CommandKind.CALL, f"r{number}", CODEC.encode(["add", 1]))
    return outcome
