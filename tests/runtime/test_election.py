"""Lease election: the client-go rules, fencing, the in-sync rule, handover, and a simulation
of several replicas with drifting clocks and partitions in which two never serve at once."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

import pytest
from gencluster.election import (
    Acquire,
    Candidacy,
    ElectionConfig,
    ElectionConfigError,
    HandoverWrite,
    Leadership,
    LeaseFormatError,
    LeaseRecord,
    Observation,
    Release,
    Renew,
    StandBy,
    StepDown,
    candidacy,
    choose_handover_target,
    decide,
    handover,
    handover_write_outcome,
    is_held,
    jittered,
    lease_patch,
    lease_timing_problems,
    may_serve,
    micro_time,
    observe,
    parse_in_sync,
    record_from_lease,
    release,
    state_lost,
)
from gencluster.roles import (
    Active,
    LeaseLost,
    LeaseWon,
    PartitionPolicy,
    Renewed,
    Role,
    Standby,
    transition,
)
from gencluster.wellknown import IN_SYNC_ANNOTATION, INITIALIZED_ANNOTATION
from hypothesis import given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.unit

CONFIG = ElectionConfig(lease_duration=10, renew_deadline=6.0, retry_period=2.0)
WALL = 1_700_000_000.0
STAMP = micro_time(WALL)
HELD_BY_B = LeaseRecord(
    holder="b",
    lease_duration_seconds=10,
    acquire_time="2020-01-01T00:00:00.000000Z",
    renew_time="2020-01-01T00:00:00.000000Z",  # ancient: must not matter to observers
    transitions=4,
    in_sync=("a", "c"),
    resource_version="77",
)


def step(
    record: LeaseRecord | None,
    *,
    observed_at: float = 100.0,
    now: float = 100.0,
    me: str = "a",
    candidate: Candidacy = Candidacy.PREFERRED,
    leadership: Leadership | None = None,
    in_sync: tuple[str, ...] | None = None,
):
    return decide(
        Observation(record, observed_at),
        now=now,
        wall_time=WALL,
        config=CONFIG,
        me=me,
        candidate=candidate,
        leadership=leadership,
        in_sync=in_sync,
    )


# --- configuration -------------------------------------------------------------------------


def test_default_timings_are_client_gos() -> None:
    config = ElectionConfig()
    assert (config.lease_duration, config.renew_deadline, config.retry_period) == (15, 10.0, 2.0)


@pytest.mark.parametrize(
    ("duration", "deadline", "retry", "problems"),
    [
        (3, 1.5, 0.5, []),
        (15, 10.0, 2.0, []),
        (
            10,
            10.0,
            2.0,
            ["lease.durationSeconds (10) must be at least lease.renewDeadlineSeconds + "],
        ),
        (11, 10.0, 2.0, ["lease.durationSeconds (11) must be at least"]),
        (
            15,
            2.0,
            2.0,
            [
                "lease.renewDeadlineSeconds (2.0) must be greater than 1.2 x "
                "lease.retryPeriodSeconds (2.0)"
            ],
        ),
        (15, 2.4, 2.0, ["lease.renewDeadlineSeconds (2.4) must be greater than 1.2"]),
        (15, 10.0, 0.0, ["lease.retryPeriodSeconds must be positive"]),
        (
            0,
            10.0,
            2.0,
            ["whole number of seconds >= 1", "lease.durationSeconds (0) must be at least"],
        ),
        (2.5, 1.0, 0.5, ["whole number of seconds >= 1, got 2.5"]),
    ],
)
def test_config_validation(
    duration: float, deadline: float, retry: float, problems: list[str]
) -> None:
    found = lease_timing_problems(duration, deadline, retry)
    assert len(found) == len(problems)
    for expected, actual in zip(problems, found, strict=True):
        assert expected in actual
    if problems:
        with pytest.raises(ElectionConfigError, match=re.escape(problems[0])):
            ElectionConfig(duration, deadline, retry)  # type: ignore[arg-type]


# --- observation and expiry ----------------------------------------------------------------


def test_observe_keeps_the_first_sighting_of_an_unchanged_record() -> None:
    first = observe(None, HELD_BY_B, now=5.0)
    again = observe(first, replace(HELD_BY_B, resource_version="78"), now=9.0)
    assert again.observed_at == 5.0  # a new resourceVersion alone is not a change
    renewed = observe(again, replace(HELD_BY_B, renew_time=STAMP), now=12.0)
    assert renewed.observed_at == 12.0
    assert observe(renewed, None, now=13.0) == Observation(None, 13.0)


@pytest.mark.parametrize(
    ("record", "now", "held"),
    [
        (HELD_BY_B, 100.0, True),
        (HELD_BY_B, 109.999, True),
        (HELD_BY_B, 110.0, False),
        (replace(HELD_BY_B, holder=""), 100.0, False),
        (None, 100.0, False),
    ],
)
def test_expiry_is_judged_by_the_observers_clock(
    record: LeaseRecord | None, now: float, held: bool
) -> None:
    assert is_held(Observation(record, 100.0), now) is held


# --- candidacy -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "me", "holds_state", "expected"),
    [
        (None, "a", False, Candidacy.PREFERRED),
        (replace(HELD_BY_B, in_sync=None), "x", False, Candidacy.PREFERRED),
        (HELD_BY_B, "a", True, Candidacy.PREFERRED),
        (HELD_BY_B, "a", False, Candidacy.FALLBACK),
        (HELD_BY_B, "x", True, Candidacy.NONE),
        (replace(HELD_BY_B, in_sync=()), "x", True, Candidacy.PREFERRED),
        (replace(HELD_BY_B, in_sync=()), "x", False, Candidacy.FALLBACK),
    ],
)
def test_only_in_sync_replicas_with_state_are_preferred(
    record: LeaseRecord | None, me: str, holds_state: bool, expected: Candidacy
) -> None:
    assert candidacy(record, me, holds_state=holds_state) is expected


INITIALIZED = replace(HELD_BY_B, initialized="b")


@pytest.mark.parametrize(
    "record",
    [INITIALIZED, replace(INITIALIZED, in_sync=()), replace(INITIALIZED, in_sync=None),
     replace(INITIALIZED, in_sync=("a",), holder="")],
)
def test_a_replica_without_state_never_leads_an_initialized_cluster(record: LeaseRecord) -> None:
    # Not even after the extra lease duration of an empty in-sync set: leading runs init.
    assert candidacy(record, "a", holds_state=False) is Candidacy.NONE
    assert isinstance(step(record, now=10_000.0, candidate=Candidacy.NONE), StandBy)


def test_after_a_reinitialize_a_replica_without_state_leads_after_one_more_lease_duration() -> (
    None
):
    # The operator removed the annotation: the lost cluster's in-sync set names replicas
    # that hold nothing, so it no longer bars anyone, but a replica with state still wins.
    assert candidacy(HELD_BY_B, "x", holds_state=False) is Candidacy.FALLBACK
    assert candidacy(HELD_BY_B, "a", holds_state=True) is Candidacy.PREFERRED


def test_a_restored_replica_leads_whatever_the_lost_in_sync_set_says() -> None:
    assert candidacy(INITIALIZED, "x", holds_state=True, restored=True) is Candidacy.PREFERRED
    assert candidacy(INITIALIZED, "x", holds_state=True) is Candidacy.NONE


def test_the_first_active_marks_the_cluster_initialized_in_the_write_that_takes_the_lease() -> (
    None
):
    action = step(HELD_BY_B, observed_at=100.0, now=110.0)
    assert isinstance(action, Acquire) and action.record.initialized == "a"
    kept = step(INITIALIZED, observed_at=100.0, now=110.0)
    assert isinstance(kept, Acquire) and kept.record.initialized == "b"
    patch = lease_patch(action.record)
    assert patch["metadata"]["annotations"][INITIALIZED_ANNOTATION] == "a"
    lease = {"metadata": {"annotations": {INITIALIZED_ANNOTATION: "a"}}, "spec": {}}
    assert record_from_lease(lease).initialized == "a"
    assert record_from_lease({"metadata": {}, "spec": {}}).initialized is None


@pytest.mark.parametrize(
    ("record", "holds_state", "now", "grace", "lost"),
    [
        (replace(INITIALIZED, holder=""), False, 100.0, 0.0, True),
        (replace(INITIALIZED, holder=""), True, 100.0, 0.0, False),
        (replace(HELD_BY_B, holder=""), False, 100.0, 0.0, False),  # never initialized
        (INITIALIZED, False, 105.0, 0.0, False),  # held by b: join it
        (INITIALIZED, False, 110.0, 0.0, True),  # b's Lease expired
        (replace(INITIALIZED, holder="a"), False, 100.0, 0.0, True),  # my own, from before
        (replace(INITIALIZED, holder=""), False, 119.0, 20.0, False),  # recovery may lead
        (replace(INITIALIZED, holder=""), False, 120.0, 20.0, True),
    ],
)
def test_state_lost_is_no_state_in_an_initialized_cluster_with_nobody_to_join(
    record: LeaseRecord, holds_state: bool, now: float, grace: float, lost: bool
) -> None:
    observation = Observation(record, 100.0)
    assert state_lost(observation, "a", now, holds_state=holds_state, grace=grace) is lost


def test_an_active_renewal_marks_a_cluster_that_lacks_the_annotation() -> None:
    action = step(MY_LEASE, leadership=Leadership(7, renewed_at=98.0))
    assert isinstance(action, Renew) and action.record.initialized == "a"


# --- decisions of a replica that is not active ---------------------------------------------


def test_no_lease_creates_one_at_epoch_one() -> None:
    action = step(None)
    assert action == Acquire(
        LeaseRecord("a", 10, STAMP, STAMP, transitions=1, in_sync=None, initialized="a"),
        epoch=1,
        create=True,
    )


def test_no_lease_and_not_a_candidate_waits() -> None:
    assert isinstance(step(None, candidate=Candidacy.NONE), StandBy)


def test_a_held_lease_is_respected_however_old_its_renew_time() -> None:
    action = step(HELD_BY_B, observed_at=100.0, now=109.0)
    assert action == StandBy("b", 1.0, "held by 'b'")
    assert step(HELD_BY_B, now=100.0) == StandBy("b", 2.0, "held by 'b'")


def test_an_expired_lease_is_taken_with_the_next_epoch() -> None:
    action = step(HELD_BY_B, observed_at=100.0, now=110.0)
    assert isinstance(action, Acquire)
    assert action.epoch == 5 and not action.create
    assert action.record == replace(
        HELD_BY_B, holder="a", acquire_time=STAMP, renew_time=STAMP, transitions=5,
        initialized="a",
    )
    assert action.record.resource_version == "77"  # the write is conditional on what was read


def test_a_free_lease_is_taken_at_once() -> None:
    released = release(HELD_BY_B, WALL)
    action = step(released, observed_at=100.0, now=100.0)
    assert isinstance(action, Acquire)
    assert action.epoch == 5


def test_a_replica_outside_the_in_sync_set_never_takes_the_lease() -> None:
    action = step(HELD_BY_B, now=500.0, me="x", candidate=Candidacy.NONE)
    assert action == StandBy("b", 2.0, "'x' is not in the in-sync set")


def test_a_replica_without_state_waits_one_more_lease_duration_when_no_one_is_in_sync() -> None:
    record = replace(HELD_BY_B, in_sync=())
    waiting = step(record, now=115.0, candidate=Candidacy.FALLBACK)
    assert isinstance(waiting, StandBy) and "replica with state" in waiting.reason
    assert waiting.retry_after == 2.0
    assert isinstance(step(record, now=120.0, candidate=Candidacy.FALLBACK), Acquire)
    free = replace(record, holder="")
    assert isinstance(step(free, now=109.0, candidate=Candidacy.FALLBACK), StandBy)
    assert isinstance(step(free, now=110.0, candidate=Candidacy.FALLBACK), Acquire)


def test_a_lease_handed_to_me_is_confirmed_without_waiting() -> None:
    handed = handover(replace(HELD_BY_B, in_sync=("a", "c")), "b", "a", WALL)
    action = step(handed, observed_at=100.0, now=100.0)
    assert isinstance(action, Acquire)
    assert action.epoch == 5 == action.record.transitions
    assert action.record.holder == "a"


def test_a_lease_held_in_my_name_that_i_may_not_serve_is_released() -> None:
    mine = replace(HELD_BY_B, holder="a")
    action = step(mine, candidate=Candidacy.NONE)
    assert isinstance(action, Release)
    assert action.record.holder == "" and action.record.lease_duration_seconds == 1
    assert action.record.transitions == 4


# --- decisions of the active ---------------------------------------------------------------

MY_LEASE = replace(HELD_BY_B, holder="a", transitions=7)


def test_the_active_renews_and_publishes_its_in_sync_set() -> None:
    action = step(MY_LEASE, leadership=Leadership(7, renewed_at=98.0), in_sync=("c", "b", "c"))
    assert action == Renew(
        replace(MY_LEASE, renew_time=STAMP, in_sync=("b", "c"), initialized="a")
    )


def test_the_active_keeps_the_published_set_when_given_none() -> None:
    action = step(MY_LEASE, leadership=Leadership(7, renewed_at=98.0))
    assert isinstance(action, Renew) and action.record.in_sync == ("a", "c")


@pytest.mark.parametrize(
    ("record", "renewed_at", "reason"),
    [
        (MY_LEASE, 94.0, "past the renew deadline of 6.0s"),
        (None, 98.0, "the lease was deleted"),
        (replace(MY_LEASE, holder="c", transitions=8), 98.0, "now held by 'c' (epoch 8)"),
        (replace(MY_LEASE, holder=""), 98.0, "now held by 'nobody'"),
        (replace(MY_LEASE, transitions=9), 98.0, "moved from epoch 7 to 9"),
    ],
)
def test_the_active_steps_down(record: LeaseRecord | None, renewed_at: float, reason: str) -> None:
    action = step(record, leadership=Leadership(7, renewed_at=renewed_at))
    assert isinstance(action, StepDown)
    assert reason in action.reason


def test_may_serve_is_the_fencing_deadline() -> None:
    leadership = Leadership(3, renewed_at=50.0)
    assert may_serve(leadership, 55.999, CONFIG)
    assert not may_serve(leadership, 56.0, CONFIG)
    assert not may_serve(None, 0.0, CONFIG)


# --- handover and release ------------------------------------------------------------------


def test_handover_writes_the_target_with_the_next_epoch() -> None:
    mine = replace(MY_LEASE, in_sync=("b", "c"))
    handed = handover(mine, "a", "c", WALL)
    assert (handed.holder, handed.transitions, handed.renew_time) == ("c", 8, STAMP)
    assert handed.acquire_time == STAMP and handed.in_sync == ("b", "c")


@pytest.mark.parametrize(
    ("holder", "target", "message"),
    [
        ("b", "c", "cannot hand over a lease held by 'b'"),
        ("a", "a", "current holder"),
        ("a", "x", "'x' is not in the in-sync set"),
    ],
)
def test_handover_refuses_unsafe_targets(holder: str, target: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        handover(replace(MY_LEASE, holder=holder, in_sync=("b", "c")), "a", target, WALL)


def test_an_unanswered_handover_is_judged_by_the_lease_read_back() -> None:
    """A write that got no answer resumes writes only when the Lease shows it never landed:
    otherwise the target, which takes over on reading it, would be a second active."""
    mine = replace(MY_LEASE, in_sync=("b", "c"))
    attempted = handover(mine, "a", "c", WALL)
    assert handover_write_outcome(attempted, attempted, "a") is HandoverWrite.LANDED
    renewed = replace(attempted, renew_time="2026-12-03T00:00:09.000000Z")
    assert handover_write_outcome(attempted, renewed, "a") is HandoverWrite.LANDED
    assert handover_write_outcome(attempted, mine, "a") is HandoverWrite.NOT_LANDED
    # Our own renewal since (same epoch) is not a handover either.
    assert handover_write_outcome(attempted, replace(mine, renew_time="x"), "a") is (
        HandoverWrite.NOT_LANDED)
    taken = replace(mine, holder="b", transitions=mine.transitions + 1)
    assert handover_write_outcome(attempted, taken, "a") is HandoverWrite.LOST
    # The target at a later epoch (it took over, lost and took it again): it holds it.
    later = replace(attempted, transitions=attempted.transitions + 2)
    assert handover_write_outcome(attempted, later, "a") is HandoverWrite.LANDED
    released = replace(mine, holder="")
    assert handover_write_outcome(attempted, released, "a") is HandoverWrite.LOST


def test_choose_handover_target_prefers_the_most_up_to_date_in_sync_standby() -> None:
    acked = {"b": 10, "c": 12, "d": 50}
    assert choose_handover_target(acked, ["b", "c"]) == "c"
    assert choose_handover_target({"b": 12, "c": 12}, ["c", "b"]) == "b"
    assert choose_handover_target(acked, ["x"]) is None


# --- the Lease object ----------------------------------------------------------------------


def test_lease_json_round_trip() -> None:
    lease = {
        "metadata": {
            "name": "demo",
            "resourceVersion": "12",
            "annotations": {IN_SYNC_ANNOTATION: '["c","b"]', "other": "x"},
        },
        "spec": {
            "holderIdentity": "demo-0",
            "leaseDurationSeconds": 15,
            "acquireTime": "2026-01-01T00:00:00.000000Z",
            "renewTime": "2026-01-01T00:00:05.000000Z",
            "leaseTransitions": 3,
        },
    }
    record = record_from_lease(lease)
    assert record == LeaseRecord(
        "demo-0",
        15,
        "2026-01-01T00:00:00.000000Z",
        "2026-01-01T00:00:05.000000Z",
        3,
        ("b", "c"),
    )
    assert record.resource_version == "12"
    patch = lease_patch(record)
    assert patch["metadata"] == {
        "resourceVersion": "12",
        "annotations": {IN_SYNC_ANNOTATION: '["b","c"]'},
    }
    assert patch["spec"] == {**lease["spec"]}
    assert record_from_lease({**lease, **patch}) == record


def test_an_empty_lease_reads_as_free() -> None:
    record = record_from_lease({"metadata": {"name": "x"}, "spec": {}})
    assert record == LeaseRecord()
    assert lease_patch(release(record, WALL))["spec"]["holderIdentity"] is None


@pytest.mark.parametrize(
    ("value", "message"),
    [("not json", "is not JSON"), ('{"a": 1}', "must be a JSON list"), ("[1]", "JSON list")],
)
def test_a_malformed_in_sync_annotation_is_an_error(value: str, message: str) -> None:
    with pytest.raises(LeaseFormatError, match=message):
        parse_in_sync(value)


def test_non_integer_lease_fields_are_an_error() -> None:
    with pytest.raises(LeaseFormatError, match="must be integers"):
        record_from_lease({"spec": {"leaseDurationSeconds": "15"}})


def test_micro_time_format() -> None:
    assert micro_time(0.25) == "1970-01-01T00:00:00.250000Z"


def test_jitter_stretches_by_at_most_a_fifth() -> None:
    assert jittered(2.0, 0.0) == 2.0
    assert jittered(2.0, 0.5) == pytest.approx(2.2)
    with pytest.raises(ValueError):
        jittered(2.0, 1.0)


# --- simulation ----------------------------------------------------------------------------


@dataclass
class SimulatedApiServer:
    """A Lease with optimistic concurrency, as the API server keeps it."""

    record: LeaseRecord | None = None
    version: int = 0

    def read(self) -> LeaseRecord | None:
        if self.record is None:
            return None
        return replace(self.record, resource_version=str(self.version))

    def write(self, record: LeaseRecord, create: bool) -> bool:
        if create:
            if self.record is not None:
                return False
        elif self.record is None or record.resource_version != str(self.version):
            return False
        self.version += 1
        self.record = record
        return True


@dataclass
class SimulatedReplica:
    """One replica as the runtime's shell runs it: `election.decide` picks the Lease action,
    `roles.transition` (Fenced policy) turns its outcome into the replica's role."""

    name: str
    clock_rate: float
    clock_offset: float
    cut_off: list[tuple[float, float]]
    observation: Observation | None = None
    role: Role = field(default_factory=Standby)
    next_step_at: float = 0.0
    terms: list[int] = field(default_factory=list)

    @property
    def leadership(self) -> Leadership | None:
        return self.role.leadership if isinstance(self.role, Active) else None

    def clock(self, real_time: float) -> float:
        return self.clock_offset + self.clock_rate * real_time

    def reachable(self, real_time: float) -> bool:
        return not any(start <= real_time < end for start, end in self.cut_off)

    def serving(self, real_time: float, config: ElectionConfig) -> bool:
        return isinstance(self.role, Active) and may_serve(
            self.role.leadership, self.clock(real_time), config
        )

    def become(self, event: LeaseWon | Renewed | LeaseLost) -> None:
        self.role = transition(self.role, event, policy=PartitionPolicy.FENCED)

    def act(self, real_time: float, api: SimulatedApiServer, config: ElectionConfig) -> None:
        now = self.clock(real_time)
        if now < self.next_step_at:
            return
        self.next_step_at = now + config.retry_period
        if isinstance(self.role, Active) and not self.serving(real_time, config):
            self.become(LeaseLost("renew deadline passed"))  # the shell's fence watchdog
        if not self.reachable(real_time):
            return
        record = api.read()
        self.observation = observe(self.observation, record, now)
        action = decide(
            self.observation,
            now=now,
            wall_time=real_time,
            config=config,
            me=self.name,
            candidate=candidacy(record, self.name, holds_state=True),
            leadership=self.leadership,
        )
        if isinstance(action, Acquire) and api.write(action.record, action.create):
            self.become(LeaseWon(Leadership(action.epoch, renewed_at=now)))
            self.terms.append(action.epoch)
        elif isinstance(action, Renew) and api.write(action.record, create=False):
            self.become(Renewed(now))
        elif isinstance(action, StepDown):
            self.become(LeaseLost(action.reason))
        elif isinstance(action, Release):
            api.write(action.record, create=False)
        elif isinstance(action, StandBy):
            self.next_step_at = now + action.retry_after


