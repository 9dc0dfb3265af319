"""Replication benchmark: throughput/latency against a bare gRPC server, failover outage, join
time and replication bytes per call, all measured in ONE run on one machine.

    python bench/replication.py --quick     # about 2.5 minutes on 2 cores: 5 rounds of 1.2 s
    python bench/replication.py             # 7 rounds of 4 s windows, 10 trials, 100 MB state
    python bench/replication.py --tls       # the same with TLS on every hop (bare included)
    python bench/replication.py --tls-cost  # what TLS costs bare and r3: part (a) only, paired

Why one run: these machines are shared and noisy, so absolute figures drift between runs; the
ratios to a baseline taken minutes apart in the same run are what can be compared. Nothing
here is a pass/fail test (BRIEF section 8: never timed assertions in tests).

What runs (see bench/README.md for the figures):

- a `gencluster dev up --no-operator` control plane in a temporary directory; every replica is
  a real pod running `gencluster run` on its own loopback address; the pods, Lease, Secret and
  the rest are built by the operator's own builders (`gencluster_testing/without_operator.py`, as in
  tests/runtime/test_cluster_idserver.py), but no operator runs;
- (a) `next_value` through `gencluster.AsyncClient` at 1, 8, 16 and 64 calls in flight against:
  a bare grpc.aio server in its own process implementing the same `gencluster.v1.Client/Call`
  with "the same work" (decode the CallRequest and its JSON payload, increment a counter,
  JSON-encode the reply into a CallReply; no log, no replication, no request-id table) and the
  same collector tuning as every pod (`run.tune_garbage_collector`), id_server with 1 replica,
  and id_server with 3 replicas in Sync mode with minSyncStandbys 2 (every reply waits for both
  standbys). Rounds alternate the setups (bare next to r3, taking turns going first); every
  figure is the median over rounds and every ratio the median of the per-round ratios (paired
  rounds), so a burst of other load spoils one pair, not a setup. In each window the CPU
  seconds of every process (the client, the bare server, the active, each standby; utime +
  stime from /proc/PID/stat, container process and children) are read, giving CPU
  microseconds per call per process and a CPU ratio (bare's CPU per call over the setup's,
  all processes) that other people's load moves far less than calls/s;
- (b) client-observed outage for SIGKILL (`gencluster dev fault kill`) and graceful stop (pod
  delete) of the active, with continuous callers: the longest gap between two consecutive
  successful replies around the fault. Without the operator, a SIGKILL outage is bounded by the
  lease (3 s here), not by the runtime;
- (c) join of a standby with a large state: SIGKILL a standby (it restarts without state) and
  time until it reports ROLE_STANDBY at the active's applied sequence;
- (d) replication bytes per call with a 1 KB and a large state, from the active's
  `gencluster_runtime_replication_sent_bytes_total` counter (protobuf message bytes on Replicate
  streams, all standbys, heartbeats included).

TLS (issue #14). `--tls` runs everything above with TLS on every hop: the bare server serves
the same credentials a pod serves its clients with (`gencluster.tls.server_credentials`, an
ECDSA P-256 certificate from `gencluster_operator.certificates`), every pod gets what the
operator would give it (its TLS Secret, built by `desired.pod_tls_secret` from a CA and a pod
certificate issued in code, and `spec.tls.enabled`, so `desired.pod` mounts it and sets the
runtime's TLS directory, peer and health ports: peers use mutual TLS on the peer port), the
client uses `ClientTls` with the cluster's CA and verifies the client Service's name, and the
bench's own Status calls present the operator's client certificate. The keys are the same and
the JSON carries `"tls": true`. `--tls-cost` measures what TLS costs each setup in the same
run: bare and r3 each in plaintext and with TLS (two r3 clusters, no r1, no parts (b)-(d)),
alternated in every round; TLS setups' keys end in `_tls` (`bare_64_tls`, `r3_64_tls`,
`ratio_r3_64_tls`: r3 with TLS over bare with TLS, paired), and `tls_cost_ratio_<setup>_<n>`
is the median of the paired ratios TLS / plaintext of calls/s (below 1: TLS is slower), with
`tls_cost_ratio_p50_*` (latency) and `tls_cost_cpu_ratio_*` (CPU per call, all processes).
One long-lived channel per client: this is TLS's cost per call, not handshakes.

The LAST line printed is one JSON object (`summary()`), which other checks read: at least
`bare_64`, `r1_64`, `r3_64` (calls/s at 64 in flight), `ratio_r3_64` (median of paired
rounds), `bare_1_p50_ms`, `r3_1_p50_ms`, `cpu_us_per_call_active`, `cpu_us_per_call_bare`
and, when part (c) ran, `join_seconds`; also the load average at the start, before each round
and at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import math
import os
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from gencluster_testing import without_operator
from gencluster_testing.devcluster_process import DevClusterProcess
from gencluster_testing.process_tree import process_tree

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
EXAMPLES = REPO / "examples"

PORT = 50051
METRICS_PORT = 9090
LEASE = {"duration": 3, "renew": 2, "retry": 1}
"""The contract's integer minimum that passes the timing rules (as in the cluster tests)."""

REQUIRED_KEYS = ("bare_64", "r1_64", "r3_64", "ratio_r3_64")
"""What other checks read from the last line."""

REQUIRED_TLS_COST_KEYS = ("bare_64", "r3_64", "ratio_r3_64", "bare_64_tls", "r3_64_tls",
                          "ratio_r3_64_tls", "tls_cost_ratio_bare_64", "tls_cost_ratio_r3_64")
"""What the last line of `--tls-cost` holds at least."""

NAMESPACE = "default"
TLS_SUFFIX = "_tls"
"""A setup named `<setup>_tls` is `<setup>` with TLS, measured beside it (`--tls-cost`)."""
BARE_SERVER_NAME = "bare.bench.svc"
"""The DNS name on the bare server's certificate, verified by its client."""

