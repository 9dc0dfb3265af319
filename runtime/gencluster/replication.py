"""What both ends of replication share: limits and channel options of the peer streams, the
batching decision of the active's senders (`sender_step`, pure), the byte counters, and the
peer token's metadata.

Direction: **standbys connect to the active.** A standby learns who is active from the Lease
(the holder's pod IP, from the pod list), streams a snapshot if it holds no state, then opens
`Replicate` with a `Hello` giving its position. The active never needs to discover its
standbys, and failover needs no reconfiguration: when the stream breaks (the active died, or
handed the Lease over and closed its streams), the standby reads the Lease at once and either
takes it (it is the new holder, or the lease is free and it is in the in-sync set) or connects
to whoever holds it. The active's end is `term.Term`, the standby's `follower.Follower`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from gencluster.limits import MAX_RECORD_MESSAGE_BYTES
from gencluster.proto import gencluster_pb2 as pb
from gencluster.wellknown import PEER_TOKEN_METADATA

MAX_ENTRIES_PER_BATCH = 2000
"""Upper bound of one EntryBatch in entries (its bytes are bounded by `limits.MAX_BATCH_BYTES`
in `Replica.catch_up`), so catch-up after a long disconnect stays in small messages."""

BATCHES_IN_FLIGHT = 2
"""Unacknowledged batches per standby before the sender waits: enough to keep the stream busy
(pipelining), few enough that entries arriving under load accumulate into large batches
instead of costing one gRPC message (and one ack) each."""

COALESCE_GAP = 0.001
"""Under load, a batch is held while entries keep arriving less than this apart (seconds):
calls released by the last ack come back from their clients in a burst, which then leaves
as one batch instead of several."""

COALESCE_MAX = 0.005
"""Longest a loaded sender holds a batch (seconds since its previous batch): the most
latency batching adds to a call. Each message costs the active a gRPC write and an ack read
per standby (a few hundred microseconds of its CPU on the 2-core bench machine, where 1.2
messages per call were the largest part of its per-call cost); holding up to 5 ms brought
that to 0.12-0.2 messages per call at 64 calls in flight."""

GRPC_CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 2000),
    ("grpc.keepalive_timeout_ms", 2000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", MAX_RECORD_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_RECORD_MESSAGE_BYTES),
]
"""Peer channels: keepalive notices a silent peer. Batches are bounded in bytes
(`limits.MAX_BATCH_BYTES`, or one entry alone); the limit admits one entry well beyond the
codec's, as a MERGE entry carries a whole exported state."""


@dataclass
class ReplicationCounters:
    """What this process wrote as active on `Replicate` streams, over all terms and standbys.

    Exposed as Prometheus counters (run.py) so "per-call cost O(size of the change), never
    O(size of the state)" can be measured from outside (bench/replication.py) without a relay
    on the socket. Sizes are protobuf message sizes (`ByteSize`), not counting HTTP/2 framing.
    """

    bytes_sent: int = 0
    messages_sent: int = 0
    entries_sent: int = 0

    def count(self, message: pb.ReplicateDown) -> None:
        self.bytes_sent += message.ByteSize()
        self.messages_sent += 1
        if message.WhichOneof("message") == "entries":
            self.entries_sent += len(message.entries.entries)


COUNTERS = ReplicationCounters()
"""Process-wide: one node per `gencluster run` process, and counters must survive terms."""


class StaleEpochRejected(Exception):
    """A peer message from an epoch below the highest this replica has seen."""


class HighestEpoch:
    """The highest epoch this replica has seen (Lease transitions, entries, snapshots): the
    one record the Lease reads, the follower and the handover raise, and a standby checks
    every batch against, so a deposed active's stream is refused."""

    def __init__(self) -> None:
        self.value = 0

    def saw(self, epoch: int) -> None:
        if epoch > self.value:
            self.value = epoch


class SendStep(Enum):
    SEND = "send"
    HOLD = "hold"
    HEARTBEAT = "heartbeat"
    WAIT = "wait"


@dataclass(frozen=True, slots=True)
class SenderDecision:
    step: SendStep
    hold: float = 0.0
    """HOLD: seconds to let pass before deciding again."""


def sender_step(
    *,
    pending: bool,
    in_flight: int,
    window: int,
    idle: bool,
    since_sent: float,
    since_append: float,
    heartbeat_interval: float,
    gap: float = COALESCE_GAP,
    max_hold: float = COALESCE_MAX,
) -> SenderDecision:
    """What one standby's sender does next (adaptive batching, like Nagle's algorithm).

    - `window` batches unacknowledged: WAIT for an ack (entries accumulate meanwhile).
    - entries `pending` on a stream that was `idle` (nothing in flight or pending when it
      last waited): SEND at once, so a lone call pays no batching delay.
    - entries pending under load: SEND once arrivals paused (no append for `gap`) or the
      batch is `max_hold` old (`since_sent`); until then HOLD, so that calls still arriving
      join this batch. Every message costs the active a gRPC write and an ack read per
      standby, the largest part of its per-call cost under load, so fewer, larger batches
      are what makes Sync replication cheap; `max_hold` bounds the latency this adds.
    - nothing pending for `heartbeat_interval`: HEARTBEAT (an empty batch); otherwise WAIT.
    """
    if in_flight >= window:
        return SenderDecision(SendStep.WAIT)
    if pending:
        if idle or since_sent >= max_hold or since_append >= gap:
            return SenderDecision(SendStep.SEND)
        return SenderDecision(SendStep.HOLD, min(gap - since_append, max_hold - since_sent))
    if since_sent >= heartbeat_interval:
        return SenderDecision(SendStep.HEARTBEAT)
    return SenderDecision(SendStep.WAIT)


def peer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """gRPC metadata that authenticates a Peer or Admin call."""
    return ((PEER_TOKEN_METADATA, token),)
