"""Acknowledgements and the in-sync set: no published member ever lacks an acknowledged
entry, Sync mode waits for its standbys, Async mode does not; a relaxed (degraded) Sync
tracker acknowledges at once, keeps the Lease naming members that hold every durable entry,
and tightens again once its members are back."""

from __future__ import annotations

from typing import Any

import pytest
from gencluster.acks import AckTracker, ReplicationMode, StandbyProgress
from hypothesis import example, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.unit


def tracker(
    mode: ReplicationMode = ReplicationMode.SYNC,
    min_sync: int = 1,
    max_lag: int = 100,
    last_seq: int = 0,
    published: tuple[str, ...] = (),
) -> AckTracker:
    return AckTracker(
        me="a",
        mode=mode,
        min_sync_standbys=min_sync,
        max_lag_entries=max_lag,
        last_seq=last_seq,
        published=published,
    )


def test_sync_waits_for_a_standby_before_acknowledging() -> None:
    acks = tracker()
    acks.appended(3)
    assert acks.acknowledged_seq == 0  # no standby yet: nothing can be acknowledged
    acks.connected("b", 0)
    assert acks.desired_in_sync() == ("b",) and acks.publish_needed()
    assert acks.required == {"b"}  # required at once, before the Lease says so
    acks.acked("b", 2)
    assert acks.acknowledged_seq == 0  # but relied on only once the Lease names it
    acks.published(acks.begin_publish())
    assert acks.acknowledged_seq == 2
    acks.acked("b", 3)
    assert acks.acknowledged_seq == 3


def test_sync_with_two_standbys_waits_for_both() -> None:
    acks = tracker(min_sync=2)
    acks.connected("b", 0)
    acks.appended(5)
    acks.published(acks.begin_publish())
    acks.acked("b", 5)
    assert acks.acknowledged_seq == 0  # one member named, two needed
    acks.connected("c", 0)
    acks.published(acks.begin_publish())
    acks.acked("c", 4)
    assert acks.acknowledged_seq == 4


def test_async_acknowledges_at_once_and_still_lists_caught_up_standbys() -> None:
    acks = tracker(ReplicationMode.ASYNC, min_sync=1, max_lag=2)
    acks.connected("b", 0)
    acks.appended(10)
    assert acks.acknowledged_seq == 10
    assert acks.required == frozenset()
    assert acks.desired_in_sync() == ()  # b lags by 10 > 2
    acks.acked("b", 9)
    acks.connected("c", 10)
    assert acks.desired_in_sync() == ("b", "c")
    acks.disconnected("c")
    assert acks.desired_in_sync() == ("b",)


def test_a_lost_member_is_kept_until_a_replacement_catches_up() -> None:
    acks = tracker()
    acks.connected("b", 0)
    acks.published(acks.begin_publish())
    acks.appended(4)
    acks.acked("b", 4)
    acks.disconnected("b")
    acks.appended(6)
    assert acks.desired_in_sync() == ("b",)  # dropping it would leave fewer than one
    assert acks.acknowledged_seq == 4  # writes wait for b
    acks.connected("c", 4)  # c holds everything acknowledged
    assert acks.desired_in_sync() == ("c",)
    acks.acked("c", 6)
    assert acks.acknowledged_seq == 4  # b is still published: its acks still count
    acks.published(acks.begin_publish())
    assert acks.published_in_sync == ("c",)
    assert acks.acknowledged_seq == 6


def test_a_member_being_published_stays_required_even_if_dropped_meanwhile() -> None:
    acks = tracker(min_sync=1, max_lag=1)
    acks.connected("b", 0)
    acks.published(acks.begin_publish())
    acks.connected("c", 0)
    writing = acks.begin_publish()
    assert writing == ("b", "c")
    acks.appended(5)
    acks.acked("b", 5)  # c lags by 5 > 1: dropped from the desired set
    assert acks.desired_in_sync() == ("b",)
    assert acks.acknowledged_seq == 0  # the write naming c may have landed: c is required
    acks.published(("b",))  # the write failed; the active read its Lease back
    assert acks.acknowledged_seq == 5


def test_a_new_active_waits_for_the_members_it_inherited() -> None:
    acks = tracker(last_seq=10, published=("a", "b"))
    assert acks.published_in_sync == ("b",)  # itself is ignored
    assert acks.acknowledged_seq == 10
    acks.appended(12)
    assert acks.acknowledged_seq == 10
    acks.connected("b", 12)
    assert acks.acknowledged_seq == 12


def test_a_standby_behind_the_acknowledged_position_does_not_join() -> None:
    acks = tracker(ReplicationMode.SYNC, min_sync=1)
    acks.connected("b", 0)
    acks.published(acks.begin_publish())
    acks.appended(5)
    acks.acked("b", 5)
    acks.connected("c", 3)
    assert acks.desired_in_sync() == ("b",)
    acks.acked("c", 5)
    assert acks.desired_in_sync() == ("b", "c")