def simulate(
    config: ElectionConfig,
    rates: list[float],
    offsets: list[float],
    cuts: list[list[tuple[float, float]]],
) -> tuple[list[SimulatedReplica], float]:
    """Run three replicas until well after the last cut-off heals; assert at every tick that
    at most one serves and that successive terms have increasing epochs."""
    api = SimulatedApiServer()
    replicas = [SimulatedReplica(f"pod-{i}", rates[i], offsets[i], cuts[i]) for i in range(3)]
    healed_at = max([end for cut in cuts for _, end in cut], default=0.0)
    end = healed_at + 4 * config.lease_duration
    serving_epochs: list[int] = []
    tick = 0
    while (real_time := tick * 0.05) < end:
        tick += 1
        for replica in replicas:
            replica.act(real_time, api, config)
        serving = [r for r in replicas if r.serving(real_time, config)]
        assert len(serving) <= 1, f"two actives at t={real_time:.2f}"
        if serving:
            epoch = serving[0].role.epoch  # type: ignore[union-attr]
            if not serving_epochs or serving_epochs[-1] != epoch:
                assert not serving_epochs or epoch >= serving_epochs[-1]
                serving_epochs.append(epoch)
    return replicas, end


FAST = ElectionConfig(lease_duration=3, renew_deadline=1.5, retry_period=0.5)


