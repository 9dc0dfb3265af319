"""Property-based fuzzing of the Client, Peer and Admin gRPC services of three real replicas
(issue #12 part 8, runtime side).

Hypothesis generates malformed and adversarial input: request ids of every length and script,
the operator's reserved prefix, ids reused with other requests, random bytes and random JSON
as payloads, unknown codecs, absurd first-attempt times, topics and event numbers, Replicate
streams that do not start with a Hello or claim impossible positions, snapshot and merge
streams cut, reordered or lying about their sizes, pauses of infinite length, calls without
the peer token. Every input goes over a real socket to the real services of a real cluster
(three `gencluster run` pods on the local control plane).

What must hold, for every input:

- no crash: no UNKNOWN or INTERNAL status (an exception escaped a servicer), every replica
  answers Status afterwards, no container restarted;
- a refused input (any non-OK status) changes nothing: every replica's role, epoch and
  applied sequence and the active's state are what they were before it;
- at the end the replicas converge to the same position and state.

The module prints its figures (inputs tried, accepted, errors returned by status, handler
errors in-band, crashes, state changes by refused input). The default run is short; a longer
one, and a replay, like the chaos test:

    GENCLUSTER_FUZZ_EXAMPLES=<inputs per service> GENCLUSTER_FUZZ_SEED=<seed> \\
        .venv/bin/pytest -s -p no:randomly tests/runtime/test_fuzz_services.py
"""

from __future__ import annotations

import json
import os
import random
import secrets
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from gencluster.limits import RESERVED_REQUEST_ID_PREFIX
from gencluster.proto import gencluster_pb2 as pb
from gencluster.proto import gencluster_pb2_grpc as pb_grpc
from gencluster.services import NEXT_EVENT_METADATA
from gencluster.wellknown import PEER_TOKEN_METADATA
from gencluster_testing.devcluster_process import DevClusterProcess
from gencluster_testing.waiting import wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from tests.runtime.hostile_servers import BLOB_SPEC
from tests.runtime.test_cluster_idserver import IdCluster, restart_count

pytestmark = pytest.mark.integration

DEFAULT_EXAMPLES = 100
SERVER = "tests.runtime.hostile_servers:BlobServer"
MIB = 1024 * 1024
RPC_TIMEOUT = 20.0
"""A deadline for one fuzz input, long enough for a loaded machine: an input that runs into it
is reported as a hang (a crash), not waited for forever."""
CRASH_CODES = frozenset({grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL,
                         grpc.StatusCode.DEADLINE_EXCEEDED})


def fuzz_examples() -> int:
    return int(os.environ.get("GENCLUSTER_FUZZ_EXAMPLES", DEFAULT_EXAMPLES))


def fuzz_seed() -> int:
    value = os.environ.get("GENCLUSTER_FUZZ_SEED")
    return int(value) if value else random.SystemRandom().randrange(2**32)


