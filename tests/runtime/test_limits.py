"""Bounds on caller input and byte-sized batches (issue #12 parts 1 and 3), pure: the rules in
`gencluster.limits`, request identity in the reply table (`replies.check_same_request`) as the
active, a standby, a new active from a snapshot and a merge's winner apply it, and the byte
budget of snapshot chunks and catch-up batches. The same rules over real sockets:
test_hostile_input.py."""

from __future__ import annotations

import pytest
from gencluster.client import _attempts, _call_request, _cast_request
from gencluster.codec import JsonCodec
from gencluster.limits import (
    MAX_BATCH_BYTES,
    MAX_ENTRY_BYTES,
    MAX_ERROR_MESSAGE_BYTES,
    MAX_RECORD_MESSAGE_BYTES,
    MAX_REQUEST_ID_BYTES,
    RESERVED_REQUEST_ID_PREFIX,
    InvalidInput,
    TooLarge,
    admin_request_id,
    batches_by_bytes,
    bounded_error_message,
    check_client_request_id,
    check_entry_size,
    check_pause_seconds,
    utf8_size,
)
from gencluster.log import (
    CatchUp,
    Command,
    CommandKind,
    Event,
    ReplicationLog,
    ReplyRecord,
    Snapshot,
)
from gencluster.replica import Replica
from gencluster.replies import (
    RECORD_OVERHEAD_BYTES,
    ReplyTable,
    RequestIdReused,
    RetryRefused,
    record_size,
    request_digest,
)
from gencluster.wire import (
    merge_entry_payload,
    merge_payload,
    snapshot_from_chunks,
    snapshot_to_chunks,
)
from hypothesis import given
from hypothesis import strategies as st

from tests.runtime.servers import Ledger

pytestmark = pytest.mark.unit

CODEC = JsonCodec()


def active() -> Replica:
    return Replica.from_init(Ledger(), CODEC, 0)


def submit(
    replica: Replica, request: object, request_id: str, kind: CommandKind = CommandKind.CALL
):
    return replica.submit(kind, request_id, CODEC.encode(request), epoch=1, time=10.0, seed=1)


# -- request ids ------------------------------------------------------------------------------


def test_a_request_id_is_bounded_in_bytes_and_the_error_names_the_field() -> None:
    check_client_request_id("a" * MAX_REQUEST_ID_BYTES)
    with pytest.raises(InvalidInput, match=r"request_id is 257 bytes, over the limit of 256"):
        check_client_request_id("a" * (MAX_REQUEST_ID_BYTES + 1))
    # Characters are not bytes: 86 three-byte characters are 258 bytes.
    with pytest.raises(InvalidInput, match=r"request_id is 258 bytes"):
        check_client_request_id("€" * 86)
    # The finding: a 1 MiB id was accepted and kept on every replica.
    with pytest.raises(InvalidInput, match=r"request_id is at least 1048576 bytes"):
        check_client_request_id("x" * 1024 * 1024)


def test_clients_cannot_use_the_operators_request_id_namespace() -> None:
    with pytest.raises(InvalidInput, match="reserved for the operator"):
        check_client_request_id(RESERVED_REQUEST_ID_PREFIX + "merge/pod-1/3/17")
    assert admin_request_id("merge/pod-1/3/17") == "gencluster:merge/pod-1/3/17"
    assert admin_request_id("") == ""
    check_client_request_id(admin_request_id("x")[1:])  # only the prefix itself is reserved
    with pytest.raises(InvalidInput, match="request_id"):
        admin_request_id("m" * MAX_REQUEST_ID_BYTES)


def test_a_pause_must_be_finite_and_bounded() -> None:
    check_pause_seconds(65.0)
    check_pause_seconds(0.0)
    check_pause_seconds(-1.0)
    for seconds in (float("inf"), float("nan"), 1e9):
        with pytest.raises(InvalidInput, match="seconds is"):
            check_pause_seconds(seconds)