T = TypeVar("T")


@dataclass(frozen=True)
class Settings:
    """How long and how often: --quick fits about 2.5 minutes on 2 cores."""

    quick: bool
    warmup_s: float
    load_s: float
    rounds: int
    trials: int
    large_state_bytes: int
    bytes_calls: int
    persistence: bool = False
    tls: bool = False
    tls_cost: bool = False

    @classmethod
    def for_mode(cls, quick: bool) -> Settings:
        if quick:
            return cls(True, 0.4, 1.2, 5, 3, 10 * 1024 * 1024, 300)
        return cls(False, 1.0, 4.0, 7, 10, 100 * 1024 * 1024, 2000)


IN_FLIGHT = (1, 8, 16, 64)
"""Calls in flight per load point: 1 (latency), 8 and 16 (where a batch hold would show as
added latency), 64 (throughput)."""

HEADLINE_IN_FLIGHT = 64
"""The in-flight count of the unsuffixed `cpu_us_per_call_*` keys."""


@dataclass(frozen=True)
class LoadResult:
    """One load point of one round: completed calls per second, latency percentiles and the
    CPU seconds each process of the setup used inside the measuring window."""

    calls_per_s: float
    p50_ms: float
    p99_ms: float
    calls: int
    cpu_seconds: dict[str, float] = field(default_factory=dict)


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (no interpolation: with few samples it stays a real sample)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = math.ceil(fraction * len(ordered) - 1e-9)  # 0.99 * 100 is 99.00000000000001
    index = min(len(ordered) - 1, max(0, rank - 1))
    return ordered[index]


def _round(value: float | None, digits: int = 3) -> float | None:
    if value is None or value != value:  # NaN
        return None
    return round(value, digits)


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def paired_ratios(
    setup: list[LoadResult], bare: list[LoadResult], what: Callable[[LoadResult], float]
) -> list[float]:
    """Round i of `setup` against round i of bare (measured next to each other)."""
    return [what(a) / what(b) for a, b in zip(setup, bare, strict=False)
            if what(a) > 0 and what(b) > 0]


def cpu_us_per_call(points: list[LoadResult]) -> dict[str, float]:
    """Per process of the setup (and `total`), the median over rounds of CPU microseconds
    per completed call in the window."""
    roles = sorted({role for point in points for role in point.cpu_seconds})
    result: dict[str, float] = {}
    for role in roles:
        values = [point.cpu_seconds[role] / point.calls * 1e6
                  for point in points if point.calls and role in point.cpu_seconds]
        if values:
            result[role] = statistics.median(values)
    totals = [sum(point.cpu_seconds.values()) / point.calls * 1e6
              for point in points if point.calls and point.cpu_seconds]
    if totals:
        result["total"] = statistics.median(totals)
    return result


def point_key(setup: str, in_flight: int) -> str:
    """`r3_64`, and `r3_64_tls` for the setup `r3_tls` (the plaintext key plus a suffix)."""
    if setup.endswith(TLS_SUFFIX):
        return f"{setup[:-len(TLS_SUFFIX)]}_{in_flight}{TLS_SUFFIX}"
    return f"{setup}_{in_flight}"


def baseline_of(setup: str) -> str:
    """Every setup is compared with the bare server speaking the same protocol."""
    return "bare" + TLS_SUFFIX if setup.endswith(TLS_SUFFIX) else "bare"


def _cpu_per_call(point: LoadResult) -> float:
    return sum(point.cpu_seconds.values()) / point.calls if point.calls else 0.0


def tls_cost(throughput: dict[str, dict[int, list[LoadResult]]]) -> dict[str, Any]:
    """What TLS costs each setup measured both ways: `tls_cost_ratio_<setup>_<n>` (median of
    the per-round ratios TLS / plaintext of calls/s, round i of each measured in the same
    round), `tls_cost_ratios_*` (every round), `tls_cost_ratio_p50_*` (latency) and
    `tls_cost_cpu_ratio_*` (CPU per call of every process, TLS over plaintext)."""
    result: dict[str, Any] = {}
    for setup, plain in throughput.items():
        secure = throughput.get(setup + TLS_SUFFIX)
        if setup.endswith(TLS_SUFFIX) or not secure:
            continue
        for in_flight in sorted(set(plain) & set(secure)):
            key = f"{setup}_{in_flight}"
            ratios = paired_ratios(secure[in_flight], plain[in_flight], lambda p: p.calls_per_s)
            if ratios:
                result[f"tls_cost_ratio_{key}"] = _round(statistics.median(ratios))
                result[f"tls_cost_ratios_{key}"] = [round(r, 3) for r in ratios]
            latency = paired_ratios(secure[in_flight], plain[in_flight], lambda p: p.p50_ms)
            if latency:
                result[f"tls_cost_ratio_p50_{key}"] = _round(statistics.median(latency))
            cpu = paired_ratios(secure[in_flight], plain[in_flight], _cpu_per_call)
            if cpu:
                result[f"tls_cost_cpu_ratio_{key}"] = _round(statistics.median(cpu))
    return result


