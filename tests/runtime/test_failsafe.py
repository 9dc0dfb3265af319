"""Failsafe serving: the promise rules, and a simulation of an active and two standbys with
drifting clocks, each link (pod to API server, pod to pod) cut at random, message delays and
standby restarts, in which two pods never serve at once and an active that reaches every pod
that could take over keeps serving through a control-plane outage."""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from gencluster import failsafe
from gencluster.election import (
    Acquire,
    ElectionConfig,
    Leadership,
    Observation,
    Release,
    Renew,
    StandBy,
    StepDown,
    candidacy,
    decide,
    observe,
)
from gencluster.failsafe import Granted, Promises, Refused
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
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.runtime.test_election import SimulatedApiServer

pytestmark = pytest.mark.unit

CONFIG = ElectionConfig(lease_duration=10, renew_deadline=6.0, retry_period=2.0)
FAST = ElectionConfig(lease_duration=3, renew_deadline=1.5, retry_period=0.5)


# --- the rules -----------------------------------------------------------------------------


def test_a_promise_counts_from_the_request_minus_the_margin() -> None:
    until = failsafe.counted_until(100.0, 6.0)
    assert until == pytest.approx(100.0 + 6.0 * (1 - failsafe.PROMISE_MARGIN))
    assert until < 100.0 + failsafe.promise_duration(CONFIG)


def test_promises_are_asked_for_only_once_a_renewal_is_overdue() -> None:
    leadership = Leadership(3, renewed_at=100.0)
    assert not failsafe.wants_promises(leadership, 101.9, CONFIG)
    assert failsafe.wants_promises(leadership, 102.0, CONFIG)
    assert not failsafe.wants_promises(None, 500.0, CONFIG)


def test_failsafe_needs_every_pod_that_could_take_over() -> None:
    promises = Promises().granted("b", 100.0, 6.0).granted("c", 101.0, 6.0)
    assert promises.failsafe_until(frozenset({"b", "c"})) == failsafe.counted_until(100.0, 6.0)
    assert promises.failsafe_until(frozenset({"b", "c", "d"})) == -math.inf
    assert promises.failsafe_until(frozenset()) is None


def test_a_late_answer_never_shortens_a_newer_promise() -> None:
    promises = Promises().granted("b", 105.0, 6.0).granted("b", 100.0, 6.0)
    assert promises.until["b"] == failsafe.counted_until(105.0, 6.0)


def test_the_active_itself_is_not_a_pod_that_could_take_over() -> None:
    assert failsafe.may_take_over(("a", "b"), "a") == frozenset({"b"})
    assert failsafe.may_take_over((), "a") == frozenset()


def test_serving_is_the_renew_deadline_or_the_promises() -> None:
    leadership = Leadership(3, renewed_at=100.0)
    assert failsafe.may_serve(leadership, 105.9, CONFIG, None)
    assert not failsafe.may_serve(leadership, 106.0, CONFIG, None)
    assert failsafe.may_serve(leadership, 106.0, CONFIG, 110.0)
    assert failsafe.in_failsafe(leadership, 106.0, CONFIG, 110.0)
    assert not failsafe.in_failsafe(leadership, 105.0, CONFIG, 110.0)
    assert not failsafe.may_serve(leadership, 110.0, CONFIG, 110.0)
    assert not failsafe.may_serve(None, 100.0, CONFIG, 110.0)
    assert failsafe.serving_deadline(leadership, CONFIG, 110.0) == 110.0
    assert failsafe.serving_deadline(leadership, CONFIG, 103.0) == 106.0
    assert failsafe.serving_deadline(leadership, CONFIG, None) == 106.0


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"request_epoch": 3, "highest_epoch": 4}, "below the highest seen"),
        ({"following": False}, "not a standby"),
        ({"taking_over": True}, "taking the Lease"),
    ],
)
def test_a_standby_refuses_a_promise(kwargs: dict[str, object], reason: str) -> None:
    arguments: dict[str, object] = {
        "request_epoch": 4, "highest_epoch": 4, "following": True, "taking_over": False,
        "promised_until": 0.0, "now": 100.0, "config": CONFIG,
    }
    outcome = failsafe.grant(**{**arguments, **kwargs})  # type: ignore[arg-type]
    assert isinstance(outcome, Refused)
    assert reason in outcome.reason


