"""The replica's role transitions (roles.transition): every legal path the runtime takes, and
the sequences it must never take (they raise instead of mixing flags)."""

from __future__ import annotations

import pytest
from gencluster.election import Leadership
from gencluster.roles import (
    Active,
    BatchApplied,
    Demoted,
    Event,
    Halted,
    HandedOver,
    HandoverAbandoned,
    HandoverStarted,
    IllegalTransition,
    Joining,
    LeaseLost,
    LeaseWon,
    PartitionPolicy,
    Renewed,
    Role,
    SigTerm,
    SnapshotNeeded,
    SourceRefused,
    Standby,
    Stopped,
    Writes,
    WritesPaused,
    WritesResumed,
    follow_override,
    follows,
    transition,
)

pytestmark = pytest.mark.unit

FENCED = PartitionPolicy.FENCED
AVAILABLE = PartitionPolicy.AVAILABLE
LEAD = Leadership(epoch=3, renewed_at=10.0)
ACTIVE = Active(3, LEAD)


def run(role: Role, *events: Event, policy: PartitionPolicy = FENCED) -> Role:
    for event in events:
        role = transition(role, event, policy=policy)
    return role


def test_a_new_replica_joins_then_stands_by_once_caught_up() -> None:
    role = run(Joining(), BatchApplied("a:1", caught_up=False))
    assert role == Joining()
    assert run(role, BatchApplied("a:1", caught_up=True)) == Standby()


def test_a_standby_asked_for_a_snapshot_joins_again_and_stays_standby_while_behind() -> None:
    assert run(Standby(), SnapshotNeeded()) == Joining()
    assert run(Standby(), BatchApplied("a:1", caught_up=False)) == Standby()


def test_winning_the_lease_makes_an_active_at_its_epoch() -> None:
    for follower in (Joining(), Standby("x:1")):
        assert run(follower, LeaseWon(LEAD)) == Active(3, LEAD, Writes.OPEN)


def test_a_renewal_moves_the_renew_time_only() -> None:
    assert run(ACTIVE, Renewed(12.5)) == Active(3, Leadership(3, 12.5))


def test_losing_the_lease_fenced_steps_down_available_keeps_serving() -> None:
    assert run(ACTIVE, LeaseLost("moved")) == Standby()
    kept = run(ACTIVE, LeaseLost("moved"), policy=AVAILABLE)
    assert kept == Active(3, None)
    # ... until demoted; it may also regain the Lease (then with a leadership again)
    assert run(kept, LeaseWon(Leadership(5, 20.0))) == Active(5, Leadership(5, 20.0))
    leaving = run(kept, SigTerm(), LeaseWon(Leadership(5, 20.0)))
    assert leaving == Active(5, Leadership(5, 20.0), Writes.LEAVING)


def test_demote_steps_down_and_follows_the_given_address_until_it_delivered() -> None:
    role = run(ACTIVE, Demoted("winner:1"))
    assert role == Standby("winner:1")
    assert follow_override(role) == "winner:1"
    assert run(role, BatchApplied("other:1", caught_up=True)) == Standby("winner:1")
    assert run(role, BatchApplied("winner:1", caught_up=True)) == Standby()
    assert run(role, SourceRefused("winner:1")) == Standby()
    assert run(Standby(), Demoted("winner:1")) == Standby("winner:1")
    assert run(Joining(), Demoted("winner:1")) == Joining("winner:1")


def test_pause_and_resume_writes() -> None:
    paused = run(ACTIVE, WritesPaused())
    assert paused.writes is Writes.PAUSED  # type: ignore[union-attr]
    assert not paused.accepting  # type: ignore[union-attr]
    assert run(paused, WritesResumed()) == ACTIVE


def test_switchover_refuses_writes_then_steps_down_or_reopens() -> None:
    switching = run(ACTIVE, HandoverStarted())
    assert switching == Active(3, LEAD, Writes.SWITCHING_OVER)
    assert run(switching, HandedOver("b")) == Standby()
    assert run(switching, HandoverAbandoned()) == ACTIVE
    assert run(ACTIVE, WritesPaused(), HandoverStarted()) == switching


def test_sigterm_stops_a_standby_at_once_and_an_active_after_its_handover() -> None:
    assert run(Standby(), SigTerm()) == Stopped()
    assert run(Joining(), SigTerm()) == Stopped()
    leaving = run(ACTIVE, SigTerm())
    assert leaving == Active(3, LEAD, Writes.LEAVING)
    assert run(leaving, HandoverStarted()) == leaving
    assert run(leaving, HandoverAbandoned()) == leaving  # writes stay refused
    assert run(leaving, HandedOver("b")) == Stopped()
    assert run(leaving, LeaseLost("deadline")) == Stopped()
    assert run(leaving, Demoted("x:1")) == Stopped()
    assert run(leaving, Halted()) == Stopped()
    assert not follows(Stopped())


@pytest.mark.parametrize(
    ("role", "event"),
    [
        (Standby(), Renewed(1.0)),
        (Standby(), LeaseLost("x")),
        (Joining(), WritesPaused()),
        (Standby(), HandoverStarted()),
        (Standby(), HandedOver("b")),
        (ACTIVE, LeaseWon(LEAD)),  # it holds the Lease already
        (Active(3, None), Renewed(1.0)),  # nothing to renew after losing it
        (ACTIVE, BatchApplied("a:1", caught_up=True)),
        (ACTIVE, SnapshotNeeded()),
        (ACTIVE, HandedOver("b")),  # no handover was started
        (ACTIVE, HandoverAbandoned()),
        (Active(3, LEAD, Writes.SWITCHING_OVER), HandoverStarted()),  # one at a time
        (Active(3, LEAD, Writes.SWITCHING_OVER), WritesPaused()),
        (Active(3, LEAD, Writes.LEAVING), WritesResumed()),
        (Stopped(), LeaseWon(LEAD)),
        (Stopped(), BatchApplied("a:1", caught_up=True)),
        (Stopped(), Demoted("x:1")),
        (Stopped(), SigTerm()),
    ],
)
def test_impossible_sequences_raise(role: Role, event: Event) -> None:
    with pytest.raises(IllegalTransition, match=type(event).__name__):
        transition(role, event, policy=FENCED)