def summary(
    throughput: dict[str, dict[int, list[LoadResult]]],
    outages: dict[str, list[float]] | None = None,
    join: dict[str, float] | None = None,
    bytes_per_call: dict[str, float] | None = None,
    *,
    quick: bool = True,
    large_state_bytes: int | None = None,
    tls: bool = False,
) -> dict[str, Any]:
    """The machine-readable result (the last line): a flat JSON object.

    Pure, so tests/runtime/test_bench_interface.py can check the keys without running
    anything. `throughput` maps "bare"/"r1"/"r3" to {in_flight: [one LoadResult per round]},
    round i of every setup measured next to round i of bare. Keys: `<setup>_<n>` (calls/s),
    `<setup>_<n>_p50_ms`/`_p99_ms` (medians over rounds), `ratio_<setup>_<n>` and
    `ratio_p50_<setup>_<n>` (median of the per-round ratios to bare: the paired figure; a
    burst of someone else's load on this shared machine hits one pair, not a whole setup),
    `rounds_<setup>_<n>` and `ratios_<setup>_<n>` (every round, so a reader sees the spread),
    ... A setup `<x>_tls` has the keys of `<x>` with `_tls` appended (`r3_64_tls`,
    `ratio_r3_64_tls`: against `bare_tls`), and `tls_cost` adds its ratios.
    `cpu_us_per_call_<setup>_<n>_<process>`, and the headline `cpu_us_per_call_active` (r3's
    active), `_standby` (r3's standbys, mean of the two), `_client` (the client driving r3),
    `_bare` (the bare server) and `_client_bare`, all at 64 in flight. Parts (b)-(d) are
    included when measured; a missing part is absent, never a made-up number.
    """
    result: dict[str, Any] = {"quick": quick}
    if tls:  # every hop of every setup spoke TLS (`--tls`); absent in plaintext
        result["tls"] = True
    for setup, points in throughput.items():
        bare = throughput.get(baseline_of(setup), {})
        for in_flight, rounds in sorted(points.items()):
            if not rounds:
                continue
            key = point_key(setup, in_flight)
            result[key] = _round(_median([p.calls_per_s for p in rounds]), 1)
            result[f"{key}_p50_ms"] = _round(_median([p.p50_ms for p in rounds]))
            result[f"{key}_p99_ms"] = _round(_median([p.p99_ms for p in rounds]))
            result[f"rounds_{key}"] = [round(p.calls_per_s) for p in rounds]
            for role, value in cpu_us_per_call(rounds).items():
                result[f"cpu_us_per_call_{key}_{role}"] = _round(value, 1)
            if setup == baseline_of(setup) or not bare.get(in_flight):
                continue
            ratios = paired_ratios(rounds, bare[in_flight], lambda p: p.calls_per_s)
            if ratios:
                result[f"ratio_{key}"] = _round(statistics.median(ratios))
                result[f"ratios_{key}"] = [round(r, 3) for r in ratios]
            latency = paired_ratios(rounds, bare[in_flight], lambda p: p.p50_ms)
            if latency:
                result[f"ratio_p50_{key}"] = _round(statistics.median(latency))
            # bare's CPU per call over this setup's (every process, the client included),
            # paired by round: the throughput ratio a machine saturated by the bench alone
            # would give, and far less moved by other people's load than calls/s.
            efficiency = paired_ratios(
                rounds, bare[in_flight],
                lambda p: p.calls / sum(p.cpu_seconds.values()) if p.cpu_seconds else 0.0,
            )
            if efficiency:
                result[f"cpu_ratio_{key}"] = _round(statistics.median(efficiency))
    costs = tls_cost(throughput)
    if costs:
        result["tls_cost"] = True
        result.update(costs)
    n = HEADLINE_IN_FLIGHT
    headline = {
        "cpu_us_per_call_active": [f"cpu_us_per_call_r3_{n}_active"],
        "cpu_us_per_call_standby": [f"cpu_us_per_call_r3_{n}_standby_1",
                                    f"cpu_us_per_call_r3_{n}_standby_2"],
        "cpu_us_per_call_client": [f"cpu_us_per_call_r3_{n}_client"],
        "cpu_us_per_call_bare": [f"cpu_us_per_call_bare_{n}_server"],
        "cpu_us_per_call_client_bare": [f"cpu_us_per_call_bare_{n}_client"],
    }
    for key, sources in headline.items():
        values = [result[source] for source in sources if source in result]
        if values:
            result[key] = _round(statistics.mean(values), 1)
    for kind, values in (outages or {}).items():
        if values:
            result[f"outage_{kind}_min_s"] = _round(min(values))
            result[f"outage_{kind}_median_s"] = _round(statistics.median(values))
            result[f"outage_{kind}_max_s"] = _round(max(values))
            result[f"outage_{kind}_trials"] = len(values)
    for key, value in (join or {}).items():
        result[f"join_{key}"] = _round(value)
    for key, value in (bytes_per_call or {}).items():
        result[f"bytes_per_call_{key}"] = _round(value, 1)
    if bytes_per_call and bytes_per_call.get("small") and "large" in bytes_per_call:
        result["bytes_per_call_ratio_large_to_small"] = _round(
            bytes_per_call["large"] / bytes_per_call["small"]
        )
    if large_state_bytes is not None:
        result["large_state_bytes"] = large_state_bytes
    return result