def test_a_grant_extends_and_never_shortens_the_promise() -> None:
    granted = failsafe.grant(
        request_epoch=5, highest_epoch=4, following=True, taking_over=False,
        promised_until=0.0, now=100.0, config=CONFIG,
    )
    assert granted == Granted(106.0)
    again = failsafe.grant(
        request_epoch=5, highest_epoch=5, following=True, taking_over=False,
        promised_until=200.0, now=100.0, config=CONFIG,
    )
    assert again == Granted(200.0)
    assert failsafe.blocks_taking(105.9, 105.0)
    assert not failsafe.blocks_taking(105.9, 105.9)


# --- simulation ----------------------------------------------------------------------------

Cuts = list[tuple[float, float]]


def _up(cuts: Cuts, real_time: float) -> bool:
    return not any(start <= real_time < end for start, end in cuts)


@dataclass
class Network:
    """Which links are up: each pod to the API server, and each pair of pods."""

    api: dict[str, Cuts]
    pairs: dict[frozenset[str], Cuts]

    def reaches_api(self, pod: str, real_time: float) -> bool:
        return _up(self.api.get(pod, []), real_time)

    def link(self, a: str, b: str, real_time: float) -> bool:
        return _up(self.pairs.get(frozenset({a, b}), []), real_time)


@dataclass
class SimulatedPod:
    """One replica as the runtime's shell runs it, with failsafe: `election.decide` and the
    promise rules; `roles.transition` (Fenced) for its role."""

    name: str
    clock_rate: float
    clock_offset: float
    keeps_promises: bool = True
    observation: Observation | None = None
    role: Role = field(default_factory=Standby)
    next_step_at: float = -math.inf
    next_ask_at: float = -math.inf
    epoch_seen: int = 0
    promised_until: float = -math.inf
    promises: Promises = field(default_factory=Promises)
    published: tuple[str, ...] = ()
    terms: list[int] = field(default_factory=list)

    @property
    def leadership(self) -> Leadership | None:
        return self.role.leadership if isinstance(self.role, Active) else None

    def clock(self, real_time: float) -> float:
        return self.clock_offset + self.clock_rate * real_time

    def failsafe_until(self) -> float | None:
        return self.promises.failsafe_until(failsafe.may_take_over(self.published, self.name))

    def serving(self, real_time: float, config: ElectionConfig) -> bool:
        return isinstance(self.role, Active) and failsafe.may_serve(
            self.leadership, self.clock(real_time), config, self.failsafe_until()
        )

    def in_failsafe(self, real_time: float, config: ElectionConfig) -> bool:
        return isinstance(self.role, Active) and failsafe.in_failsafe(
            self.leadership, self.clock(real_time), config, self.failsafe_until()
        )

    def become(self, event: LeaseWon | Renewed | LeaseLost) -> None:
        self.role = transition(self.role, event, policy=PartitionPolicy.FENCED)
        if not isinstance(self.role, Active):
            self.promises = Promises()

    def restart(self) -> None:
        """A crash and restart: everything in memory, promises given included, is gone."""
        assert not isinstance(self.role, Active)
        self.observation = None
        self.promised_until = -math.inf
        self.next_step_at = -math.inf