def test_a_handler_error_message_is_cut_to_its_bound() -> None:
    assert bounded_error_message("short") == "short"
    cut = bounded_error_message("é" * MAX_ERROR_MESSAGE_BYTES)
    assert utf8_size(cut) <= MAX_ERROR_MESSAGE_BYTES
    assert cut.endswith(f"[cut: the message was {2 * MAX_ERROR_MESSAGE_BYTES} bytes]")


# -- the reply table's byte bound -------------------------------------------------------------


def test_a_records_size_counts_its_ids_bytes_and_digest() -> None:
    record = ReplyRecord("€" * 10, 1, reply=b"abc", digest=b"d" * 32)
    assert record_size(record) == 30 + 32 + 3 + RECORD_OVERHEAD_BYTES


def test_large_request_ids_cannot_grow_the_table_past_its_byte_bound() -> None:
    """250 calls with 4 MiB ids made every replica grow by 1 GiB: whatever gets past the
    service's bound, the table's byte bound holds, by UTF-8 bytes."""
    table = ReplyTable(max_bytes=16 * 1024 * 1024)
    for number in range(250):
        table.remember(ReplyRecord(f"{number}-" + "€" * 700_000, number + 1, time=1.0))
    assert table.size_bytes <= 16 * 1024 * 1024
    assert sum(record_size(r) for r in table.records()) == table.size_bytes


# -- request identity -------------------------------------------------------------------------


def test_the_same_id_with_a_different_request_is_refused_and_changes_nothing() -> None:
    replica = active()
    first = submit(replica, ["add", 4], "r1")
    before = replica.snapshot()
    for request, kind in ((["add", 5], CommandKind.CALL), (["add", 4], CommandKind.CAST),
                          (["peek"], CommandKind.CALL)):
        with pytest.raises(RequestIdReused, match="reused with a different request"):
            submit(replica, request, "r1", kind)
    assert replica.snapshot() == before
    retry = submit(replica, ["add", 4], "r1")
    assert retry.outcome.duplicate and retry.outcome.record == first.outcome.record


def test_every_replica_and_a_new_active_decide_the_same() -> None:
    """The digest is computed from the entry by every replica and travels in snapshots, so a
    standby promoted to active, and one that joined by snapshot, refuse the reused id too."""
    primary = active()
    standby = Replica.from_snapshot(Ledger(), CODEC, primary.snapshot())
    submission = submit(primary, ["add", 4], "r1")
    assert submission.entry is not None
    standby.receive(submission.entry)
    chunks = list(snapshot_to_chunks(primary.snapshot(), epoch=1))
    joined = Replica.from_snapshot(Ledger(), CODEC, snapshot_from_chunks(chunks)[0])
    digest = request_digest(CommandKind.CALL, CODEC.encode(["add", 4]))
    for replica in (primary, standby, joined):
        record = replica.reply_for("r1")
        assert record is not None and record.digest == digest
        with pytest.raises(RequestIdReused):
            submit(replica, ["add", 5], "r1")
        assert submit(replica, ["add", 4], "r1").outcome.duplicate
    assert standby.snapshot() == primary.snapshot()


def test_a_merged_record_keeps_its_digest_on_the_winner() -> None:
    loser = active()
    submit(loser, ["add", 4], "on-the-loser")
    winner = active()
    payload = merge_payload(loser.snapshot())
    merged = winner.submit(CommandKind.MERGE, admin_request_id("m1"), payload, epoch=1,
                           time=11.0, seed=2)
    assert merged.outcome.ok
    with pytest.raises(RequestIdReused):
        submit(winner, ["add", 9], "on-the-loser")
    assert submit(winner, ["add", 4], "on-the-loser").outcome.duplicate


