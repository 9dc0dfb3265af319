"""One replica's pure core: its state machine and its log, driven as active or as standby.

The I/O shells (replication streaming, gRPC services) call exactly these operations, so every
decision about a request (duplicate? read-only? undecodable? which entry?) is made here, in
one place, and tested without sockets:

- active: `submit` a client call, cast or merge; it is checked against the reply table,
  decoded, answered directly when read-only, refused when it is a retry older than the
  table can vouch for (`replies.retry_refusal`), otherwise appended to the log and applied. The
  returned `Submission` holds the entry to replicate (None when nothing needs replicating).
- standby: `receive` each entry from the active, in order, with its epoch checked.
- both: `catch_up` for a reconnecting standby, `snapshot` and `from_snapshot` for joins.

How the active's shell (`term.Term.submit`) uses a `Submission` (with `acks.AckTracker`):

1. Submit requests one at a time, in arrival order (gen_server semantics); the handler runs
   here, synchronously, and the entry is appended before the next request is submitted.
2. Send `entry` (if any) to every standby (pipelined, batched) and tell the tracker
   `appended(entry.seq)`.
3. Answer the client only when `tracker.acknowledged_seq >= outcome.record.seq`: for a new
   entry, a duplicate (its original entry may still be unacknowledged) and a read-only call
   alike (a read must not reveal an entry that a failover could still lose).
4. Deliver `outcome.events` to subscribers under the same condition, so that a subscriber
   never sees an event that the next active does not have.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from gencluster.codec import Codec
from gencluster.limits import MAX_BATCH_BYTES
from gencluster.log import (
    CatchUp,
    Command,
    CommandKind,
    LogEntry,
    NeedSnapshot,
    ReplicationLog,
    ReplyRecord,
    Retention,
    Snapshot,
    StaleEpoch,
)
from gencluster.machine import MachineLimits, Outcome, StateMachine
from gencluster.replies import check_same_request, request_digest
from gencluster.server import GenServer


@dataclass(frozen=True, slots=True)
class Submission:
    """The answer to a submitted request, and the entry (if any) standbys must receive.

    `entry` is None for a duplicate request id (answered from the reply table: in Sync mode
    the caller still waits until `outcome.record.seq` is acknowledged) and for a read-only call.
    """

    outcome: Outcome
    entry: LogEntry | None


class Journal(Protocol):
    """Where a replica with persistence writes its entries (`journal.Journal`): `append`
    buffers (the fsync happens elsewhere), and every so many entries the journal asks for a
    snapshot at the current position."""

    def append(self, entry: LogEntry) -> None: ...

    def snapshot_due(self) -> bool: ...

    def rotate(self, snapshot: Snapshot) -> None: ...


class Replica:
    """A state machine plus the log of the entries it applied (and, with persistence, the
    journal every applied entry is handed to, in order)."""

    def __init__(self, machine: StateMachine, log: ReplicationLog) -> None:
        if log.last_seq != machine.applied_seq:
            raise ValueError(
                f"log ends at {log.last_seq} but the machine applied {machine.applied_seq}"
            )
        self.machine = machine
        self.log = log
        self.journal: Journal | None = None

    @classmethod
    def from_init(
        cls,
        server: GenServer,
        codec: Codec,
        args: Any,
        *,
        retention: Retention | None = None,
        limits: MachineLimits | None = None,
    ) -> Replica:
        """The first active of a cluster: state from `init(args)`, empty log."""
        return cls(StateMachine.from_init(server, codec, args, limits), ReplicationLog(retention))

    @classmethod
    def from_snapshot(
        cls,
        server: GenServer,
        codec: Codec,
        snapshot: Snapshot,
        *,
        retention: Retention | None = None,
        limits: MachineLimits | None = None,
    ) -> Replica:
        """A standby that joined: continues from the snapshot's position."""
        machine = StateMachine.restore(server, codec, snapshot, limits)
        log = ReplicationLog(
            retention, base_seq=snapshot.applied_seq, base_epoch=snapshot.applied_epoch
        )
        return cls(machine, log)

    @property
    def applied_seq(self) -> int:
        return self.machine.applied_seq

    @property
    def applied_epoch(self) -> int:
        return self.machine.applied_epoch

    def submit(
        self,
        kind: CommandKind,
        request_id: str,
        payload: bytes,
        *,
        epoch: int,
        time: float,
        seed: int,
        first_attempt: float = 0.0,
    ) -> Submission:
        """Active side: handle one request. Raises `CodecError` for an undecodable or
        oversized payload, `RetryRefused` for a retry the reply table cannot vouch for
        (`first_attempt`: the client's time of its first attempt, 0 unknown),
        `RequestIdReused` for a request id the table holds for a different request (nothing
        is logged for any of these) and `StaleEpoch` if `epoch` went backwards."""
        if epoch < self.log.last_epoch:
            raise StaleEpoch(f"epoch {epoch} is below the log's epoch {self.log.last_epoch}")
        previous = self.machine.reply_for(request_id)
        if previous is not None:
            check_same_request(previous, request_digest(kind, payload))
            return Submission(Outcome(previous, duplicate=True), None)
        request = self.machine.decode_payload(kind, payload)
        if kind is CommandKind.CALL and self.machine.is_read_only(request):
            record = self.machine.query(request, request_id=request_id, time=time, seed=seed)
            return Submission(Outcome(record), None)
        self.machine.refuse_retry(request_id, first_attempt, now=time)
        entry = self.log.append(epoch, Command(kind, request_id, payload, time, seed))
        outcome = self.machine.apply(entry, request=request)
        if self.journal is not None:
            self._journaled(self.journal, entry)
        return Submission(outcome, entry)

    def receive(self, entry: LogEntry) -> Outcome:
        """Standby side: apply the next entry from the active (order and epoch checked)."""
        self.log.accept(entry)
        outcome = self.machine.apply(entry)
        if self.journal is not None:
            self._journaled(self.journal, entry)
        return outcome

    def _journaled(self, journal: Journal, entry: LogEntry) -> None:
        journal.append(entry)
        if journal.snapshot_due():
            journal.rotate(self.machine.snapshot())

    def reply_for(self, request_id: str) -> ReplyRecord | None:
        return self.machine.reply_for(request_id)

    def catch_up(
        self,
        seq: int,
        epoch: int | None = None,
        *,
        limit: int | None = None,
        max_bytes: int = MAX_BATCH_BYTES,
    ) -> CatchUp | NeedSnapshot:
        """What a standby positioned at (`seq`, `epoch`) needs from this replica's log: one
        batch, bounded by `limit` entries and `max_bytes` (`limits.MAX_BATCH_BYTES`)."""
        return self.log.entries_after(seq, epoch, limit=limit, max_bytes=max_bytes)

    def snapshot(self) -> Snapshot:
        return self.machine.snapshot()
