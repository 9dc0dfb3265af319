"""The replication log: what the active sends its standbys, and what it keeps for catch-up.

Replication is by *command*: an entry holds the request (encoded bytes, exactly as the client
sent it) with the inputs that would otherwise differ between pods (time, random seed, request
id). Applying it is deterministic, so an entry costs O(size of the request), never O(size of
the state).

Each entry has a sequence number (1, 2, 3, ... with no gaps) and the epoch of the active that
wrote it (the Lease's leaseTransitions). Epochs never decrease along the log; a replica refuses
an entry from a lower epoch than it has seen, which is how a deposed active is fenced off.

The active keeps a window of recent entries (bounded by count and by bytes). A standby that
reconnects with a position inside the window catches up from the log; one that fell out of the
window, or whose last entry disagrees with the log (it applied entries a deposed active never
got acknowledged), needs a snapshot: `entries_after` says which.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class CommandKind(StrEnum):
    """What an entry asks the state machine to do."""

    CALL = "call"
    CAST = "cast"
    MERGE = "merge"
    RESTORE = "restore"
    QUARANTINE = "quarantine"


@dataclass(frozen=True, slots=True)
class Command:
    """A request plus its deterministic inputs. `payload` is codec-encoded.

    For MERGE, `payload` is the other side's encoded state and `request_id` identifies the
    merge (so the operator can retry it safely); RESTORE carries a backup's state the same
    way (`wire.merge_payload`) and replaces the state with it.
    """

    kind: CommandKind
    request_id: str
    payload: bytes
    time: float
    seed: int

    @property
    def size(self) -> int:
        """Bytes this command accounts for in the retention window."""
        request_id = self.request_id
        id_bytes = (
            len(request_id) if request_id.isascii()
            else len(request_id.encode("utf-8", "surrogatepass"))
        )
        return len(self.payload) + id_bytes + ENTRY_OVERHEAD_BYTES


ENTRY_OVERHEAD_BYTES = 48
"""Rough fixed cost of an entry beside its payload (seq, epoch, time, seed, framing)."""


@dataclass(frozen=True, slots=True)
class LogEntry:
    seq: int
    epoch: int
    command: Command


@dataclass(frozen=True, slots=True)
class HandlerError:
    """A handler's exception as the caller sees it: the exception type's name and message."""

    type: str
    message: str


@dataclass(frozen=True, slots=True)
class ReplyRecord:
    """The outcome of an applied request, kept so a retry gets the same answer.

    `reply` is the encoded reply of a successful call (None for a cast); `error` is set when the
    handler raised. `seq` is the entry that produced it: an active answering a retry in Sync
    mode waits until that entry is acknowledged, exactly as for the original. `time` is that
    entry's time: the reply table expires records by it (`replies.ReplyTable`). `digest`
    identifies the request (`replies.request_digest`: its kind and payload), so the same id
    sent with a different request is refused instead of answered with this outcome; empty for
    a record from a version that did not keep it (then the id alone decides, as it did there).
    """

    request_id: str
    seq: int
    reply: bytes | None = None
    error: HandlerError | None = None
    time: float = 0.0
    digest: bytes = b""


AUDIENCE_A = "a"
"""A merge-published event meant for the subscribers that followed the surviving active's
history (`merge`'s `state_a`): typically the merged side's news."""
AUDIENCE_B = "b"
"""A merge-published event meant for the subscribers that followed the merged side's history
(`merge`'s `state_b`): typically the survivor's news."""
AUDIENCES = frozenset({AUDIENCE_A, AUDIENCE_B})


@dataclass(frozen=True, slots=True)
class Event:
    """An event published by a handler: `number` increases by one per topic from 1.

    `epoch` is the epoch of the entry that published it: with `seq` it names the event's place
    in one history, which is how a resuming subscriber's last event is recognised (or not)
    after a merge (`resume.plan_resume`). `audience` is set only on events a `merge`
    published: `AUDIENCE_A` (news to the subscribers of the surviving active's history) or
    `AUDIENCE_B` (news to those of the merged side's)."""

    topic: str
    number: int
    seq: int
    time: float
    data: bytes
    epoch: int = 0
    audience: str = ""


@dataclass(frozen=True)
class Snapshot:
    """Everything a joining standby needs to continue from `applied_seq`.

    `state` is the codec-encoded user state; `replies` the exactly-once table (oldest first);
    `events` the retained events (in publication order) and `next_event` each topic's next
    event number, so subscriptions resume across failover. `server_version` lets a newer class
    run `code_change` on an older state. `replies_complete_after` is the reply table's
    completeness bound (`replies.ReplyTable.complete_after`), which decides what retries the
    table can still vouch for.
    """

    applied_seq: int
    applied_epoch: int
    server_version: int
    codec: str
    state: bytes
    replies: tuple[ReplyRecord, ...] = ()
    events: tuple[Event, ...] = ()
    next_event: Mapping[str, int] = field(default_factory=dict)
    replies_complete_after: float = 0.0
    merge_seqs: tuple[int, ...] = ()
    """The most recent MERGE entries' sequence numbers, oldest first (`resume`)."""


class LogError(Exception):
    """An entry that does not fit the log (gap, reorder, stale epoch)."""


class StaleEpoch(LogError):
    """An entry or message from an epoch lower than one already seen."""


class OutOfOrder(LogError):
    """An entry whose sequence number is not the next one."""


def check_next_entry(entry: LogEntry, last_seq: int, last_epoch: int, *, holder: str) -> None:
    """Refuse an entry that does not directly follow (`last_seq`, `last_epoch`): a lower
    epoch is a deposed active's, a gap or repeat is a broken stream. `holder` names whose
    position it is in the message ("the log's", "the applied")."""
    if entry.epoch < last_epoch:
        raise StaleEpoch(
            f"entry {entry.seq} has epoch {entry.epoch}, below {holder} epoch {last_epoch}"
        )
    if entry.seq != last_seq + 1:
        raise OutOfOrder(f"expected entry {last_seq + 1}, got {entry.seq}")


@dataclass(frozen=True, slots=True)
class CatchUp:
    """The entries a standby is missing, oldest first (possibly none)."""

    entries: tuple[LogEntry, ...]


@dataclass(frozen=True, slots=True)
class NeedSnapshot:
    """The standby cannot continue from the log; `reason` says why (for logs and status)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Retention:
    """How much log the active keeps for reconnecting standbys (both limits apply)."""

    max_entries: int = 100_000
    max_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.max_entries < 1 or self.max_bytes < 1:
            raise ValueError(f"retention limits must be positive: {self}")


class ReplicationLog:
    """The retained suffix of the log, from `first_seq` to `last_seq`.

    Entries before the window are summarised by their last position (`base_seq`,
    `base_epoch`): a standby positioned exactly there can still continue from the log.
    The newest entry is always retained, whatever its size.
    """

    def __init__(
        self, retention: Retention | None = None, *, base_seq: int = 0, base_epoch: int = 0
    ) -> None:
        self.retention = retention or Retention()
        self._entries: deque[LogEntry] = deque()
        self._bytes = 0
        self._base_seq = base_seq
        self._base_epoch = base_epoch

    @property
    def last_seq(self) -> int:
        return self._entries[-1].seq if self._entries else self._base_seq

    @property
    def last_epoch(self) -> int:
        return self._entries[-1].epoch if self._entries else self._base_epoch

    @property
    def first_seq(self) -> int:
        """The oldest retained sequence number (last_seq + 1 when nothing is retained)."""
        return self._base_seq + 1

    @property
    def retained_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def append(self, epoch: int, command: Command) -> LogEntry:
        """Active side: stamp `command` with the next sequence number and `epoch`."""
        entry = LogEntry(seq=self.last_seq + 1, epoch=epoch, command=command)
        self.accept(entry)
        return entry

    def accept(self, entry: LogEntry) -> None:
        """Standby side: add an entry received from the active, which must be the next one."""
        check_next_entry(entry, self.last_seq, self.last_epoch, holder="the log's")
        self._entries.append(entry)
        self._bytes += entry.command.size
        self._evict()

    def reset(self, base_seq: int, base_epoch: int) -> None:
        """Forget every entry: the replica now continues from a snapshot at `base_seq`."""
        self._entries.clear()
        self._bytes = 0
        self._base_seq = base_seq
        self._base_epoch = base_epoch

    def entries_after(
        self,
        seq: int,
        epoch: int | None = None,
        *,
        limit: int | None = None,
        max_bytes: int | None = None,
    ) -> CatchUp | NeedSnapshot:
        """What a replica whose last entry is (`seq`, `epoch`) needs next: at most `limit`
        entries and, beyond the first, at most `max_bytes` of them (`Command.size`), so one
        batch of catch-up never outgrows a message however large the entries are.

        `epoch` (when given) is checked against the log's entry at `seq`, as Raft checks the
        previous term: a mismatch means the replica holds entries this log never had.
        """
        if seq > self.last_seq:
            return NeedSnapshot(
                f"replica is at {seq}, ahead of this log's last entry {self.last_seq}"
            )
        if seq < self._base_seq:
            return NeedSnapshot(
                f"replica is at {seq}, before the retained log (which starts after "
                f"{self._base_seq})"
            )
        if epoch is not None:
            known_epoch = self._epoch_at(seq)
            if known_epoch != epoch:
                return NeedSnapshot(
                    f"replica's entry {seq} has epoch {epoch}, the log's has {known_epoch}"
                )
        start = seq - self._base_seq
        remaining = len(self._entries) - start
        if start > remaining:
            # Near the tail (the usual case: a standby that keeps up): walk from the right,
            # O(entries returned) instead of O(retained log) per batch.
            tail = list(itertools.islice(reversed(self._entries), remaining))
            tail.reverse()
            return CatchUp(_within_bytes(tail if limit is None else tail[:limit], max_bytes))
        stop = None if limit is None else start + limit
        return CatchUp(_within_bytes(itertools.islice(self._entries, start, stop), max_bytes))

    def _epoch_at(self, seq: int) -> int:
        if seq == self._base_seq:
            return self._base_epoch
        return self._entries[seq - self._base_seq - 1].epoch

    def _evict(self) -> None:
        limits = self.retention
        while len(self._entries) > 1 and (
            len(self._entries) > limits.max_entries or self._bytes > limits.max_bytes
        ):
            oldest = self._entries.popleft()
            self._bytes -= oldest.command.size
            self._base_seq = oldest.seq
            self._base_epoch = oldest.epoch


def _within_bytes(entries: Iterable[LogEntry], max_bytes: int | None) -> tuple[LogEntry, ...]:
    """The leading entries whose sizes fit `max_bytes` (the first always: an entry over the
    budget is sent alone rather than never)."""
    if max_bytes is None:
        return tuple(entries)
    kept: list[LogEntry] = []
    total = 0
    for entry in entries:
        total += entry.command.size
        if kept and total > max_bytes:
            break
        kept.append(entry)
    return tuple(kept)