class Simulation:
    """An active and two standbys; promise requests and answers travel with delays over the
    links; at every tick at most one pod may serve."""

    def __init__(
        self,
        config: ElectionConfig,
        pods: list[SimulatedPod],
        network: Network,
        *,
        delays: Callable[[], float],
        restarts: list[tuple[float, str]] = (),  # type: ignore[assignment]
    ) -> None:
        self.config = config
        self.pods = {pod.name: pod for pod in pods}
        self.network = network
        self.api = SimulatedApiServer()
        self.delays = delays
        self.restarts = sorted(restarts)
        self.queue: list[tuple[float, int, Callable[[float], None]]] = []
        self.order = itertools.count()
        self.serving_epochs: list[int] = []
        self.serving_log: list[tuple[float, str]] = []
        self.failsafe_ticks = 0

    def at(self, real_time: float, action: Callable[[float], None]) -> None:
        heapq.heappush(self.queue, (real_time, next(self.order), action))

    def run(self, until: float, tick: float = 0.02) -> None:
        real_time = 0.0
        while real_time < until:
            while self.queue and self.queue[0][0] <= real_time:
                _, _, action = heapq.heappop(self.queue)
                action(real_time)
            while self.restarts and self.restarts[0][0] <= real_time:
                _, name = self.restarts.pop(0)
                if not isinstance(self.pods[name].role, Active):
                    self.pods[name].restart()
            for pod in self.pods.values():
                self.act(pod, real_time)
            self.check(real_time)
            real_time += tick

    def check(self, real_time: float) -> None:
        serving = [p for p in self.pods.values() if p.serving(real_time, self.config)]
        assert len(serving) <= 1, f"two actives at t={real_time:.2f}: {[p.name for p in serving]}"
        if serving:
            pod = serving[0]
            epoch = pod.role.epoch  # type: ignore[union-attr]
            if not self.serving_epochs or self.serving_epochs[-1] != epoch:
                assert not self.serving_epochs or epoch > self.serving_epochs[-1]
                self.serving_epochs.append(epoch)
            self.serving_log.append((real_time, pod.name))
            if pod.in_failsafe(real_time, self.config):
                self.failsafe_ticks += 1

    def act(self, pod: SimulatedPod, real_time: float) -> None:
        config = self.config
        now = pod.clock(real_time)
        if isinstance(pod.role, Active) and not pod.serving(real_time, config):
            pod.become(LeaseLost("fenced"))  # the shell's fence watchdog
        asks = isinstance(pod.role, Active) and now >= pod.next_ask_at
        if asks and failsafe.wants_promises(pod.leadership, now, config):
            pod.next_ask_at = now + config.retry_period / 4
            for member in failsafe.may_take_over(pod.published, pod.name):
                self.ask(pod, member, real_time)
        if now < pod.next_step_at:
            return
        pod.next_step_at = now + config.retry_period
        if not self.network.reaches_api(pod.name, real_time):
            return
        record = self.api.read()
        pod.observation = observe(pod.observation, record, now)
        if record is not None:
            pod.epoch_seen = max(pod.epoch_seen, record.transitions)
        others = tuple(sorted(set(self.pods) - {pod.name}))
        action = decide(
            pod.observation,
            now=now,
            wall_time=real_time,
            config=config,
            me=pod.name,
            candidate=candidacy(record, pod.name, holds_state=True),
            leadership=pod.leadership,
            in_sync=others,
            failsafe_until=pod.failsafe_until(),
        )
        if isinstance(action, Acquire):
            if pod.keeps_promises and failsafe.blocks_taking(pod.promised_until, now):
                pod.next_step_at = min(pod.next_step_at, pod.promised_until)
                return
            if self.api.write(action.record, action.create):
                pod.become(LeaseWon(Leadership(action.epoch, renewed_at=now)))
                pod.epoch_seen = max(pod.epoch_seen, action.epoch)
                pod.published = action.record.in_sync or ()
                pod.terms.append(action.epoch)
        elif isinstance(action, Renew):
            if self.api.write(action.record, create=False):
                pod.become(Renewed(now))
                pod.published = action.record.in_sync or ()
        elif isinstance(action, StepDown):
            pod.become(LeaseLost(action.reason))
        elif isinstance(action, Release):
            self.api.write(action.record, create=False)
        elif isinstance(action, StandBy):
            pod.next_step_at = now + action.retry_after

    def ask(self, active: SimulatedPod, member: str, real_time: float) -> None:
        """`Peer.Promise` from `active` to `member`: sent now, granted on arrival, answered
        after another delay; lost if the link is down at either end."""
        sent_at = active.clock(real_time)
        epoch = active.role.epoch  # type: ignore[union-attr]
        if not self.network.link(active.name, member, real_time):
            return
        arrival = real_time + self.delays()

        def arrive(now_real: float) -> None:
            standby = self.pods[member]
            if not self.network.link(active.name, member, now_real):
                return
            outcome = failsafe.grant(
                request_epoch=epoch,
                highest_epoch=standby.epoch_seen,
                following=not isinstance(standby.role, Active),
                taking_over=False,
                promised_until=standby.promised_until,
                now=standby.clock(now_real),
                config=self.config,
            )
            if isinstance(outcome, Refused):
                return
            standby.promised_until = outcome.until
            seconds = failsafe.promise_duration(self.config)
            self.at(now_real + self.delays(), lambda t: answer(t, seconds))

        def answer(now_real: float, seconds: float) -> None:
            if not self.network.link(active.name, member, now_real):
                return
            if isinstance(active.role, Active) and active.role.epoch == epoch:
                active.promises = active.promises.granted(member, sent_at, seconds)

        self.at(arrival, arrive)


