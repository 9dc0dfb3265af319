"""The benchmark's last line is read by other checks: `bench/replication.py --quick` must end
with one JSON object holding at least bare_64, r1_64, r3_64 and ratio_r3_64 (with `--tls`, the
same keys and `"tls": true`; with `--tls-cost`, REQUIRED_TLS_COST_KEYS: each TLS setup paired
with bare TLS, and TLS / plaintext per setup). The bench itself is too heavy (and too noisy) for
CI, so this checks only the pure summary builder."""

from __future__ import annotations

import json

import pytest

from tests.bench_modules import load_bench

pytestmark = pytest.mark.unit


def test_summary_has_the_keys_other_checks_read() -> None:
    bench = load_bench("replication")
    point = bench.LoadResult
    throughput = {
        "bare": {1: [point(1000.0, 0.5, 1.0, 2500)],
                 64: [point(4000.0, 15.0, 30.0, 10000, {"server": 1.0, "client": 2.0})]},
        "r1": {1: [point(800.0, 0.6, 1.5, 2000)], 64: [point(3000.0, 20.0, 40.0, 7500)]},
        "r3": {1: [point(500.0, 1.0, 3.0, 1250)],
               64: [point(2600.0, 25.0, 60.0, 6500,
                          {"active": 1.3, "standby_1": 0.26, "standby_2": 0.39,
                           "client": 1.0})]},
    }
    result = bench.summary(
        throughput,
        {"sigkill": [1.2, 0.9, 1.0], "graceful": [0.1, 0.2, 0.15]},
        {"seconds": 1.5, "from_kill_seconds": 2.0},
        {"small": 160.0, "large": 168.0},
        quick=True,
    )
    assert set(bench.REQUIRED_KEYS) <= set(result)
    assert (result["bare_64"], result["r1_64"], result["r3_64"]) == (4000.0, 3000.0, 2600.0)
    assert result["ratio_r3_64"] == 0.65
    assert result["ratio_r1_1"] == 0.8
    assert result["ratio_p50_r3_1"] == 2.0
    assert result["cpu_us_per_call_active"] == 200.0
    assert result["cpu_us_per_call_standby"] == 50.0  # mean of the two standbys
    assert result["cpu_us_per_call_bare"] == 100.0
    assert result["cpu_us_per_call_r3_64_total"] == 453.8  # client included
    # bare: 3 s of CPU for 10000 calls (300 us); r3: 453.8 us per call
    assert result["cpu_ratio_r3_64"] == 0.661
    assert result["outage_sigkill_median_s"] == 1.0
    assert result["outage_graceful_max_s"] == 0.2
    assert result["join_seconds"] == 1.5
    assert result["bytes_per_call_ratio_large_to_small"] == 1.05
    # One JSON object on one line, as the bench prints it last.
    line = json.dumps(result, sort_keys=True)
    assert "\n" not in line and json.loads(line) == result
    assert bench.table(result).startswith("(a)")


def test_the_ratio_is_the_median_of_paired_rounds_not_of_best_rounds() -> None:
    bench = load_bench("replication")
    point = bench.LoadResult
    # Round 2 of bare was hit by someone else's load; its pair counts once, and the best
    # round of each setup (6000 vs 4000 = 0.67) is not what is reported.
    bare = [point(6000.0, 1, 1, 1), point(3000.0, 1, 1, 1), point(5000.0, 1, 1, 1)]
    r3 = [point(4800.0, 1, 1, 1), point(2900.0, 1, 1, 1), point(4000.0, 1, 1, 1)]
    result = bench.summary({"bare": {64: bare}, "r1": {64: r3}, "r3": {64: r3}})
    assert result["ratios_r3_64"] == [0.8, 0.967, 0.8]
    assert result["ratio_r3_64"] == 0.8
    assert result["r3_64"] == 4000.0 and result["bare_64"] == 5000.0
    assert result["rounds_bare_64"] == [6000, 3000, 5000]


def test_parts_not_measured_are_absent_not_invented() -> None:
    bench = load_bench("replication")
    point = [bench.LoadResult(100.0, 1.0, 2.0, 250)]
    result = bench.summary({"bare": {64: point}, "r1": {64: point}, "r3": {64: point}})
    assert set(bench.REQUIRED_KEYS) <= set(result)
    assert not any(key.startswith(("outage_", "join_", "bytes_per_call", "cpu_"))
                   for key in result)