def test_status_lists_every_known_standby() -> None:
    acks = tracker(published=("b",))
    acks.connected("c", 0)
    acks.appended(3)
    acks.acked("c", 1)
    assert acks.standbys() == [
        StandbyProgress("b", acked_seq=0, lag=3, connected=False, in_sync=True),
        StandbyProgress("c", acked_seq=1, lag=2, connected=True, in_sync=False),
    ]


def test_invalid_use_is_refused() -> None:
    acks = tracker()
    acks.appended(3)
    with pytest.raises(ValueError, match="cannot move back from 3 to 2"):
        acks.appended(2)
    with pytest.raises(ValueError, match="'b' acked 4, beyond the last entry 3"):
        acks.acked("b", 4)
    with pytest.raises(ValueError, match="must not be negative"):
        tracker(min_sync=-1)


standby_names = st.sampled_from(["b", "c"])
steps = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(1, 3)),
        st.tuples(st.just("ack"), standby_names, st.integers(0, 3)),
        st.tuples(st.just("connect"), standby_names, st.booleans()),
        st.tuples(st.just("disconnect"), standby_names),
        st.tuples(
            st.just("begin"),
        ),
        st.tuples(st.just("publish"), st.booleans()),
    ),
    max_size=80,
)


B_JOINED_AND_ACKED = [("connect", "b", True), ("publish", True), ("append", 2), ("ack", "b", 2)]


@settings(max_examples=300)
@example(  # the last member leaves: the Lease must keep naming it (never an empty set)
    mode=ReplicationMode.SYNC,
    min_sync=1,
    max_lag=3,
    ops=[*B_JOINED_AND_ACKED, ("disconnect", "b"), ("publish", True)],
)
@example(  # a standby reconnecting with an old log must not be named before catching up
    mode=ReplicationMode.SYNC,
    min_sync=1,
    max_lag=3,
    ops=[*B_JOINED_AND_ACKED, ("connect", "c", False), ("publish", True)],
)
@given(
    mode=st.sampled_from(list(ReplicationMode)),
    min_sync=st.integers(0, 2),
    max_lag=st.integers(0, 3),
    ops=steps,
)
def test_no_published_member_ever_lacks_an_acknowledged_entry(
    mode: ReplicationMode, min_sync: int, max_lag: int, ops: list[tuple[Any, ...]]
) -> None:
    """Against a model of the standbys' logs: whatever happens, in Sync mode every member the
    Lease may carry (published or being written) holds every acknowledged entry, and once
    anything was acknowledged the Lease names at least min_sync members (an empty set would
    let anyone take over); acknowledgement never goes back."""
    acks = tracker(mode, min_sync, max_lag)
    applied = {"b": 0, "c": 0, "d": 0}
    connected: set[str] = set()
    candidates: set[str] = set()  # what the Lease may carry: published or in flight
    lease: tuple[str, ...] = ()
    previous = 0
    for op, *args in ops:
        if op == "append":
            acks.appended(acks.last_seq + args[0])
        elif op == "ack" and args[0] in connected:
            name = args[0]
            applied[name] = min(acks.last_seq, applied[name] + args[1])
            acks.acked(name, applied[name])
        elif op == "connect" and args[0] not in connected:
            name, by_snapshot = args
            if by_snapshot:  # a snapshot is the active's current state
                applied[name] = acks.last_seq
            connected.add(name)
            acks.connected(name, applied[name])
        elif op == "disconnect":
            connected.discard(args[0])
            acks.disconnected(args[0])
        elif op == "begin":
            candidates |= set(acks.begin_publish())
        elif op == "publish":
            written = acks.begin_publish() if args[0] else lease  # a write, or a read back
            acks.published(written)
            lease = written
            candidates = set(written)
        assert acks.acknowledged_seq >= previous
        previous = acks.acknowledged_seq
        if mode is ReplicationMode.SYNC:
            for member in candidates | set(lease):
                assert applied[member] >= acks.acknowledged_seq, (member, applied)
            if acks.acknowledged_seq > 0:
                assert len(lease) >= min_sync


# -- degraded Sync (partitionPolicy Available) ----------------------------------------------------


def joined(min_sync: int = 1, standbys: tuple[str, ...] = ("b",)) -> AckTracker:
    """A Sync tracker whose `standbys` are published and hold entries 1..4."""
    acks = tracker(min_sync=min_sync)
    for name in standbys:
        acks.connected(name, 0)
    acks.published(acks.begin_publish())
    acks.appended(4)
    for name in standbys:
        acks.acked(name, 4)
    assert acks.acknowledged_seq == 4 and not acks.degraded
    return acks


def test_relaxed_sync_acknowledges_at_once_and_says_what_is_not_durable() -> None:
    acks = joined()
    acks.disconnected("b")
    acks.appended(6)
    assert acks.acknowledged_seq == 4  # strict: waits for b
    assert acks.relax()
    assert not acks.relax()  # already relaxed
    assert (acks.acknowledged_seq, acks.durable_seq) == (6, 4)
    assert acks.degraded and acks.relaxed and acks.unsynced_entries == 2
    acks.appended(9)
    assert acks.acknowledged_seq == 9 and acks.unsynced_entries == 5
    # The Lease keeps naming b, which holds every durable entry: never an empty set.
    assert acks.desired_in_sync() == ("b",) and not acks.publish_needed()