SEED = fuzz_seed()
FUZZ = settings(
    max_examples=fuzz_examples(),
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


# -- the figures --------------------------------------------------------------------------------


@dataclass
class Tally:
    """What a run did, per service and overall."""

    tried: Counter[str] = field(default_factory=Counter)
    accepted: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    """By status code name."""
    handler_errors: int = 0
    crashes: list[str] = field(default_factory=list)
    changes_by_refused: list[str] = field(default_factory=list)

    def report(self) -> str:
        lines = [
            f"fuzz (seed {SEED}, {fuzz_examples()} examples per service): "
            f"{sum(self.tried.values())} inputs tried "
            f"({', '.join(f'{k} {v}' for k, v in sorted(self.tried.items()))}); "
            f"{sum(self.accepted.values())} accepted, "
            f"{sum(self.refused.values())} errors returned "
            f"({', '.join(f'{k} {v}' for k, v in sorted(self.refused.items()))}), "
            f"{self.handler_errors} handler errors in-band; "
            f"crashes {len(self.crashes)}; state changes by refused input "
            f"{len(self.changes_by_refused)}",
        ]
        lines += [f"  crash: {crash}" for crash in self.crashes[:10]]
        lines += [f"  change: {change}" for change in self.changes_by_refused[:10]]
        return "\n".join(lines)


# -- the cluster under test -------------------------------------------------------------------


class Target:
    """The cluster, with one channel per replica kept open, and what 'nothing changed' means:
    every replica's role, epoch and applied sequence, and the active's state."""

    def __init__(self, cluster: IdCluster) -> None:
        self.cluster = cluster
        self.token = ((PEER_TOKEN_METADATA, cluster.token),)
        self.pods = [cluster.pod_name(i) for i in range(cluster.replicas)]
        self.addresses = {pod: cluster.address(pod) for pod in self.pods}
        self.channels = {pod: grpc.insecure_channel(address, options=[
            ("grpc.max_receive_message_length", 64 * MIB),
            ("grpc.max_send_message_length", 64 * MIB),
        ]) for pod, address in self.addresses.items()}
        self.active = cluster.ready_cluster()
        self.restarts = {pod: restart_count(cluster, pod) for pod in self.pods}

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()

    @property
    def channel(self) -> grpc.Channel:
        return self.channels[self.active]

    def fingerprint(self) -> tuple[Any, ...] | str:
        """The observable state, or why it could not be read (a crash)."""
        replicas = []
        for pod in self.pods:
            try:
                status = pb_grpc.AdminStub(self.channels[pod]).Status(
                    pb.StatusRequest(), metadata=self.token, timeout=RPC_TIMEOUT
                )
            except grpc.RpcError as error:
                return f"{pod} did not answer Status: {error.code().name} {error.details()}"
            replicas.append((pod, status.role, status.epoch))
            if pod == self.active:
                active_seq = status.applied_seq
        try:
            state = pb_grpc.AdminStub(self.channel).GetState(
                pb.GetStateRequest(), metadata=self.token, timeout=RPC_TIMEOUT
            ).state
        except grpc.RpcError as error:
            return f"the active did not answer GetState: {error.code().name}"
        return (tuple(replicas), active_seq, state)


@pytest.fixture(scope="module")
def target(dev_cluster: DevClusterProcess) -> Iterator[Target]:
    cluster = IdCluster(dev_cluster, "fuzz", secrets.token_urlsafe(32), 3, server=SERVER,
                      extra_spec=BLOB_SPEC)
    cluster.create()
    cluster.ready_cluster()
    subject = Target(cluster)
    yield subject
    subject.close()


@pytest.fixture(scope="module")
def tally() -> Tally:
    """The figures of the module's run (printed by its last test)."""
    return Tally()


Outcome = tuple[str, bool]
"""What one input got: ("OK" or a status code name, whether a handler error came in-band)."""


def judge(target: Target, tally: Tally, service: str, send: Callable[[], Outcome],
          describe: str) -> None:
    """Send one input and hold it to the rules (see the module's docstring)."""
    before = target.fingerprint()
    assert not isinstance(before, str), before
    tally.tried[service] += 1
    try:
        code, handler_error = send()
    except grpc.RpcError as error:
        status = error.code() if isinstance(error, grpc.Call) else None
        code, handler_error = (status.name if status is not None else "NO_STATUS"), False
        if status in CRASH_CODES:
            tally.crashes.append(f"{service} {describe[:300]}: {code} {error.details()[:300]}")
    after = target.fingerprint()
    if isinstance(after, str):
        tally.crashes.append(f"{service} {describe[:300]}: {after}")
        return
    if code == "OK":
        tally.accepted[service] += 1
        tally.handler_errors += handler_error
    else:
        tally.refused[code] += 1
        if after != before:
            tally.changes_by_refused.append(f"{service} {describe[:300]} ({code})")


# -- strategies ----------------------------------------------------------------------------------

REUSED_IDS = ("fuzz-shared-1", "fuzz-shared-2")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)
known_requests = st.one_of(
    st.tuples(st.just("blob"), st.integers(-5, 3000)).map(list),
    st.tuples(st.just("raise"), st.integers(-5, 200_000)).map(list),
    st.tuples(st.just("publish"), st.text(max_size=8), st.integers(-1, 5),
              st.integers(0, 100)).map(list),
    st.just(["calls"]),
    st.just(["bump"]),
)
payloads = st.one_of(
    st.binary(max_size=600),
    json_values.map(lambda value: json.dumps(value).encode()),
    known_requests.map(lambda value: json.dumps(value).encode()),
    st.sampled_from([b"", b"\xff\xfe", b"[" * 5000, b'"' + b"a" * (4 * MIB) + b'"',
                     b"1e999999", b"-" * 10]),
)
request_ids = st.one_of(
    st.just(""),
    st.text(max_size=300),
    st.sampled_from(REUSED_IDS),
    st.text(max_size=40).map(lambda tail: RESERVED_REQUEST_ID_PREFIX + tail),
    st.sampled_from(["a" * 256, "a" * 257, "€" * 85, "€" * 86, "x" * MIB]),
)
codecs = st.one_of(st.just(""), st.just("json"), st.sampled_from(["msgpack", "pickle", "JSON"]),
                   st.text(max_size=20))