def simulation(
    network: Network,
    *,
    rates: tuple[float, float, float] = (1.0, 1.0, 1.0),
    offsets: tuple[float, float, float] = (0.0, 0.0, 0.0),
    seed: int = 0,
    keeps_promises: bool = True,
    restarts: list[tuple[float, str]] = (),  # type: ignore[assignment]
    config: ElectionConfig = FAST,
    max_delay: float = 0.2,
) -> Simulation:
    draw = random.Random(seed)
    pods = [
        SimulatedPod(f"pod-{i}", rates[i], offsets[i], keeps_promises=keeps_promises)
        for i in range(3)
    ]
    return Simulation(
        config, pods, network, delays=lambda: draw.uniform(0.0, max_delay), restarts=restarts
    )


ALL_CUT = {name: [(5.0, 65.0)] for name in ("pod-0", "pod-1", "pod-2")}


def test_an_active_that_reaches_every_standby_serves_through_a_control_plane_outage() -> None:
    sim = simulation(Network(api=ALL_CUT, pairs={}))
    sim.run(80.0)
    assert sim.pods["pod-0"].terms == [1]
    assert sim.serving_epochs == [1]
    served = {round(t, 2) for t, name in sim.serving_log if name == "pod-0"}
    gaps = [t for t in (round(x * 0.02, 2) for x in range(int(1 / 0.02), int(80 / 0.02)))
            if t not in served]
    assert not gaps, f"pod-0 stopped serving at {gaps[:3]}"
    assert sim.failsafe_ticks > 0


def test_a_standby_that_still_reaches_the_api_server_keeps_its_promise() -> None:
    api = {"pod-0": [(5.0, 65.0)], "pod-2": [(5.0, 65.0)]}
    sim = simulation(Network(api=api, pairs={}))
    sim.run(80.0)
    assert sim.serving_epochs == [1]
    assert sim.pods["pod-1"].terms == []


def test_losing_a_standby_during_the_outage_stops_writes_within_the_renew_deadline() -> None:
    pairs = {frozenset({"pod-0", "pod-2"}): [(20.0, 40.0)]}
    sim = simulation(Network(api=ALL_CUT, pairs=pairs))
    sim.run(80.0)
    last = max(t for t, name in sim.serving_log if name == "pod-0" and t < 40.0)
    assert 20.0 <= last < 20.0 + FAST.renew_deadline
    # Nobody else could take the Lease while every pod was cut off from the API server:
    assert not [t for t, _ in sim.serving_log if last < t < 65.0]
    assert len(sim.serving_epochs) == 2  # after the heal, one term at a higher epoch