def test_a_merge_id_reused_with_another_export_is_refused() -> None:
    winner = active()
    loser = active()
    first = merge_payload(loser.snapshot())
    winner.submit(CommandKind.MERGE, "gencluster:m", first, epoch=1, time=11.0, seed=2)
    assert winner.submit(CommandKind.MERGE, "gencluster:m", first, epoch=1, time=12.0,
                         seed=2).outcome.duplicate
    submit(loser, ["add", 1], "x")
    with pytest.raises(RequestIdReused):
        winner.submit(CommandKind.MERGE, "gencluster:m", merge_payload(loser.snapshot()),
                      epoch=1, time=13.0, seed=2)


# -- batches in bytes -------------------------------------------------------------------------


@given(
    sizes=st.lists(st.integers(1, 5000), max_size=60),
    budget=st.integers(1, 8000),
    count=st.none() | st.integers(1, 10),
)
def test_byte_batches_keep_every_item_in_order_within_the_budget(
    sizes: list[int], budget: int, count: int | None
) -> None:
    batches = list(batches_by_bytes(sizes, lambda size: size, max_bytes=budget, max_count=count))
    assert [size for batch in batches for size in batch] == sizes
    for batch in batches:
        assert batch
        assert len(batch) == 1 or sum(batch) <= budget
        assert count is None or len(batch) <= count


def _large_snapshot(records: int, reply_bytes: int) -> Snapshot:
    replies = tuple(
        ReplyRecord(f"r{number}", number, reply=b"x" * reply_bytes, time=1.0, digest=b"d" * 32)
        for number in range(1, records + 1)
    )
    events = tuple(
        Event("blobs", number, number, 1.0, b"e" * reply_bytes)
        for number in range(1, records + 1)
    )
    return Snapshot(applied_seq=records, applied_epoch=1, server_version=1, codec="json",
                    state=b"{}", replies=replies, events=events,
                    next_event={"blobs": records + 1})


def test_snapshot_chunks_are_bounded_in_bytes_not_records() -> None:
    """1,000 records of 100 KB were one 100 MB chunk: over the operator's 4 MiB limit for an
    export and over the peers' 64 MiB for a join. Now no chunk exceeds the batch budget."""
    snapshot = _large_snapshot(1000, 100_000)
    chunks = list(snapshot_to_chunks(snapshot, epoch=2))
    assert max(chunk.ByteSize() for chunk in chunks) <= MAX_BATCH_BYTES + 1024
    assert snapshot_from_chunks(chunks) == (snapshot, 2)


def test_a_record_over_the_batch_budget_travels_alone() -> None:
    snapshot = _large_snapshot(3, MAX_BATCH_BYTES + 10)
    chunks = list(snapshot_to_chunks(snapshot, epoch=2))
    assert [len(c.replies.records) for c in chunks if c.WhichOneof("part") == "replies"] == [
        1, 1, 1
    ]
    assert snapshot_from_chunks(chunks) == (snapshot, 2)


def test_catch_up_batches_are_bounded_in_bytes() -> None:
    log = ReplicationLog()
    for number in range(50):
        log.append(1, Command(CommandKind.CALL, f"r{number}", b"p" * 100_000, 1.0, 0))
    entries: list[int] = []
    position = 0
    while position < log.last_seq:
        batch = log.entries_after(position, limit=2000, max_bytes=MAX_BATCH_BYTES)
        assert isinstance(batch, CatchUp) and batch.entries
        assert len(batch.entries) == 1 or sum(
            e.command.size for e in batch.entries
        ) <= MAX_BATCH_BYTES
        entries.extend(entry.seq for entry in batch.entries)
        position = batch.entries[-1].seq
    assert entries == list(range(1, 51))


def test_replica_catch_up_is_byte_bounded_by_default() -> None:
    """What the active's senders and a reconnecting standby's first batch ask for."""
    replica = active()
    for number in range(30):
        submit(replica, ["item", "x" * 100_000], f"r{number}", CommandKind.CAST)
    position = replica.catch_up(0)
    assert isinstance(position, CatchUp)
    assert 1 <= len(position.entries) < 30
    assert sum(entry.command.size for entry in position.entries) <= MAX_BATCH_BYTES