def test_relaxed_sync_tightens_once_the_members_are_back_and_caught_up() -> None:
    acks = joined()
    acks.disconnected("b")
    acks.appended(6)
    acks.relax()
    acks.appended(8)
    acks.connected("b", 4)
    assert acks.relaxed  # connected, but it has not acknowledged what was waiting (5, 6)
    acks.acked("b", 6)
    assert not acks.relaxed  # strict again for new entries ...
    assert acks.degraded and acks.acknowledged_seq == 8  # ... 7, 8 still only here
    acks.appended(9)
    assert acks.acknowledged_seq == 8  # 9 waits for b, as in strict Sync
    acks.acked("b", 9)
    assert (acks.acknowledged_seq, acks.durable_seq, acks.degraded) == (9, 9, False)


def test_a_stream_that_looks_open_does_not_end_the_degradation() -> None:
    acks = joined()
    acks.appended(6)  # b is connected but acknowledges nothing (stopped, or cut silently)
    acks.relax()
    acks.appended(7)
    assert acks.relaxed and acks.acknowledged_seq == 7


def test_relaxed_a_replacement_joins_only_holding_every_durable_entry() -> None:
    acks = joined()
    acks.disconnected("b")
    acks.appended(6)
    acks.relax()
    acks.connected("c", 3)  # lacks entry 4, which was acknowledged strictly
    assert acks.desired_in_sync() == ("b",)
    acks.acked("c", 5)  # holds every durable entry: replaces the lost member
    assert acks.desired_in_sync() == ("c",) and acks.publish_needed()
    acks.acked("c", 6)
    assert acks.relaxed  # the Lease still names b
    acks.published(acks.begin_publish())
    assert not acks.relaxed and not acks.degraded
    assert acks.published_in_sync == ("c",)


def test_async_never_relaxes_nor_degrades() -> None:
    acks = tracker(ReplicationMode.ASYNC)
    acks.appended(3)
    assert not acks.relax()
    assert (acks.acknowledged_seq, acks.durable_seq, acks.degraded) == (3, 3, False)


@settings(max_examples=300)
@given(
    min_sync=st.integers(1, 2),
    max_lag=st.integers(0, 3),
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("append"), st.integers(1, 3)),
            st.tuples(st.just("ack"), standby_names, st.integers(0, 3)),
            st.tuples(st.just("connect"), standby_names, st.booleans()),
            st.tuples(st.just("disconnect"), standby_names),
            st.tuples(st.just("begin")),
            st.tuples(st.just("publish"), st.booleans()),
            st.tuples(st.just("relax")),
        ),
        max_size=80,
    ),
)
def test_degraded_sync_keeps_every_durable_entry_on_whoever_the_lease_may_name(
    min_sync: int, max_lag: int, ops: list[tuple[Any, ...]]
) -> None:
    """With `relax` among the steps: every member the Lease may carry holds every durable
    entry, the Lease never drops below min_sync members once something was acknowledged,
    `acknowledged_seq` and `durable_seq` never go back, and the tracker is degraded exactly
    while some acknowledged entry is not durable or it is relaxed."""
    acks = tracker(ReplicationMode.SYNC, min_sync, max_lag)
    applied = {"b": 0, "c": 0}
    connected: set[str] = set()
    candidates: set[str] = set()
    lease: tuple[str, ...] = ()
    previous = (0, 0)
    for op, *args in ops:
        if op == "append":
            acks.appended(acks.last_seq + args[0])
        elif op == "ack" and args[0] in connected:
            name = args[0]
            applied[name] = min(acks.last_seq, applied[name] + args[1])
            acks.acked(name, applied[name])
        elif op == "connect" and args[0] not in connected:
            name, by_snapshot = args
            if by_snapshot:
                applied[name] = acks.last_seq
            connected.add(name)
            acks.connected(name, applied[name])
        elif op == "disconnect":
            connected.discard(args[0])
            acks.disconnected(args[0])
        elif op == "begin":
            candidates |= set(acks.begin_publish())
        elif op == "publish":
            written = acks.begin_publish() if args[0] else lease
            acks.published(written)
            lease = written
            candidates = set(written)
        elif op == "relax":
            acks.relax()
        now = (acks.acknowledged_seq, acks.durable_seq)
        assert now[0] >= previous[0] and now[1] >= previous[1] and now[0] >= now[1]
        previous = now
        for member in candidates | set(lease):
            assert applied[member] >= acks.durable_seq, (member, applied)
        if acks.durable_seq > 0:
            assert len(lease) >= min_sync
        assert acks.degraded == (acks.relaxed or now[0] > now[1])
        if not acks.relaxed and acks.durable_seq == acks.acknowledged_seq:
            for member in candidates | set(lease):
                assert applied[member] >= acks.acknowledged_seq