def test_cpu_seconds_from_a_stat_line_whose_name_has_spaces() -> None:
    bench = load_bench("replication")
    fields = ["S", "1"] + ["0"] * 9 + [str(3 * bench.CLOCK_TICKS), str(bench.CLOCK_TICKS)]
    line = "1234 (a b) c) " + " ".join(fields + ["0"] * 30)
    assert bench.parse_stat_cpu_seconds(line) == 4.0


def test_bare_and_r3_take_turns_going_first() -> None:
    bench = load_bench("replication")
    assert bench.round_order(["bare", "r3", "r1"], 0) == ["bare", "r3", "r1"]
    assert bench.round_order(["bare", "r3", "r1"], 1) == ["r1", "r3", "bare"]


def test_percentile_is_a_real_sample() -> None:
    bench = load_bench("replication")
    samples = [float(n) for n in range(1, 101)]
    assert bench.percentile(samples, 0.5) == 50.0
    assert bench.percentile(samples, 0.99) == 99.0
    assert bench.percentile([3.0], 0.99) == 3.0


def test_tls_cost_keys_pair_each_setup_with_itself_and_tls_setups_with_bare_tls() -> None:
    bench = load_bench("replication")
    point = bench.LoadResult
    # Two rounds; round i of every setup measured in the same round.
    throughput = {
        "bare": {64: [point(4000.0, 10.0, 20.0, 4000, {"server": 0.4, "client": 0.4}),
                      point(3000.0, 12.0, 20.0, 3000, {"server": 0.3, "client": 0.3})]},
        "bare_tls": {64: [point(3000.0, 15.0, 30.0, 3000, {"server": 0.45, "client": 0.45}),
                          point(2700.0, 15.0, 30.0, 2700, {"server": 0.4, "client": 0.41})]},
        "r3_tls": {64: [point(1500.0, 40.0, 80.0, 1500), point(1350.0, 40.0, 80.0, 1350)]},
        "r3": {64: [point(2000.0, 30.0, 60.0, 2000), point(1500.0, 30.0, 60.0, 1500)]},
    }
    result = bench.summary(throughput, quick=True)
    assert set(bench.REQUIRED_TLS_COST_KEYS) <= set(result)
    assert result["tls_cost"] is True and "tls" not in result
    assert (result["bare_64_tls"], result["r3_64_tls"]) == (2850.0, 1425.0)
    # r3 with TLS against bare with TLS (0.5 both rounds), not against plaintext bare.
    assert result["ratio_r3_64_tls"] == 0.5
    assert result["ratios_r3_64_tls"] == [0.5, 0.5]
    assert result["ratio_r3_64"] == 0.5
    assert "ratio_bare_64_tls" not in result  # bare with TLS is a baseline, not a setup
    # TLS / plaintext per round: bare 0.75 and 0.9, r3 0.75 and 0.9.
    assert result["tls_cost_ratios_bare_64"] == [0.75, 0.9]
    assert result["tls_cost_ratio_bare_64"] == 0.825
    assert result["tls_cost_ratio_r3_64"] == 0.825
    assert result["tls_cost_ratio_p50_bare_64"] == 1.375  # 1.5 and 1.25
    # CPU per call: 300 us over 200 us (round 1), 300 over 200 (round 2).
    assert result["tls_cost_cpu_ratio_bare_64"] == 1.5
    assert "tls_cost_cpu_ratio_r3_64" not in result  # no CPU sampled: absent, not invented
    assert "TLS cost" in bench.table(result)


def test_plaintext_runs_carry_no_tls_keys() -> None:
    bench = load_bench("replication")
    point = [bench.LoadResult(100.0, 1.0, 2.0, 250)]
    result = bench.summary({"bare": {64: point}, "r1": {64: point}, "r3": {64: point}})
    assert not any("tls" in key for key in result)


def test_a_tls_run_has_the_plaintext_keys_and_says_tls() -> None:
    bench = load_bench("replication")
    point = [bench.LoadResult(100.0, 1.0, 2.0, 250)]
    result = bench.summary({"bare": {64: point}, "r1": {64: point}, "r3": {64: point}},
                           tls=True)
    assert set(bench.REQUIRED_KEYS) <= set(result)
    assert result["tls"] is True
    assert not any(key.startswith("tls_cost") or key.endswith("_tls") for key in result)
    assert "TLS on every hop" in bench.table(result)