# -- first sends --------------------------------------------------------------------------------


def test_only_the_first_transmission_of_a_call_says_first_send() -> None:
    """A reply table churned faster than the clock-skew margin refused every new call; a
    first transmission cannot have been applied, so the client marks it and the server skips
    the retry check for it. Retries, and calls the caller says are retries (it passes
    `first_attempt`), are checked as before."""
    message = _call_request(CODEC, ["add", 1], None, None)
    attempts = _attempts(message)
    sent = [attempts(), attempts(), attempts()]
    assert [m.first_send for m in sent] == [True, False, False]
    assert sent[1].request_id == sent[0].request_id
    assert sent[1].first_attempt_unix_ms == sent[0].first_attempt_unix_ms
    assert sent[1].payload == sent[0].payload
    retried = _call_request(CODEC, ["add", 1], "mine", 1_700_000_000.0)
    assert not _attempts(retried)().first_send
    assert _attempts(_cast_request(CODEC, ["bump"]))().first_send


# -- merge entries --------------------------------------------------------------------------------


def test_a_merge_entry_carries_only_the_losers_newest_replies_that_fit() -> None:
    """A loser's reply table may hold 64 MiB, the peers' message limit: a MERGE entry that
    carried all of it (plus the state) could never reach a standby. The entry keeps the newest
    records within MERGE_REPLY_BYTES; retries of the dropped ones are refused, never
    re-applied, and retries of the kept ones still get their recorded reply."""
    loser = Replica.from_init(Ledger(), CODEC, 0)
    for number in range(40):
        loser.submit(CommandKind.CAST, f"big-{number}", CODEC.encode(["item", "x" * 500_000]),
                     epoch=1, time=100.0 + number, seed=1)
    snapshot = loser.snapshot()
    assert sum(record_size(r) for r in snapshot.replies) < 1024 * 1024  # casts record no reply
    heavy = Snapshot(
        applied_seq=snapshot.applied_seq, applied_epoch=1, server_version=snapshot.server_version,
        codec="json", state=snapshot.state,
        replies=tuple(ReplyRecord(r.request_id, r.seq, reply=b"r" * 1_000_000, time=r.time,
                                  digest=r.digest) for r in snapshot.replies),
    )
    payload = merge_entry_payload(heavy, reply_bytes=16 * 1024 * 1024)
    assert len(payload) <= 16 * 1024 * 1024 + len(heavy.state) + 1024
    check_entry_size("the merge", len(payload))
    winner = active()
    merged = winner.submit(CommandKind.MERGE, "gencluster:m", payload, epoch=1, time=200.0,
                           seed=2)
    assert merged.outcome.ok
    kept = [n for n in range(40) if winner.reply_for(f"big-{n}") is not None]
    assert kept == list(range(40 - len(kept), 40)) and 10 <= len(kept) < 40
    dropped = 40 - len(kept) - 1
    with pytest.raises(RetryRefused):
        winner.submit(CommandKind.CAST, f"big-{dropped}",
                      CODEC.encode(["item", "x" * 500_000]), epoch=1, time=201.0, seed=3,
                      first_attempt=100.0 + dropped)
    retry = winner.submit(CommandKind.CAST, "big-39", CODEC.encode(["item", "x" * 500_000]),
                          epoch=1, time=201.0, seed=3, first_attempt=139.0)
    assert retry.outcome.duplicate


def test_an_entry_over_what_one_peer_message_carries_is_refused() -> None:
    check_entry_size("the merge", MAX_ENTRY_BYTES)
    with pytest.raises(TooLarge, match="one replicated log entry"):
        check_entry_size("the merge", MAX_ENTRY_BYTES + 1)
    assert MAX_ENTRY_BYTES < MAX_RECORD_MESSAGE_BYTES