def test_simulated_failover_when_the_active_is_cut_off() -> None:
    replicas, end = simulate(FAST, [1.0] * 3, [0.0] * 3, [[(5.0, 20.0)], [], []])
    assert replicas[0].terms == [1]
    assert replicas[1].terms == [2]  # took over once the lease expired on its clock
    assert replicas[1].serving(end, FAST)


def test_the_simulation_catches_a_config_without_margin() -> None:
    """The same simulation with renewDeadline almost equal to leaseDuration (which the
    validator refuses) and drifting clocks finds two actives: the margin is what fences."""
    unsafe = object.__new__(ElectionConfig)  # bypasses the validator on purpose
    for name, value in (("lease_duration", 3), ("renew_deadline", 2.99), ("retry_period", 0.5)):
        object.__setattr__(unsafe, name, value)
    with pytest.raises(AssertionError, match="two actives"):
        simulate(unsafe, [0.98, 1.02, 1.02], [0.0] * 3, [[(5.0, 20.0)], [], []])


cut_offs = st.lists(
    st.tuples(st.floats(0, 40), st.floats(0.5, 15)).map(lambda p: (p[0], p[0] + p[1])),
    max_size=3,
)


@settings(max_examples=200, deadline=None)
@given(
    rates=st.lists(st.floats(0.98, 1.02), min_size=3, max_size=3),
    offsets=st.lists(st.floats(0, 1000), min_size=3, max_size=3),
    cuts=st.lists(cut_offs, min_size=3, max_size=3),
)
def test_simulated_replicas_never_serve_at_once_and_recover(
    rates: list[float], offsets: list[float], cuts: list[list[tuple[float, float]]]
) -> None:
    """Three replicas with clocks of different offsets and rates (±2%), each cut off from the
    API server for random intervals: at no instant do two of them serve, epochs of successive
    terms increase, and once the network heals one of them serves again."""
    replicas, end = simulate(FAST, rates, offsets, cuts)
    assert any(r.serving(end, FAST) for r in replicas), "nobody serves after healing"
