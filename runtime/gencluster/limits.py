"""The bounds on what one caller may hand a runtime, and the byte budget of every batch.

A ClusteredServer keeps what a client sends in the replicated state of every replica at once
(a request id is a key of the reply table on all of them), so an unbounded field is a way for
one client to grow every pod in lockstep until all are OOM-killed together. Every field a
caller controls therefore has a bound here, checked at the gRPC surface before anything is
logged, and every message that carries records (snapshot and join, catch-up, export, merge,
backup) is sized in bytes rather than in records, so that large replies cannot push one
message past a gRPC message limit. docs/limits.md is the table of all of them.

Request ids beginning with `RESERVED_REQUEST_ID_PREFIX` belong to the operator's operations
(merge, restore), which reach the runtime only through the authenticated Admin service; the
Client service refuses them, so a client can neither forge nor pre-empt an operator's id.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

MAX_REQUEST_ID_BYTES = 256
"""A request id is a UUID (32 or 36 characters) in practice; 256 bytes leaves room for a
caller's own scheme while keeping the reply table's keys small on every replica."""

RESERVED_REQUEST_ID_PREFIX = "gencluster:"
"""Request ids of Admin operations (merge, restore) live under this prefix: the Admin service
adds it to the id it is given, and the Client service refuses ids that start with it."""

MAX_TOPIC_BYTES = 256
"""A Subscribe topic: a name, not a payload."""

MAX_ORIGIN_FIELD_BYTES = 1024
"""Free-text fields of Admin operations (a merge's source, a restore's source), which end up in
logs and Events."""

MAX_IDENTITY_BYTES = 253
"""A replica's identity (its pod name: a DNS subdomain) in Peer and Admin messages."""

MAX_ADDRESS_BYTES = 1024
"""A `host:port` in Peer and Admin messages."""

MAX_PAUSE_SECONDS = 3600.0
"""The longest Admin.PauseWrites (the operator asks for about a minute): a pause ends by itself
so an operator that dies mid-merge cannot leave an active paused for good, and an infinite or
absurd pause would defeat that."""

MAX_ERROR_MESSAGE_BYTES = 64 * 1024
"""A handler's exception message as recorded in the reply table and sent to the caller:
longer messages are cut (the reply table keeps it on every replica)."""

MAX_BATCH_BYTES = 1024 * 1024
"""The byte budget of one message that carries records: reply and event batches of a snapshot
stream (joins, ExportState, backups, Merge and Restore streams) and an EntryBatch of catch-up.
A batch holds at least one record, so a record larger than the budget travels alone; every
record is itself bounded (payloads, replies and events by the codec's limit, ids above), and
the receivers' message limits (`MAX_RECORD_MESSAGE_BYTES`) admit one such record."""

MAX_RECORD_MESSAGE_BYTES = 64 * 1024 * 1024
"""The gRPC receive limit of every channel that receives record batches or snapshot chunks
(peers, the operator, the kubectl plugin): a batch is at most `MAX_BATCH_BYTES` or one record,
so this leaves a wide margin over a record at the codec's limit."""

MAX_ENTRY_BYTES = MAX_RECORD_MESSAGE_BYTES - 1024 * 1024
"""The largest payload of one log entry: a MERGE or forced RESTORE entry carries a whole
exported state and reply table, and an entry must reach every standby in one EntryBatch under
the peers' message limit. A larger one is refused (RESOURCE_EXHAUSTED) before it is logged:
logged, it could never be replicated, and every standby would stall on it."""

MERGE_REPLY_BYTES = 16 * 1024 * 1024
"""The most of the loser's reply table a MERGE entry carries (its newest records): the rest
of the entry's budget is the loser's state. Dropped records raise the merged table's
completeness bound, so their retries are refused, never applied twice."""

MIN_MESSAGE_BYTES = 64 * 1024
MAX_MESSAGE_BYTES = 32 * 1024 * 1024
"""The range of `spec.runtime.maxMessageBytes` (GENCLUSTER_MAX_MESSAGE_BYTES): the codec's
limit on one request, reply or event (default `codec.DEFAULT_MAX_BYTES`, 4 MiB). At most half
of `MAX_RECORD_MESSAGE_BYTES`, so one record at the limit always fits the message that carries
it to a standby, the operator or a backup."""

MIN_REPLY_TABLE_BYTES = 1024 * 1024
MAX_REPLY_TABLE_BYTES = 4 * 1024 * 1024 * 1024
"""The range of `spec.runtime.replyTableMaxBytes` (GENCLUSTER_REPLY_TABLE_MAX_BYTES): the
reply table's byte bound (default `replies.DEFAULT_MAX_REPLY_BYTES`, 64 MiB), kept by every
replica in memory."""