def table(result: dict[str, Any]) -> str:
    """The human-readable part, printed before the JSON line."""
    over = "bare with TLS" if result.get("tls") else "bare (TLS setups: to bare with TLS)"
    lines = ["(a) next_value throughput and latency" + (", TLS on every hop" if result.get(
             "tls") else "") + ", medians of alternated rounds "
             f"(ratio = median of per-round ratios to {over}; CPU us per call, all processes)",
             f"{'setup':<28}{'in flight':>10}{'calls/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
             f"{'ratio':>8}{'cpu us':>9}{'cpu ratio':>11}"]
    names = {"bare": "bare grpc.aio", "r1": "gencluster 1 replica",
             "r3": "gencluster 3 (Sync, 2 acks)", "bare_tls": "bare grpc.aio, TLS",
             "r3_tls": "gencluster 3 (Sync), TLS"}
    for setup, name in names.items():
        for in_flight in IN_FLIGHT:
            key = point_key(setup, in_flight)
            if key not in result:
                continue
            ratio = result.get(f"ratio_{key}")
            cpu = result.get(f"cpu_us_per_call_{key}_total")
            cpu_ratio = result.get(f"cpu_ratio_{key}")
            lines.append(
                f"{name:<28}{in_flight:>10}{result[key]:>10}{result[f'{key}_p50_ms']:>9}"
                f"{result[f'{key}_p99_ms']:>9}{'' if ratio is None else ratio:>8}"
                f"{'' if cpu is None else cpu:>9}{'' if cpu_ratio is None else cpu_ratio:>11}"
            )
    for setup in ("bare", "r1", "r3"):
        for in_flight in IN_FLIGHT:
            key = f"{setup}_{in_flight}"
            if f"tls_cost_ratio_{key}" in result:
                lines.append(
                    f"TLS cost, {names[setup]} at {in_flight} in flight: calls/s TLS/plaintext "
                    f"{result[f'tls_cost_ratio_{key}']}, p50 latency "
                    f"{result.get(f'tls_cost_ratio_p50_{key}')}, CPU per call "
                    f"{result.get(f'tls_cost_cpu_ratio_{key}')} (medians of paired rounds)")
    for kind, label in (("sigkill", "SIGKILL of the active (no operator)"),
                        ("graceful", "graceful stop (pod delete)")):
        if f"outage_{kind}_median_s" in result:
            lines.append(
                f"(b) outage, {label}: min {result[f'outage_{kind}_min_s']} s, median "
                f"{result[f'outage_{kind}_median_s']} s, max {result[f'outage_{kind}_max_s']} s"
                f" over {result[f'outage_{kind}_trials']} trials"
            )
    if "join_seconds" in result:
        lines.append(
            f"(c) join with {result.get('join_state_mb')} MB state: {result['join_seconds']} s"
            f" from the restarted process's first answer to in sync "
            f"({result.get('join_from_kill_seconds')} s from the SIGKILL)"
        )
    if "bytes_per_call_small" in result:
        lines.append(
            f"(d) replication bytes per call (active to all standbys): 1 KB state "
            f"{result['bytes_per_call_small']}, large state {result.get('bytes_per_call_large')}"
        )
    return "\n".join(lines)


# -- the bare baseline ---------------------------------------------------------------------------


def write_bare_certificates(directory: Path) -> Any:
    """A CA and the bare server's certificate (the kind a pod gets: ECDSA P-256 from the
    operator's issuer) in `directory`; returns the `ClientTls` that verifies it."""
    from gencluster import ClientTls
    from gencluster.tls_identity import CA_FILE, CERT_FILE, KEY_FILE
    from gencluster_operator import certificates

    now = time.time()
    ca = certificates.new_ca("bench", "bare", now)
    leaf = certificates.issue(ca, certificates.LeafRequest(
        common_name="bare", uri="spiffe://gencluster.io/ns/bench/csrv/bare/pod/bare-0",
        dns_names=(BARE_SERVER_NAME,)), now)
    (directory / CERT_FILE).write_bytes(leaf.cert_pem)
    (directory / KEY_FILE).write_bytes(leaf.key_pem)
    (directory / CA_FILE).write_bytes(ca.cert_pem)
    return ClientTls(ca.cert_pem, BARE_SERVER_NAME)


async def serve_bare(tls_dir: str | None = None) -> None:
    """The baseline in its own process: `gencluster.v1.Client/Call` doing only the work.

    Same proto service, so `gencluster.AsyncClient` drives it exactly like a cluster; the
    server decodes the CallRequest and its JSON payload, increments, encodes the reply. With
    `tls_dir` it also serves a TLS port with the credentials a pod serves its clients with
    (`gencluster.tls.server_credentials`, no client certificate asked, as `clientAuth: None`).
    """
    import grpc
    from gencluster.codec import JsonCodec
    from gencluster.proto import gencluster_pb2 as pb
    from gencluster.proto import gencluster_pb2_grpc as pb_grpc
    from gencluster.run import tune_garbage_collector
    from gencluster.services import SERVER_KEEPALIVE_OPTIONS

    codec = JsonCodec()

    class BareCounter(pb_grpc.ClientServicer):
        def __init__(self) -> None:
            self.value = 0

        async def Call(self, request: pb.CallRequest, context: Any) -> pb.CallReply:
            if codec.decode(request.payload, what="request") != "next_value":
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "only next_value")
            self.value += 1
            return pb.CallReply(epoch=1, seq=self.value,
                                reply=codec.encode(self.value, what="reply"))

    # The collector settings every `gencluster run` pod gets (start-up objects frozen, higher
    # thresholds): without them bare would pay collections the pods do not.
    tune_garbage_collector()
    # And the keepalive settings of a pod's server: with gRPC's defaults the client's 5 s
    # pings on an idle channel (between its setup's windows) earn a GOAWAY too_many_pings, and
    # the next window would pay a reconnection (a TLS handshake, with TLS) the pods never ask.
    server = grpc.aio.server(options=list(SERVER_KEEPALIVE_OPTIONS))
    pb_grpc.add_ClientServicer_to_server(BareCounter(), server)
    ports = [server.add_insecure_port("127.0.0.1:0")]
    if tls_dir is not None:
        from gencluster.tls import TlsFiles, server_credentials

        ports.append(server.add_secure_port(
            "127.0.0.1:0", server_credentials(TlsFiles(tls_dir), require_client_cert=False)))
    await server.start()
    print(*ports, flush=True)
    await server.wait_for_termination()