def test_losing_a_standby_that_reaches_the_api_server_fails_over_once() -> None:
    """pod-2 reaches the API server and loses the active: the active stops, and pod-2 takes
    the Lease only after its promise ran out."""
    api = {"pod-0": [(5.0, 65.0)], "pod-1": [(5.0, 65.0)]}
    pairs = {frozenset({"pod-0", "pod-2"}): [(20.0, 90.0)]}
    sim = simulation(Network(api=api, pairs=pairs))
    sim.run(90.0)
    assert sim.pods["pod-2"].terms == [2]
    assert sim.serving_epochs == [1, 2]


def test_the_simulation_catches_a_standby_that_breaks_its_promise() -> None:
    api = {"pod-0": [(5.0, 65.0)], "pod-2": [(5.0, 65.0)]}
    sim = simulation(Network(api=api, pairs={}), keeps_promises=False)
    with pytest.raises(AssertionError, match="two actives"):
        sim.run(80.0)


def test_the_simulation_catches_a_promise_counted_without_margin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The active's clock runs slow, the standby's fast: without the margin the active counts
    on a promise the standby no longer keeps."""
    api = {"pod-0": [(5.0, 65.0)], "pod-2": [(5.0, 65.0)]}
    pairs = {frozenset({"pod-0", "pod-1"}): [(20.0, 90.0)]}
    network = Network(api=api, pairs=pairs)
    with_margin = simulation(network, rates=(0.98, 1.02, 1.0), max_delay=0.0)
    with_margin.run(90.0)
    assert with_margin.serving_epochs == [1, 2]
    monkeypatch.setattr(failsafe, "PROMISE_MARGIN", 0.0)
    sim = simulation(network, rates=(0.98, 1.02, 1.0), max_delay=0.0)
    with pytest.raises(AssertionError, match="two actives"):
        sim.run(90.0)


links = st.lists(
    st.tuples(st.floats(0, 40), st.floats(0.5, 30)).map(lambda p: (p[0], p[0] + p[1])),
    max_size=2,
)
NAMES = ("pod-0", "pod-1", "pod-2")
PAIRS = [frozenset(pair) for pair in itertools.combinations(NAMES, 2)]


@settings(max_examples=150, deadline=None)
@given(
    rates=st.tuples(*[st.floats(0.98, 1.02)] * 3),
    offsets=st.tuples(*[st.floats(0, 1000)] * 3),
    api_cuts=st.lists(links, min_size=3, max_size=3),
    pair_cuts=st.lists(links, min_size=3, max_size=3),
    restarts=st.lists(st.tuples(st.floats(0, 60), st.sampled_from(NAMES)), max_size=2),
    seed=st.integers(0, 2**16),
)
def test_simulated_pods_never_serve_at_once(
    rates: tuple[float, float, float],
    offsets: tuple[float, float, float],
    api_cuts: list[Cuts],
    pair_cuts: list[Cuts],
    restarts: list[tuple[float, str]],
    seed: int,
) -> None:
    """Clocks of different offsets and rates (±2%), every link (pod to API server, pod to
    pod) cut at random, delayed promise messages, standbys restarted (forgetting what they
    promised): at no instant do two pods serve, epochs of successive terms increase, and
    once everything heals one pod serves."""
    network = Network(
        api=dict(zip(NAMES, api_cuts, strict=True)),
        pairs=dict(zip(PAIRS, pair_cuts, strict=True)),
    )
    sim = simulation(network, rates=rates, offsets=offsets, seed=seed, restarts=restarts)
    healed = max([end for cuts in [*api_cuts, *pair_cuts] for _, end in cuts], default=0.0)
    end = healed + 4 * FAST.lease_duration
    sim.run(end)
    assert sim.serving_log and sim.serving_log[-1][0] >= end - 0.05, "nobody serves after healing"