_T = TypeVar("_T")


class InvalidInput(ValueError):
    """A field a caller sent that breaks its bound or its format (gRPC INVALID_ARGUMENT); the
    message names the field."""


class TooLarge(ValueError):
    """Something a caller sent that is too large to be logged (gRPC RESOURCE_EXHAUSTED)."""


def check_entry_size(what: str, size: int) -> None:
    """Refuse a log entry payload over `MAX_ENTRY_BYTES` (see there)."""
    if size > MAX_ENTRY_BYTES:
        raise TooLarge(
            f"{what} is {size} bytes, over the {MAX_ENTRY_BYTES} bytes one replicated log entry "
            "may carry (it must reach every standby in one message); nothing was changed"
        )


def utf8_size(text: str) -> int:
    """Bytes of `text` in UTF-8, as it travels and is stored."""
    return len(text.encode("utf-8", "surrogatepass"))


def check_text(field: str, value: str, max_bytes: int) -> None:
    """Refuse a text field longer than `max_bytes` bytes in UTF-8 (a value far too long by its
    character count alone is refused without encoding it)."""
    if len(value) > 4 * max_bytes:
        raise InvalidInput(
            f"{field} is at least {len(value)} bytes, over the limit of {max_bytes} bytes"
        )
    size = len(value) if value.isascii() else utf8_size(value)
    if size > max_bytes:
        raise InvalidInput(f"{field} is {size} bytes, over the limit of {max_bytes} bytes")


def check_client_request_id(request_id: str) -> None:
    """A request id of a Client call or cast: bounded, and never in the operator's namespace."""
    check_text("request_id", request_id, MAX_REQUEST_ID_BYTES)
    if request_id.startswith(RESERVED_REQUEST_ID_PREFIX):
        raise InvalidInput(
            f"request_id may not start with {RESERVED_REQUEST_ID_PREFIX!r}: that prefix is "
            "reserved for the operator's merges and restores"
        )


def admin_request_id(request_id: str) -> str:
    """The reply-table key of an Admin operation's request id: the caller's id (bounded like a
    client's, minus the prefix) under the reserved prefix, which no client call can use. An
    empty id stays empty (no exactly-once, as for a client)."""
    check_text(
        "request_id", request_id, MAX_REQUEST_ID_BYTES - len(RESERVED_REQUEST_ID_PREFIX)
    )
    return RESERVED_REQUEST_ID_PREFIX + request_id if request_id else ""


def check_pause_seconds(seconds: float) -> None:
    """Admin.PauseWrites' `seconds`: finite and at most `MAX_PAUSE_SECONDS` (<= 0 resumes)."""
    if not math.isfinite(seconds) or seconds > MAX_PAUSE_SECONDS:
        raise InvalidInput(
            f"seconds is {seconds}: a pause must be finite and at most {MAX_PAUSE_SECONDS:g} s "
            "(<= 0 resumes)"
        )


def bounded_error_message(message: str) -> str:
    """A handler's exception message cut to `MAX_ERROR_MESSAGE_BYTES` (marked as cut)."""
    if len(message) <= MAX_ERROR_MESSAGE_BYTES // 4:
        return message
    if utf8_size(message) <= MAX_ERROR_MESSAGE_BYTES:
        return message
    suffix = f" ... [cut: the message was {utf8_size(message)} bytes]"
    budget = MAX_ERROR_MESSAGE_BYTES - len(suffix)
    cut = message.encode("utf-8", "surrogatepass")[:budget].decode("utf-8", "ignore")
    return cut + suffix


def batches_by_bytes(
    items: Sequence[_T],
    size_of: Callable[[_T], int],
    *,
    max_bytes: int = MAX_BATCH_BYTES,
    max_count: int | None = None,
) -> Iterator[Sequence[_T]]:
    """Consecutive slices of `items`, each at most `max_bytes` by `size_of` (and at most
    `max_count` items), and each with at least one item, so a single item over the budget is
    sent alone rather than never."""
    if max_bytes < 1 or (max_count is not None and max_count < 1):
        raise ValueError("batch bounds must be positive")
    start = 0
    total = len(items)
    while start < total:
        stop = start
        size = 0
        while stop < total and (max_count is None or stop - start < max_count):
            item_size = size_of(items[stop])
            if stop > start and size + item_size > max_bytes:
                break
            size += item_size
            stop += 1
        yield items[start:stop]
        start = stop
