"""Seeded random chaos against a Fenced id_server, judged by every Fenced checker.

A schedule of random faults (SIGKILL, SIGSTOP, cut from the API server, partition from the
standbys, isolation, a partition between two pods, and control-plane outages: every pod cut
from the API server, with the operator running or paused, and half of the time one more fault
during the outage), each held for a random time, then healed,
runs under concurrent clients for `GENCLUSTER_CHAOS_SECONDS` (default 60). At the end every
fault is healed, the cluster must converge, and the history must pass
`checkers.all_fenced_checks`.

The seed is printed at the start (and in the failure message); replay a failure with

    GENCLUSTER_CHAOS_SEED=<seed> GENCLUSTER_CHAOS_SECONDS=<seconds> \\
        .venv/bin/pytest -s tests/partitions/test_chaos.py

The same seed gives the same schedule (kinds, targets by role, hold times); the cluster's own
timing still varies, so a replay reproduces the scenario, not every interleaving.

The hold times are the schedule's input (how long a fault lasts), not a synchronisation: what
the test relies on (progress after each heal, convergence at the end) is waited for as a
condition with a deadline.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from gencluster_testing.devcluster_process import DevClusterProcess
from gencluster_testing.operator_process import OperatorProcess, namespace_for
from gencluster_testing.partitions.checkers import all_fenced_checks, unavailability
from gencluster_testing.partitions.cluster import IdServerUnderTest
from gencluster_testing.partitions.history import LoadRecorder

DEFAULT_SECONDS = 60.0
PROGRESS_DEADLINE = 40.0
CONVERGE_DEADLINE = 90.0
KINDS = ("kill", "pause", "cut-apiserver", "partition-from-standbys", "isolate",
         "partition-pair", "control-plane-outage", "control-plane-outage-without-operator")
OUTAGES = ("control-plane-outage", "control-plane-outage-without-operator")
DURING_OUTAGE = ("kill", "pause", "partition-pair")
"""Faults that may join a control-plane outage (failsafe must then fall back safely)."""



def chaos_seconds() -> float:
    return float(os.environ.get("GENCLUSTER_CHAOS_SECONDS", DEFAULT_SECONDS))


pytestmark = [pytest.mark.fault, pytest.mark.timeout(chaos_seconds() + 240)]


def chaos_seed() -> int:
    value = os.environ.get("GENCLUSTER_CHAOS_SEED")
    return int(value) if value else random.SystemRandom().randrange(2**32)


@dataclass(frozen=True)
class Step:
    kind: str
    target_active: bool  # the active at injection time, else a random standby
    hold: float  # seconds the fault lasts before it is healed
    also: str | None = None  # a control-plane outage's second fault (on the target)

    def __str__(self) -> str:
        also = f" + {self.also}" if self.also else ""
        return (f"{self.kind}{also}({'active' if self.target_active else 'standby'}, "
                f"{self.hold:.1f}s)")


def schedule(rng: random.Random) -> Iterator[Step]:
    """An endless random schedule; the test takes steps until its time is up. Control-plane
    outages last longer (failsafe has to carry the cluster through several renew deadlines)."""
    while True:
        kind = rng.choice(KINDS)
        target_active = rng.random() < 0.75
        if kind in OUTAGES:
            also = rng.choice(DURING_OUTAGE) if rng.random() < 0.5 else None
            yield Step(kind, target_active, round(rng.uniform(4.0, 15.0), 1), also)
        else:
            yield Step(kind, target_active, round(rng.uniform(0.5, 7.0), 1))


@pytest.fixture
def ids(
    dev_cluster: DevClusterProcess, operator: OperatorProcess, healed: None,
    request: pytest.FixtureRequest,
) -> Iterator[IdServerUnderTest]:
    namespace = namespace_for(request.node.name)
    server = IdServerUnderTest.create(dev_cluster, namespace, deadline=90)
    yield server
    operator.process.send_signal(signal.SIGCONT)  # in case the test stopped with it paused
    server.heal()
    dev_cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def pick_targets(
    server: IdServerUnderTest, step: Step, rng: random.Random
) -> tuple[str, list[str]]:
    """(the pod the fault hits, the other pods), by role as the pods report it now."""
    pods = sorted(server.pods())
    active = server.active()
    active_pod = active["identity"] if active and active["identity"] in pods else None
    if step.target_active and active_pod:
        target = active_pod
    else:
        candidates = [p for p in pods if p != active_pod] or pods
        target = rng.choice(candidates)
    return target, [p for p in pods if p != target]


def inject(server: IdServerUnderTest, step: Step, target: str, others: list[str],
           rng: random.Random, operator: OperatorProcess) -> None:
    if step.kind in OUTAGES:
        if step.kind == "control-plane-outage-without-operator":
            operator.process.send_signal(signal.SIGSTOP)
        for pod in sorted([target, *others]):
            server.fault("cut-apiserver", pod)
        if step.also is not None:
            inject(server, Step(step.also, step.target_active, step.hold), target, others, rng,
                   operator)
    elif step.kind in ("kill", "pause", "cut-apiserver", "isolate"):
        server.fault(step.kind, target)
    elif step.kind == "partition-from-standbys":
        for other in others:
            server.fault("partition", target, other)
    elif step.kind == "partition-pair":
        server.fault("partition", target, rng.choice(others))


def test_random_faults_keep_every_fenced_promise(
    ids: IdServerUnderTest, operator: OperatorProcess, tmp_path: Path
) -> None:
    seed, seconds = chaos_seed(), chaos_seconds()
    print(f"\nGENCLUSTER_CHAOS_SEED={seed} GENCLUSTER_CHAOS_SECONDS={seconds:g}", flush=True)
    rng = random.Random(seed)
    ids.wait_converged(CONVERGE_DEADLINE)
    done: list[str] = []
    with LoadRecorder(ids.addresses, clients=4, call_timeout=5.0) as load:
        load.wait_for_ok_calls(10, PROGRESS_DEADLINE)
        ends = time.monotonic() + seconds
        for step in schedule(rng):
            if time.monotonic() >= ends:
                break
            target, others = pick_targets(ids, step, rng)
            load.mark(f"fault {step} on {target}")
            inject(ids, step, target, others, rng, operator)
            # The fault's duration is an input of the seeded schedule, not a wait for a
            # condition: what must happen afterwards is waited for with deadlines below.
            time.sleep(step.hold)
            load.mark(f"heal {step}")
            operator.process.send_signal(signal.SIGCONT)
            ids.heal()
            done.append(f"{step} on {target}")
            try:
                load.wait_for_ok_calls(5, PROGRESS_DEADLINE)
            except AssertionError as error:
                raise AssertionError(
                    f"seed {seed}: no progress after healing {step} (steps: {done})\n{error}\n"
                    f"{ids.diagnostics()}") from None
        load.mark("end")
    history = load.stop()
    print(f"steps: {done}\n{history.summary()}")
    try:
        ids.wait_converged(CONVERGE_DEADLINE)
    except AssertionError as error:
        path = history.to_jsonl(tmp_path / "history.jsonl")
        raise AssertionError(f"seed {seed}: {error}\nhistory: {path}\nsteps: {done}\n"
                             f"{ids.diagnostics()}") from None
    final = ids.read_counter()
    violations = all_fenced_checks(history, final)
    if violations:
        path = history.to_jsonl(tmp_path / "history.jsonl")
        pytest.fail(f"seed {seed} ({seconds:g}s): {len(violations)} violations; steps {done}; "
                    f"history in {path}:\n" + "\n".join(violations[:30]))
    first_fault = next(m.label for m in history.markers if m.label.startswith("fault"))
    outages = [step for step in done if step.startswith("control-plane-outage")]
    print(f"final {final}; longest outage {unavailability(history, first_fault, 'end'):.2f}s; "
          f"{len(done)} faults, {len(outages)} control-plane outages")