tokens = st.sampled_from([True, True, True, False])
"""Whether a Peer or Admin input carries the peer token (mostly: refusals by the gate alone
would test little else)."""
first_attempts = st.one_of(st.just(0), st.integers(0, 2**64 - 1))
u64 = st.one_of(st.integers(0, 5), st.integers(0, 2**64 - 1))
identities = st.one_of(
    st.text(max_size=40).map(lambda tail: "fuzz-" + tail),
    st.just("p" * 300),
)
addresses = st.one_of(st.text(max_size=60), st.just("a" * 2000))


# -- Client ------------------------------------------------------------------------------------


client_inputs = st.one_of(
    st.builds(lambda rid, payload, codec, first, fresh: ("Call", pb.CallRequest(
        request_id=rid, payload=payload, codec=codec, first_attempt_unix_ms=first,
        first_send=fresh)),
        request_ids, payloads, codecs, first_attempts, st.booleans()),
    st.builds(lambda rid, payload, codec, first, fresh: ("Cast", pb.CastRequest(
        request_id=rid, payload=payload, codec=codec, first_attempt_unix_ms=first,
        first_send=fresh)),
        request_ids, payloads, codecs, first_attempts, st.booleans()),
    st.builds(lambda topic, start, gap: ("Subscribe", pb.SubscribeRequest(
        topic=topic, from_event=start, accept_gap=gap) if start is not None
        else pb.SubscribeRequest(topic=topic, accept_gap=gap)),
        st.one_of(st.text(max_size=30), st.just("t" * 1000)), st.none() | u64, st.booleans()),
)


def subscribe(channel: grpc.Channel, request: pb.SubscribeRequest, metadata: Any) -> Outcome:
    """Open a subscription: accepted once the server sent its initial metadata (then
    cancelled: a live stream on a quiet topic never ends by itself)."""
    call = pb_grpc.ClientStub(channel).Subscribe(request, timeout=RPC_TIMEOUT, metadata=metadata)
    accepted = threading.Event()

    def watch() -> None:
        if any(key == NEXT_EVENT_METADATA for key, _ in call.initial_metadata() or ()):
            accepted.set()
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    watcher.join(RPC_TIMEOUT)
    if accepted.is_set():
        call.cancel()
        return "OK", False
    code = call.code()
    if code is None or code is grpc.StatusCode.OK:
        return "OK", False
    raise call  # type: ignore[misc]


