"""The exactly-once reply table, and the rule that refuses a retry it cannot vouch for.

The table maps request ids to the outcome recorded when the request was applied. It is part
of the replicated state, so everything that changes it is a function of the log alone: a
record carries the time of the entry that produced it (the active's clock when it appended
the entry, the `time` every replica's handler saw in `ctx`), and expiry is driven by the time
of the entry being applied, never by a replica's own clock. Every replica therefore holds the
same table after the same entries, and a snapshot carries it whole.

Records leave the table in insertion order, for two reasons:

- age: once an entry's time is more than `window + MAX_CLOCK_SKEW_SECONDS` past a record's;
- size: when the table exceeds its byte bound (request ids, replies, errors and a fixed
  overhead per record) or its count bound, the oldest go first, however young.

Either way `complete_after` (the newest time of any record that left) is raised, so the table
can state what it proves: every request applied at an entry time after `complete_after` is in
it. `retry_refusal` turns that into the decision about a request id the table does not hold.

A record also carries the digest of the request that produced it (`request_digest`: its kind
and payload). The digest is computed from the log entry by every replica as it applies it, and
travels with the record in snapshots, exports and merges, so every replica (and a new active)
holds the same digests. `check_same_request` is the rule the active applies before it answers a
request id from the table: the same id with a different request is refused
(`RequestIdReused`, gRPC FAILED_PRECONDITION) and changes nothing, instead of being answered
with another request's outcome.

A record without a time (time 0: from a snapshot or merge of a version that did not record
it) is of unknown age: when it leaves, `complete_after` becomes the time of the entry or record
that pushed it out (later than the entry that applied it, but for clock skew between actives),
so its retry is refused, not run. That time is part of the log, so this too is the same on
every replica.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Iterable

from gencluster.log import CommandKind, ReplyRecord

DEFAULT_DEDUPLICATION_WINDOW_SECONDS = 300.0
"""How long after its first attempt a request can still be retried (the CRD's default)."""

MAX_CLOCK_SKEW_SECONDS = 10.0
"""How far a client's clock may run ahead of the active that first applied its request.

A retry's age is judged by the client's `first_attempt` time against entry times written by
the servers' clocks. A client whose clock runs ahead makes an old request look young; the
table keeps records this much longer than the window, and a request id that is missing is
accepted as new only when its first attempt is this much younger than anything that left the
table. A clock behind the server's only makes retries look older: they may be refused early,
which is safe. NTP keeps pods and clients within milliseconds; 10 s covers a badly synced
laptop and costs 10 s of extra records."""

DEFAULT_MAX_REPLY_BYTES = 64 * 1024 * 1024
"""The table's size bound: request ids plus recorded replies and errors plus
`RECORD_OVERHEAD_BYTES` per record."""

DEFAULT_MAX_REPLIES = 1_000_000
"""A count bound under the byte bound, against many tiny records."""

RECORD_OVERHEAD_BYTES = 64
"""What a record costs beside its id and reply (seq, time, the table's own bookkeeping),
counted so that empty replies still fill the byte bound."""


def record_size(record: ReplyRecord) -> int:
    """The bytes a record accounts for in the table's byte bound (text fields in UTF-8, as
    they travel and are kept)."""
    size = _utf8_size(record.request_id) + len(record.digest) + RECORD_OVERHEAD_BYTES
    if record.reply is not None:
        size += len(record.reply)
    if record.error is not None:
        size += _utf8_size(record.error.type) + _utf8_size(record.error.message)
    return size


def _utf8_size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass")) if not text.isascii() else len(text)


def request_digest(kind: CommandKind, payload: bytes) -> bytes:
    """What identifies a request beside its id: SHA-256 of its kind and its payload exactly as
    the client encoded it (a retry resends the same bytes)."""
    digest = hashlib.sha256(kind.value.encode("ascii"))
    digest.update(b"\0")
    digest.update(payload)
    return digest.digest()


def newest_records(
    records: Iterable[ReplyRecord], complete_after: float, max_bytes: int
) -> tuple[tuple[ReplyRecord, ...], float]:
    """The newest of `records` (oldest first) that fit `max_bytes`, and the completeness bound
    that vouches only for them: the same eviction a table with that bound performs, so a
    retry of a dropped record is refused, never applied twice (for a MERGE entry, which
    carries the loser's table inside one replicated entry)."""
    table = ReplyTable(
        window=math.inf, max_bytes=max_bytes, max_records=DEFAULT_MAX_REPLIES,
        complete_after=complete_after,
    )
    table.restore(records, complete_after)
    return table.records(), table.complete_after


class RequestIdReused(Exception):
    """A request id already recorded for a different request (gRPC FAILED_PRECONDITION)."""


def check_same_request(record: ReplyRecord, digest: bytes) -> None:
    """Refuse answering `record` to a request whose digest differs from the one that produced
    it. A record without a digest (from a version that did not keep one) cannot tell, and
    answers as it did there."""
    if record.digest and digest != record.digest:
        raise RequestIdReused(
            f"request id {record.request_id!r} reused with a different request: it was "
            f"applied at seq {record.seq} for another method or payload; nothing was changed "
            "(use a new request id for a new request)"
        )


def retry_refusal(
    *,
    first_attempt: float,
    now: float,
    window: float,
    complete_after: float,
    max_skew: float = MAX_CLOCK_SKEW_SECONDS,
) -> str | None:
    """Why a request whose id is NOT in the reply table must be refused (None: apply it).

    `first_attempt` is the client's clock at the request's first attempt (Unix seconds; 0 or
    less: unknown, an old client, treated as new), `now` the active's clock (the time the
    entry would carry), `complete_after` the table's (replicated) completeness bound.

    Accepting must be provably safe: had the request been applied, its entry time would be
    at least `first_attempt - max_skew`; if that is after `complete_after`, its record would
    still be in the table, so its absence proves it was never applied. The window is the
    policy on top: a request first attempted more than `window` ago is refused even when
    that proof holds, so users get one rule ("retry within the window"). A first attempt
    more than `max_skew` in the future proves the client's clock breaks the skew assumption,
    so nothing about its age can be trusted. Exactly at a bound counts as outside: a
    record with time exactly `complete_after` may have left the table.
    """
    if first_attempt <= 0:
        return None
    if first_attempt > now + max_skew:
        return (
            f"the request's first attempt is {first_attempt - now:.1f} s in the future by "
            f"this server's clock (more than the {max_skew:g} s of clock skew tolerated); "
            "it may or may not have been applied: fix the client's clock, check the state "
            "before retrying with a new request id"
        )
    horizon = max(now - window, complete_after + max_skew)
    if first_attempt <= horizon:
        return (
            f"the request id is older than what the cluster remembers: its first attempt was "
            f"{now - first_attempt:.1f} s ago, the cluster remembers request ids for "
            f"{window:g} s (currently back to {now - horizon:.1f} s ago); it may or may not "
            "have been applied: check the state before retrying with a new request id"
        )
    return None


class RetryRefused(Exception):
    """A retry the cluster cannot prove it has not applied (gRPC FAILED_PRECONDITION)."""


class ReplyTable:
    """Recorded outcomes by request id, bounded in time, bytes and count (see module doc)."""

    def __init__(
        self,
        *,
        window: float = DEFAULT_DEDUPLICATION_WINDOW_SECONDS,
        max_bytes: int = DEFAULT_MAX_REPLY_BYTES,
        max_records: int = DEFAULT_MAX_REPLIES,
        complete_after: float = 0.0,
    ) -> None:
        self.window = window
        self.max_bytes = max_bytes
        self.max_records = max_records
        self._records: OrderedDict[str, ReplyRecord] = OrderedDict()
        self._bytes = 0
        self._complete_after = complete_after
        self._oldest_time = math.inf
        """The time of the first record in insertion order (inf when empty): `expire` runs on
        every applied entry and usually has nothing to drop, so it compares one float
        instead of making an iterator over the table."""

    @property
    def complete_after(self) -> float:
        """Every request applied at an entry time after this is in the table."""
        return self._complete_after

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._records)

    def get(self, request_id: str) -> ReplyRecord | None:
        return self._records.get(request_id) if request_id else None

    def records(self) -> tuple[ReplyRecord, ...]:
        """Oldest first: restoring them in this order rebuilds the same table."""
        return tuple(self._records.values())

    def remember(self, record: ReplyRecord) -> None:
        """Add a record (its id must be new), then enforce the byte and count bounds."""
        if not self._records:
            self._oldest_time = record.time
        self._records[record.request_id] = record
        self._bytes += record_size(record)
        while len(self._records) > 1 and (
            self._bytes > self.max_bytes or len(self._records) > self.max_records
        ):
            self._drop_oldest(pushed_by=record.time)

    def restore(self, records: Iterable[ReplyRecord], complete_after: float) -> None:
        """Load a snapshot's table (oldest first) and its completeness bound."""
        self._complete_after = max(self._complete_after, complete_after)
        for record in records:
            if record.request_id and record.request_id not in self._records:
                self.remember(record)

    def absorb_complete_after(self, complete_after: float) -> None:
        """A merged table's bound: its records are complete only back to there."""
        self._complete_after = max(self._complete_after, complete_after)

    def expire(self, entry_time: float) -> None:
        """Drop records too old for any retry to still be accepted at `entry_time`."""
        cutoff = entry_time - self.window - MAX_CLOCK_SKEW_SECONDS
        while self._oldest_time < cutoff:
            self._drop_oldest(pushed_by=entry_time)

    def refusal(self, first_attempt: float, now: float) -> str | None:
        """`retry_refusal` against this table (for a request id it does not hold)."""
        return retry_refusal(
            first_attempt=first_attempt,
            now=now,
            window=self.window,
            complete_after=self._complete_after,
        )

    def _drop_oldest(self, *, pushed_by: float) -> None:
        """Drop the first record; `pushed_by` (the time of the entry or record that made
        room) stands in for the time of a record that has none."""
        records = self._records
        _, record = records.popitem(last=False)
        self._bytes -= record_size(record)
        left_at = record.time if record.time > 0 else pushed_by
        if left_at > self._complete_after:
            self._complete_after = left_at
        self._oldest_time = next(iter(records.values())).time if records else math.inf
