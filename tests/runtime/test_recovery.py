"""Whole-cluster recovery (#11 part 2): which replica restored from its volume may lead, with
simulated positions, unreachable peers and the failure cases."""

from __future__ import annotations

import pytest
from gencluster.recovery import Abstain, Defer, Lead, Position, Wait, electorate, recover
from hypothesis import given
from hypothesis import strategies as st

pytestmark = pytest.mark.unit

PODS = ("s-0", "s-1", "s-2")


def verdict(me: str, mine: Position, peers: dict[str, Position | None], *,
            in_sync: tuple[str, ...] | None = ("s-1", "s-2"),
            waited: float = 0.0, strict: bool = True):
    return recover(me, mine, in_sync=in_sync, replicas=PODS, peers=peers,
                   waited=waited, patience=15.0, strict=strict)


def test_the_most_advanced_member_leads_and_the_others_defer_to_it() -> None:
    positions = {"s-0": Position(3, 90), "s-1": Position(3, 100), "s-2": Position(3, 95)}
    for me, mine in positions.items():
        others = {p: q for p, q in positions.items() if p != me}
        result = verdict(me, mine, others)
        if me == "s-1":
            assert isinstance(result, Lead)
        elif me == "s-2":
            assert result == Defer("s-1", result.reason)
        else:  # the last holder: what it holds beyond the in-sync set was never acknowledged
            assert isinstance(result, Abstain)


def test_a_higher_epoch_wins_over_a_longer_log() -> None:
    # Entries of a deposed active's epoch beyond the new one's are not acknowledged.
    result = verdict("s-1", Position(3, 500), {"s-0": None, "s-2": Position(4, 10)})
    assert isinstance(result, Defer) and result.to == "s-2"


def test_equal_positions_are_broken_by_the_smaller_name() -> None:
    same = Position(2, 7)
    assert isinstance(verdict("s-2", same, {"s-0": same, "s-1": same}), Defer)
    assert isinstance(verdict("s-1", same, {"s-0": same, "s-2": same}), Lead)


def test_a_replica_outside_the_in_sync_set_abstains_however_advanced() -> None:
    result = verdict("s-2", Position(9, 999), {"s-0": None, "s-1": None}, in_sync=("s-1",))
    assert isinstance(result, Abstain)


def test_an_unanswered_member_is_waited_for_one_lease_duration_then_a_member_leads() -> None:
    # s-2 may be more advanced but only slow to start: wait for it first.
    early = verdict("s-1", Position(3, 100), {"s-0": Position(3, 100), "s-2": None})
    assert isinstance(early, Wait) and early.unreachable == ("s-2",)
    late = verdict("s-1", Position(3, 100), {"s-0": Position(3, 100), "s-2": None},
                   waited=15.0)
    assert isinstance(late, Lead) and "every acknowledged entry" in late.reason


def test_the_slow_member_wins_when_it_answers_in_time() -> None:
    result = verdict("s-1", Position(3, 100), {"s-0": None, "s-2": Position(3, 101)},
                     waited=1.0)
    assert isinstance(result, Defer) and result.to == "s-2"


def test_without_an_in_sync_set_strict_mode_waits_for_every_replica_forever() -> None:
    result = verdict("s-1", Position(3, 100), {"s-0": None, "s-2": Position(3, 1)},
                     in_sync=(), waited=10_000.0, strict=True)
    assert isinstance(result, Wait) and result.unreachable == ("s-0",)


def test_without_an_in_sync_set_async_mode_leads_after_its_patience() -> None:
    result = verdict("s-1", Position(3, 100), {"s-0": None, "s-2": Position(3, 1)},
                     in_sync=(), waited=15.0, strict=False)
    assert isinstance(result, Lead) and "lost" in result.reason


def test_the_electorate() -> None:
    assert electorate(("b",), PODS) == ("b",)
    assert electorate((), PODS) == PODS
    assert electorate(None, PODS) == PODS


positions = st.builds(Position, st.integers(0, 3), st.integers(0, 5))


@given(st.lists(positions, min_size=3, max_size=3),
       st.sampled_from([("s-1", "s-2"), ("s-0",), ()]))
def test_when_everyone_answers_exactly_one_replica_leads_and_it_is_the_most_advanced(
    reported: list[Position], in_sync: tuple[str, ...]
) -> None:
    by_pod = dict(zip(PODS, reported, strict=True))
    leaders = []
    for me in PODS:
        others = {p: q for p, q in by_pod.items() if p != me}
        result = recover(me, by_pod[me], in_sync=in_sync, replicas=PODS,
                         peers=others, waited=0.0, patience=15.0, strict=True)
        if isinstance(result, Lead):
            leaders.append(me)
    voters = electorate(in_sync, PODS)
    best = max(by_pod[p] for p in voters)
    assert len(leaders) == 1
    assert by_pod[leaders[0]] == best