@FUZZ
@hypothesis_seed(SEED)
@given(case=client_inputs)
def test_fuzz_the_client_service(target: Target, tally: Tally, case: tuple[str, Any]) -> None:
    method, request = case
    stub = pb_grpc.ClientStub(target.channel)

    def send() -> Outcome:
        if method == "Subscribe":
            return subscribe(target.channel, request, ())
        reply = getattr(stub, method)(request, timeout=RPC_TIMEOUT)
        return "OK", reply.HasField("error")

    judge(target, tally, "Client", send, f"{method} {str(request)[:300]}")


# -- Peer --------------------------------------------------------------------------------------


hellos = st.builds(lambda identity, address, epoch, seq, applied_epoch: pb.ReplicateUp(
    hello=pb.Hello(identity=identity, address=address, epoch=epoch, applied_seq=seq,
                   applied_epoch=applied_epoch)),
    identities, addresses, u64, u64, u64)
acks = st.builds(lambda epoch, seq: pb.ReplicateUp(ack=pb.Ack(epoch=epoch, applied_seq=seq)),
                 u64, u64)
peer_inputs = st.one_of(
    st.builds(lambda identity, epoch, token: ("Snapshot", pb.SnapshotRequest(
        identity=identity, epoch=epoch), token), identities, u64, tokens),
    st.builds(lambda messages, token: ("Replicate", messages, token),
              st.lists(st.one_of(hellos, acks, st.just(pb.ReplicateUp())), max_size=4),
              tokens),
)


@FUZZ
@hypothesis_seed(SEED)
@given(case=peer_inputs)
def test_fuzz_the_peer_service(target: Target, tally: Tally, case: tuple[str, Any, bool]) -> None:
    method, request, with_token = case
    stub = pb_grpc.PeerStub(target.channel)
    metadata = target.token if with_token else ()

    def send() -> Outcome:
        if method == "Snapshot":
            chunks = list(stub.Snapshot(request, metadata=metadata, timeout=RPC_TIMEOUT))
            assert chunks and chunks[0].WhichOneof("part") == "header"
            return "OK", False
        call = stub.Replicate(iter(request), metadata=metadata, timeout=RPC_TIMEOUT)
        first = next(call, None)  # a stream accepted as a standby's: its first batch
        call.cancel()
        if first is not None:
            return "OK", False
        code = call.code()
        if code is None or code in (grpc.StatusCode.OK, grpc.StatusCode.CANCELLED):
            return "OK", False
        raise call  # type: ignore[misc]

    judge(target, tally, "Peer", send, f"{method} {str(request)[:300]} token={with_token}")


# -- Admin ------------------------------------------------------------------------------------


def snapshot_chunks() -> st.SearchStrategy[list[pb.SnapshotChunk]]:
    header = st.builds(lambda seq, version, codec, size, after: pb.SnapshotChunk(
        epoch=1, header=pb.SnapshotHeader(applied_seq=seq, server_version=version, codec=codec,
                                          state_size=size, replies_complete_after=after)),
        u64, st.integers(0, 2**32 - 1), codecs, st.integers(0, 64), st.floats())
    replies = st.builds(lambda rid, payload, digest: pb.SnapshotChunk(
        epoch=1, replies=pb.ReplyBatch(records=[pb.ReplyRecord(
            request_id=rid, seq=1, reply=payload, digest=digest)])),
        request_ids, st.binary(max_size=64), st.binary(max_size=40))
    state = st.builds(lambda data: pb.SnapshotChunk(epoch=1, state=data),
                      st.one_of(st.binary(max_size=64),
                                json_values.map(lambda v: json.dumps(v).encode())))
    other = st.builds(lambda epoch: pb.SnapshotChunk(epoch=epoch), u64)
    return st.lists(st.one_of(header, replies, state, other), max_size=5)


merge_origins = st.builds(lambda rid, source: pb.MergeOrigin(request_id=rid, source=source),
                          request_ids, st.one_of(st.text(max_size=30), st.just("s" * 5000)))
