"""One active `Term` serving one in-process fake standby: the replication stream and the call
path without sockets, shared by the tests of batching, of the counters and of `Term.submit`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from gencluster.acks import AckTracker, ReplicationMode
from gencluster.codec import JsonCodec
from gencluster.log import CommandKind
from gencluster.machine import Outcome
from gencluster.proto import gencluster_pb2 as pb
from gencluster.replica import Replica
from gencluster.term import Term
from gencluster_testing.waiting import wait_for_async

from tests.runtime.servers import Ledger

CODEC = JsonCodec()


class FakeStandby:
    """Acks every batch it is sent, as a standby that applied it would (or, when not
    `acking`, only once `ack_all` is called: a slow standby)."""

    def __init__(self, *, acking: bool = True) -> None:
        self.acking = acking
        self.sent: list[pb.ReplicateDown] = []
        self.acks: asyncio.Queue[pb.ReplicateUp] = asyncio.Queue()

    async def write(self, message: pb.ReplicateDown) -> None:
        self.sent.append(message)
        if self.acking:
            self.ack_all()

    def ack_all(self) -> None:
        seqs = self.received_seqs()
        if seqs:
            ack = pb.Ack(epoch=1, applied_seq=seqs[-1])
            self.acks.put_nowait(pb.ReplicateUp(ack=ack))

    def received_seqs(self) -> list[int]:
        return [
            entry.seq
            for message in self.sent
            if message.WhichOneof("message") == "entries"
            for entry in message.entries.entries
        ]


async def connected_term(
    standby: FakeStandby,
    may_serve: Callable[[], bool] = lambda: True,
    *,
    replica: Replica | None = None,
    max_subscribers: int = 4096,
    relax_after: float | None = None,
) -> tuple[Term, Replica, asyncio.Task[None]]:
    """A term whose standby is connected. Sync with no minimum: no Lease to publish an in-sync
    set in, yet every entry waits for the connected standby's ack. `may_serve` stands for the
    node's check (accepting, within the renew deadline); `replica` one with history already
    (its entries count as acknowledged: the standby starts from its last one); `relax_after`
    the Available policy's bound on waiting for acknowledgements (None: Fenced)."""
    replica = replica or Replica.from_init(Ledger(), CODEC, 0)
    last = replica.log.last_seq
    tracker = AckTracker(
        me="active", mode=ReplicationMode.SYNC, min_sync_standbys=0, max_lag_entries=1000,
        last_seq=last,
    )
    term = Term(replica=replica, tracker=tracker, epoch=1, heartbeat_interval=5.0,
                codec_name=CODEC.name, identity="active", may_serve=may_serve,
                on_change=lambda: None, max_subscribers=max_subscribers,
                relax_after=relax_after)
    hello = pb.Hello(identity="standby", address="127.0.0.1:1", epoch=1, applied_seq=last,
                     applied_epoch=replica.log.last_epoch)
    server = asyncio.create_task(term.serve_standby(hello, standby.acks.get, standby.write))
    await wait_for_async(lambda: any(progress.connected for progress in tracker.standbys()),
                         5, interval=0, message="the standby connected to the term")
    return term, replica, server


async def call(term: Term, number: int) -> Outcome:
    """One call through the active's call path (`Term.submit`), as the Client service makes
    it: answered once the standby acknowledged it."""
    outcome, _ = await term.submit(CommandKind.CALL, f"r{number}", CODEC.encode(["add", 1]))
    return outcome