@contextlib.contextmanager
def bare_server(tls_dir: Path | None = None) -> Iterator[tuple[str, str | None, int]]:
    """The bare server's plaintext address, its TLS address (with `tls_dir`, else None) and
    its PID (its CPU is read from /proc). One process serves both: the windows of the two
    never overlap, so each window's CPU belongs to the one driven."""
    command = [sys.executable, __file__, "--serve-bare"]
    if tls_dir is not None:
        command += ["--bare-tls-dir", str(tls_dir)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        ports = [int(port) for port in process.stdout.readline().split()]
        yield (f"127.0.0.1:{ports[0]}", f"127.0.0.1:{ports[1]}" if tls_dir else None,
               process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- load ---------------------------------------------------------------------------------------


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def parse_stat_cpu_seconds(stat: str) -> float:
    """utime + stime (fields 14 and 15 of /proc/PID/stat) in seconds. The command name (field
    2) may hold spaces and parentheses, so fields are counted after its closing one."""
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system, every thread) a live process used so far; 0 once gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return parse_stat_cpu_seconds(stat.read())
    except (OSError, ValueError):
        return 0.0


@dataclass(frozen=True)
class Processes:
    """The processes of one setup, by role ("client", "server", "active", "standby_1"...),
    each a list of PIDs whose CPU is summed."""

    pids: dict[str, list[int]]

    def sample(self) -> dict[str, float]:
        result = {role: sum(process_cpu_seconds(pid) for pid in pids)
                  for role, pids in self.pids.items() if role != "client"}
        result["client"] = time.process_time()  # this process: the load generator
        return result


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {role: after[role] - before[role] for role in before if role in after}


async def run_load(
    client: Any, in_flight: int, warmup_s: float, load_s: float,
    sample: Callable[[], dict[str, float]] | None = None,
) -> LoadResult:
    """`in_flight` callers each looping on next_value; counts calls completed in the window.
    `sample` (CPU seconds per process) is read at the window's start and end."""
    latencies: list[float] = []
    window: list[float] = [float("inf"), float("inf")]
    stop = asyncio.Event()

    async def caller() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            await client.call("next_value")
            done = time.perf_counter()
            if window[0] <= done <= window[1]:
                latencies.append(done - started)

    tasks = [asyncio.create_task(caller()) for _ in range(in_flight)]
    cpu: dict[str, float] = {}
    try:
        await asyncio.sleep(warmup_s)
        before = sample() if sample else {}
        window[0] = time.perf_counter()
        window[1] = window[0] + load_s
        await asyncio.sleep(load_s)
        after = sample() if sample else {}
        cpu = cpu_delta(before, after)
        stop.set()
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
    return LoadResult(
        calls_per_s=len(latencies) / load_s,
        p50_ms=percentile(latencies, 0.50) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
        calls=len(latencies),
        cpu_seconds=cpu,
    )


def round_order(setups: list[str], round_number: int) -> list[str]:
    """Every other round in reverse, so bare and r3 (next to each other) take turns going
    first and neither always runs right after the other's warm-up."""
    return list(setups) if round_number % 2 == 0 else list(reversed(setups))


# -- clusters on the local control plane ----------------------------------------------------------


async def poll(
    condition: Callable[[], Awaitable[T]], timeout: float, interval: float, what: str
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


@dataclass
class BenchCluster:
    """The pods of one ClusteredServer without the operator (nothing heals a killed pod or
    clears the Lease behind the bench), as in tests/runtime/test_cluster_idserver.py."""

    dev: Any  # gencluster_testing.devcluster_process.DevClusterProcess
    name: str
    replicas: int
    min_sync: int
    server: str = "gencluster_examples.id_server:IdServer"
    persistence: bool = False
    tls: bool = False
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    _ips: dict[str, str] = field(default_factory=dict)
    _resource: dict[str, Any] = field(default_factory=dict)
    _ca: Any = None  # gencluster_operator.certificates.KeyPair, with TLS
    _operator: Any = None  # the operator's client certificate of this cluster, with TLS

    def __post_init__(self) -> None:
        from kubernetes import client

        api = self.dev.api_client()
        self.core = client.CoreV1Api(api)
        self.coordination = client.CoordinationV1Api(api)

    def pod_name(self, ordinal: int) -> str:
        return f"{self.name}-{ordinal}"

    @property
    def pods(self) -> list[str]:
        return [self.pod_name(i) for i in range(self.replicas)]

    def resource(self) -> dict[str, Any]:
        """The ClusteredServer this group stands for (never stored: no operator runs here);
        its children are built by the operator's own builders
        (gencluster_testing.without_operator)."""
        return without_operator.clustered_server(
            self.name,
            server=self.server,
            replicas=self.replicas,
            port=PORT,
            replication={"mode": "Sync", "minSyncStandbys": self.min_sync},
            lease={"durationSeconds": LEASE["duration"], "renewDeadlineSeconds": LEASE["renew"],
                   "retryPeriodSeconds": LEASE["retry"]},
            persistence={"enabled": self.persistence, "size": "1Gi"},
            template={"spec": {"env": [
                # Per-call INFO logging would be part of every figure.
                {"name": "GENCLUSTER_LOG_LEVEL", "value": "WARNING"},
                # bench_server.FillServer lives beside this script.
                {"name": "PYTHONPATH", "value": f"{EXAMPLES}{os.pathsep}{BENCH}"},
            ]}},
            # With TLS, `desired.pod` mounts each pod's TLS Secret and sets the runtime's TLS
            # directory, peer and health ports, as for any ClusteredServer.
            tls={"enabled": self.tls},
        )

    def tls_secrets(self) -> list[dict[str, Any]]:
        """What the operator's issuer would write (no operator runs here): a CA for this
        cluster, each pod's TLS Secret (`desired.pod_tls_secret`, a certificate from
        `certificates.pod_request`), and the operator's client certificate, kept for the
        bench's own Admin.Status calls on the peer port."""
        from gencluster_operator import certificates, desired, names

        now = time.time()
        self._ca = certificates.new_ca(NAMESPACE, self.name, now)
        self._operator = certificates.issue(
            self._ca, certificates.operator_request(NAMESPACE, self.name), now)
        result = []
        for pod in self.pods:
            leaf = certificates.issue(self._ca, certificates.pod_request(
                NAMESPACE, self.name, pod, peer_service=names.peer_service_name(self.name),
                client_service=names.client_service_name(self.name)), now)
            result.append(without_operator.without_owner(
                desired.pod_tls_secret(self._resource, pod, leaf, self._ca.cert_pem)))
        return result

    def create(self) -> None:
        self._resource = self.resource()
        if self.tls:  # the Secrets before the pods that mount them
            self.dev.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=json.dumps(
                {"apiVersion": "v1", "kind": "List", "items": self.tls_secrets()}))
        without_operator.create(self.dev, self._resource, self.token)

    def client_tls(self) -> Any:
        """`ClientTls` as a user's client of this cluster would have (None in plaintext): the
        CA, the client Service's name verified on every pod."""
        from gencluster import ClientTls
        from gencluster.tls_identity import client_server_name
        from gencluster_operator import names

        if not self.tls:
            return None
        return ClientTls(self._ca.cert_pem,
                         client_server_name(names.client_service_name(self.name), NAMESPACE))

    def client(self, addresses: str, timeout: float) -> Any:
        from gencluster import AsyncClient

        return AsyncClient(addresses, timeout=timeout, tls=self.client_tls())

    def admin_channel(self, address: str) -> Any:
        """A channel for Admin.Status: plaintext to the client port, or mutual TLS to the peer
        port with the operator's certificate (the only callers the gate lets in there)."""
        import grpc
        from gencluster.tls import peer_target
        from gencluster.tls_identity import peer_server_name
        from gencluster_operator import names

        if not self.tls:
            return grpc.aio.insecure_channel(address)
        return grpc.aio.secure_channel(
            peer_target(address, names.tls_ports_for(PORT)[0]),
            grpc.ssl_channel_credentials(self._ca.cert_pem, self._operator.key_pem,
                                         self._operator.cert_pem),
            options=[("grpc.ssl_target_name_override",
                      peer_server_name(names.peer_service_name(self.name), NAMESPACE))],
        )

    def pod(self, ordinal: int) -> dict[str, Any]:
        return without_operator.pod(self._resource, ordinal)

    def pod_pids(self, pod: str) -> list[int]:
        """The running pod's container processes and their children (for CPU per call)."""
        from gencluster_dev.network.faults import FaultInjector

        pids = FaultInjector(self.dev.dir).pod(f"default/{pod}").pids.values()
        return [tree_pid for pid in pids if pid for tree_pid in process_tree(pid)]

    def delete(self) -> None:
        self.dev.kubectl("delete", "pod", *self.pods, "--wait=false", "--ignore-not-found",
                         check=False)

    # Kubernetes reads (blocking; called through asyncio.to_thread while callers run).

    def _pod_ip(self, pod: str) -> str:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.core.read_namespaced_pod(pod, "default").status.pod_ip or ""
        except ApiException:
            return ""

    async def address(self, pod: str) -> str:
        if not self._ips.get(pod):
            self._ips[pod] = await asyncio.to_thread(self._pod_ip, pod)
        return f"{self._ips[pod]}:{PORT}" if self._ips[pod] else ""

    async def addresses(self) -> str:
        return ",".join([a for a in [await self.address(p) for p in self.pods] if a])

    def forget_ip(self, pod: str) -> None:
        self._ips.pop(pod, None)

    async def holder(self) -> str:
        lease = await asyncio.to_thread(
            self.coordination.read_namespaced_lease, self.name, "default"
        )
        return lease.spec.holder_identity or ""

    async def status(self, pod: str) -> Any:
        import grpc
        from gencluster.proto import gencluster_pb2 as pb
        from gencluster.proto import gencluster_pb2_grpc as pb_grpc
        from gencluster.wellknown import PEER_TOKEN_METADATA

        address = await self.address(pod)
        if not address:
            return None
        try:
            async with self.admin_channel(address) as channel:
                return await pb_grpc.AdminStub(channel).Status(
                    pb.StatusRequest(), metadata=((PEER_TOKEN_METADATA, self.token),), timeout=2
                )
        except grpc.RpcError:
            return None

    async def ready(self, timeout: float = 60) -> str:
        """Wait for one active with every other replica connected and in sync."""
        from gencluster.proto import gencluster_pb2 as pb

        async def settled() -> str:
            holder = await self.holder()
            if not holder:
                return ""
            status = await self.status(holder)
            if status is None or status.role != pb.ROLE_ACTIVE:
                return ""
            in_sync = [s.identity for s in status.standbys if s.in_sync and s.lag == 0]
            return holder if len(in_sync) == self.replicas - 1 else ""

        return await poll(settled, timeout, 0.1, f"{self.name}: an active with all in sync")

    async def replication_counters(self, pod: str) -> dict[str, float]:
        """The active's gencluster_runtime_replication_sent_*_total counters from /metrics."""
        ip = (await self.address(pod)).rsplit(":", 1)[0]

        def scrape() -> str:
            url = f"http://{ip}:{METRICS_PORT}/metrics"
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.read().decode()

        text = await asyncio.to_thread(scrape)
        counters = {}
        for name in ("bytes", "messages", "entries"):
            match = re.search(
                rf"^gencluster_runtime_replication_sent_{name}_total\{{[^}}]*\}} (\S+)$", text, re.M
            )
            if match is None:
                raise RuntimeError(
                    f"no gencluster_runtime_replication_sent_{name}_total in /metrics"
                )
            counters[name] = float(match.group(1))
        return counters


async def outage_trial(cluster: BenchCluster, fault: str, callers: int = 4) -> float:
    """Fault the active under continuous calls; return the longest gap between successes."""
    active = await cluster.ready()
    successes: list[float] = []
    stop = asyncio.Event()

    async with cluster.client(await cluster.addresses(), timeout=30) as client:

        async def caller() -> None:
            while not stop.is_set():
                await client.call("next_value")
                successes.append(time.monotonic())

        tasks = [asyncio.create_task(caller()) for _ in range(callers)]
        try:
            await poll(_async(lambda: len(successes) >= 50), 20, 0.01, "calls before the fault")
            faulted_at = time.monotonic()
            if fault == "sigkill":
                await asyncio.to_thread(
                    cluster.dev.gencluster, "dev", "fault", "--dir", str(cluster.dev.dir),
                    "kill", active,
                )
            else:
                await asyncio.to_thread(
                    cluster.dev.kubectl, "delete", "pod", active, "--wait=false"
                )

            async def moved() -> bool:
                return (await cluster.holder()) not in ("", active)

            await poll(moved, 30, 0.05, "a new holder")
            after = len(successes)
            await poll(_async(lambda: len(successes) >= after + 50), 30, 0.01,
                       "calls after the fault")
            stop.set()
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
    times = sorted(successes)
    gaps = [b - a for a, b in itertools.pairwise(times) if b >= faulted_at]
    if fault == "graceful":
        await restore_deleted_pod(cluster, active)
    return max(gaps, default=0.0)


def _async(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def wrapped() -> bool:
        return check()

    return wrapped


async def restore_deleted_pod(cluster: BenchCluster, pod: str) -> None:
    """No operator here: put the deleted replica back, as the StatefulSet-like operator would."""
    from kubernetes.client.exceptions import ApiException

    async def gone() -> bool:
        try:
            await asyncio.to_thread(cluster.core.read_namespaced_pod, pod, "default")
        except ApiException as error:
            return error.status == 404
        return False

    await poll(gone, 60, 0.1, f"{pod} to be gone")
    cluster.forget_ip(pod)
    ordinal = int(pod.rsplit("-", 1)[1])
    await asyncio.to_thread(
        cluster.dev.kubectl, "apply", "-f", "-", input=json.dumps(cluster.pod(ordinal))
    )

    async def has_ip() -> bool:
        cluster.forget_ip(pod)
        return bool(await cluster.address(pod))

    await poll(has_ip, 30, 0.1, f"{pod} to get an address")


async def bytes_per_call(cluster: BenchCluster, calls: int, in_flight: int = 8) -> float:
    """Replication bytes the active sent (to all standbys) per next_value call."""
    active = await cluster.ready()
    async with cluster.client(await cluster.address(active), timeout=30) as client:
        await client.call("next_value")
        before = await cluster.replication_counters(active)
        remaining = [calls]

        async def caller() -> None:
            while remaining[0] > 0:
                remaining[0] -= 1
                await client.call("next_value")

        await asyncio.gather(*(caller() for _ in range(in_flight)))
        after = await cluster.replication_counters(active)
    return (after["bytes"] - before["bytes"]) / calls


async def fill(cluster: BenchCluster, size: int) -> None:
    active = await cluster.ready()
    async with cluster.client(await cluster.address(active), timeout=120) as client:
        assert await client.call(["fill", size]) == size


async def join_trial(cluster: BenchCluster) -> dict[str, float]:
    """SIGKILL a standby (it restarts without state) and time its join by snapshot."""
    from gencluster.proto import gencluster_pb2 as pb

    active = await cluster.ready(timeout=120)
    standby = next(pod for pod in cluster.pods if pod != active)
    active_status = await cluster.status(active)
    target = active_status.applied_seq
    killed_at = time.monotonic()
    await asyncio.to_thread(
        cluster.dev.gencluster, "dev", "fault", "--dir", str(cluster.dev.dir), "kill", standby
    )

    async def restarted() -> Any:
        status = await cluster.status(standby)
        # The restarted process holds no state until it joins: applied_seq 0 or JOINING.
        if status is not None and (status.role == pb.ROLE_JOINING or status.applied_seq == 0):
            return status
        return None

    await poll(restarted, 60, 0.01, f"{standby} to restart")
    up_at = time.monotonic()

    async def in_sync() -> bool:
        status = await cluster.status(standby)
        return (status is not None and status.role == pb.ROLE_STANDBY
                and status.applied_seq >= target)

    await poll(in_sync, 120, 0.01, f"{standby} to join")
    synced_at = time.monotonic()
    return {"seconds": synced_at - up_at, "from_kill_seconds": synced_at - killed_at}


# -- the run --------------------------------------------------------------------------------------


async def failover_join_bytes(
    dev: Any, settings: Settings, note: Callable[[str], None], outages: dict[str, list[float]],
    per_call: dict[str, float], join: dict[str, float],
) -> None:
    """Parts (b)-(d), filling the given dicts as they go: what was measured before a failure
    is reported; (a) is what must exist."""
    try:
        # Failover, join and bytes: 3 replicas, Sync with one ack (as the examples), so a
        # failover does not also wait for the killed pod to rejoin.
        fo = BenchCluster(dev, "fo", 3, 1, server="bench_server:FillServer", tls=settings.tls)
        fo.create()
        await fo.ready()
        for fault in ("sigkill", "graceful"):
            for _ in range(settings.trials):
                outages[fault].append(await outage_trial(fo, fault))
                note(f"{fault} outage {outages[fault][-1]:.3f}s")
        await fill(fo, 1024)
        per_call["small"] = await bytes_per_call(fo, settings.bytes_calls)
        await fill(fo, settings.large_state_bytes)
        per_call["large"] = await bytes_per_call(fo, settings.bytes_calls)
        note(f"bytes per call {per_call}")
        join.update(await join_trial(fo))
        join["state_mb"] = settings.large_state_bytes / 1024 / 1024
        note(f"join {join}")
    except Exception as error:  # report what was measured
        note(f"failover/join/bytes part stopped: {type(error).__name__}: {error}")


async def bench(settings: Settings, log: Callable[[str], None]) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    throughput: dict[str, dict[int, list[LoadResult]]] = {}
    loads: list[float] = []
    outages: dict[str, list[float]] = {"sigkill": [], "graceful": []}
    join: dict[str, float] = {}
    per_call: dict[str, float] = {}
    started = time.monotonic()

    def note(message: str) -> None:
        log(f"[{time.monotonic() - started:6.1f}s] {message}")

    with tempfile.TemporaryDirectory(prefix="gencluster-bench-") as tmp:
        dev = DevClusterProcess(Path(tmp) / "dev", "--restart-backoff", "0.5")
        try:
            if settings.tls_cost:
                # What TLS costs: bare and r3 both ways, in the same rounds (no r1).
                setups = ["bare", "bare" + TLS_SUFFIX, "r3" + TLS_SUFFIX, "r3"]
                clusters = {
                    "r3": BenchCluster(dev, "r3", 3, 2, persistence=settings.persistence),
                    "r3" + TLS_SUFFIX: BenchCluster(dev, "r3tls", 3, 2, tls=True,
                                                    persistence=settings.persistence),
                }
            else:
                setups = ["bare", "r3", "r1"]
                clusters = {
                    "r1": BenchCluster(dev, "r1", 1, 0, persistence=settings.persistence,
                                       tls=settings.tls),
                    "r3": BenchCluster(dev, "r3", 3, 2, persistence=settings.persistence,
                                       tls=settings.tls),
                }
            for cluster in clusters.values():
                cluster.create()
            # Every pod started before the first measurement: start-up costs CPU.
            for cluster in clusters.values():
                await cluster.ready()
            note(f"control plane up; {', '.join(c.name for c in clusters.values())} ready")
            bare_tls_dir = Path(tmp) / "bare-tls"
            bare_tls_dir.mkdir()
            bare_tls = write_bare_certificates(bare_tls_dir)
            use_tls = settings.tls or settings.tls_cost
            with bare_server(bare_tls_dir if use_tls else None) as (
                    address, tls_address, bare_pid):
                from gencluster import AsyncClient

                processes = {"bare": Processes({"server": process_tree(bare_pid)})}
                clients = {"bare": AsyncClient(tls_address if settings.tls else address,
                                               timeout=30,
                                               tls=bare_tls if settings.tls else None)}
                if settings.tls_cost:
                    processes["bare" + TLS_SUFFIX] = processes["bare"]
                    clients["bare" + TLS_SUFFIX] = AsyncClient(tls_address or "", timeout=30,
                                                               tls=bare_tls)
                for setup, cluster in clusters.items():
                    active = await cluster.ready()
                    standbys = [pod for pod in cluster.pods if pod != active]
                    processes[setup] = Processes(
                        {"active": cluster.pod_pids(active),
                         **{f"standby_{i + 1}": cluster.pod_pids(pod)
                            for i, pod in enumerate(standbys)}})
                    clients[setup] = cluster.client(await cluster.addresses(), timeout=30)
                try:
                    # Alternated rounds (bare next to r3, taking turns going first), every
                    # in-flight count in each; ratios are taken per round (paired).
                    for round_number in range(settings.rounds):
                        loads.append(round(os.getloadavg()[0], 2))
                        for in_flight in IN_FLIGHT:
                            order = round_order(setups, round_number)
                            for setup in order:
                                point = await run_load(
                                    clients[setup], in_flight, settings.warmup_s,
                                    settings.load_s, processes[setup].sample,
                                )
                                throughput.setdefault(setup, {}).setdefault(
                                    in_flight, []).append(point)
                        note(f"round {round_number + 1} at 64 in flight: " + ", ".join(
                            f"{setup} {throughput[setup][64][-1].calls_per_s:.0f}/s"
                            for setup in setups))
                finally:
                    for client in clients.values():
                        await client.close()
            for cluster in clusters.values():
                cluster.delete()
            if settings.tls_cost:
                note("--tls-cost: parts (b)-(d) not run")
            else:
                await failover_join_bytes(dev, settings, note, outages, per_call, join)
        finally:
            dev.stop()
    result = summary(throughput, outages, join, per_call, quick=settings.quick,
                     large_state_bytes=None if settings.tls_cost else settings.large_state_bytes,
                     tls=settings.tls)
    result["throughput_rounds"] = settings.rounds
    result["window_seconds"] = settings.load_s
    result["persistence"] = settings.persistence
    result["seconds"] = round(time.monotonic() - started, 1)
    # How busy the shared machine was (1-minute load average, 2 cores): other processes
    # depress bare (which could use a free core) more than r3 (saturated by its own replicas),
    # so a high load average makes every ratio look better than it is. Only the start value
    # is about other processes; the end value includes this bench's own.
    result["load_average_start"] = round(load_before, 2)
    result["load_average_end"] = round(os.getloadavg()[0], 2)
    result["load_average_rounds"] = loads
    result["in_flight"] = list(IN_FLIGHT)
    result["cores"] = os.cpu_count()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fit two minutes on 2 cores")
    parser.add_argument("--persistence", action="store_true",
                        help="r1 and r3 keep their log on PersistentVolumeClaims (fsync per "
                        "group commit; docs/durability.md)")
    tls = parser.add_mutually_exclusive_group()
    tls.add_argument("--tls", action="store_true",
                     help="TLS on every hop: the bare server, the pods (mutual TLS between "
                     "peers) and the client; same keys, with \"tls\": true")
    tls.add_argument("--tls-cost", action="store_true",
                     help="part (a) only, bare and r3 each in plaintext and with TLS in the "
                     "same rounds: what TLS costs each (tls_cost_ratio_*)")
    parser.add_argument("--serve-bare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bare-tls-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_bare:
        asyncio.run(serve_bare(args.bare_tls_dir))
        return 0
    settings = dataclasses.replace(Settings.for_mode(args.quick), persistence=args.persistence,
                                   tls=args.tls, tls_cost=args.tls_cost)
    result = asyncio.run(bench(settings, lambda line: print(line, file=sys.stderr, flush=True)))
    print(table(result))
    print(json.dumps(result, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