admin_inputs = st.one_of(
    st.builds(lambda target, token: ("Switchover", pb.SwitchoverRequest(target=target), token),
              identities, tokens),
    st.builds(lambda address, reason: ("Demote", pb.DemoteRequest(
        follow_address=address, reason=reason), True),
        st.just("a" * 2000), st.text(max_size=10))
    | st.builds(lambda reason: ("Demote", pb.DemoteRequest(reason=reason), True),
                st.just("r" * 5000)),
    st.builds(lambda seconds: ("PauseWrites", pb.PauseWritesRequest(seconds=seconds), True),
              st.one_of(st.sampled_from([float("inf"), float("-inf"), float("nan")]),
                        st.floats(min_value=3600.5, allow_infinity=False))),
    st.builds(lambda origin, chunks, token: ("Merge", origin, chunks, token),
              st.none() | merge_origins, snapshot_chunks(), tokens),
    st.builds(lambda rid, chunks: ("Restore", pb.RestoreOrigin(request_id=rid, force=False),
                                   chunks, True), request_ids, snapshot_chunks()),
    st.builds(lambda token: ("Status", pb.StatusRequest(), token), tokens),
    st.builds(lambda token: ("GetState", pb.GetStateRequest(), token), tokens),
    st.builds(lambda token: ("ExportState", pb.ExportStateRequest(), token), tokens),
)


@FUZZ
@hypothesis_seed(SEED)
@given(case=admin_inputs)
def test_fuzz_the_admin_service(target: Target, tally: Tally, case: tuple[Any, ...]) -> None:
    method = case[0]
    stub = pb_grpc.AdminStub(target.channel)
    metadata = target.token if case[-1] else ()

    def send() -> Outcome:
        if method in ("Merge", "Restore"):
            origin, chunks = case[1], case[2]
            wrap = pb.MergeChunk if method == "Merge" else pb.RestoreChunk
            stream = ([wrap(origin=origin)] if origin is not None else []) + [
                wrap(snapshot=chunk) for chunk in chunks
            ]
            reply = getattr(stub, method)(iter(stream), metadata=metadata, timeout=RPC_TIMEOUT)
            return "OK", method == "Merge" and reply.HasField("error")
        if method == "ExportState":
            list(stub.ExportState(case[1], metadata=metadata, timeout=RPC_TIMEOUT))
            return "OK", False
        getattr(stub, method)(case[1], metadata=metadata, timeout=RPC_TIMEOUT)
        return "OK", False

    judge(target, tally, "Admin", send, f"{method} {str(case[1:])[:300]}")


# -- after the run ----------------------------------------------------------------------------


def test_no_crash_no_change_by_refused_input_and_the_replicas_converge(
    target: Target, tally: Tally, capsys: pytest.CaptureFixture[str]
) -> None:
    """Runs last in the module (pytest keeps the file's order; run with -p no:randomly)."""
    with capsys.disabled():
        print(f"\n{tally.report()}")
    cluster = target.cluster
    assert cluster.ready_cluster() == target.active, "the fuzzing caused a failover"
    for pod in target.pods:
        assert restart_count(cluster, pod) == target.restarts[pod], f"{pod} restarted"

    def converged() -> bool:
        seqs = set()
        for pod in target.pods:
            status = cluster.status(pod)
            if status is None:
                return False
            seqs.add(status.applied_seq)
        return len(seqs) == 1
    wait_for(converged, 30, 0.1, "every replica at the same position")
    states = {
        pb_grpc.AdminStub(target.channels[pod]).GetState(
            pb.GetStateRequest(), metadata=target.token, timeout=RPC_TIMEOUT
        ).state
        for pod in target.pods
    }
    assert len(states) == 1, states
    assert all(tally.tried[service] for service in ("Client", "Peer", "Admin")), tally.tried
    assert not tally.crashes, tally.report()
    assert not tally.changes_by_refused, tally.report()
