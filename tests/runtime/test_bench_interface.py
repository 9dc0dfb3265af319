"""The benchmark's last line is read by other checks: `bench/replication.py --quick` must end
with one JSON object holding at least bare_64, r1_64, r3_64 and ratio_r3_64. The bench itself
is too heavy (and too noisy) for CI, so this checks only the pure summary builder."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.unit

BENCH = Path(__file__).resolve().parents[2] / "bench" / "replication.py"


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_replication", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


def test_summary_has_the_keys_other_checks_read() -> None:
    bench = load_bench()
    point = bench.LoadResult
    throughput = {
        "bare": {1: point(1000.0, 0.5, 1.0, 2500), 64: point(4000.0, 15.0, 30.0, 10000)},
        "r1": {1: point(800.0, 0.6, 1.5, 2000), 64: point(3000.0, 20.0, 40.0, 7500)},
        "r3": {1: point(500.0, 1.0, 3.0, 1250), 64: point(2600.0, 25.0, 60.0, 6500)},
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
    assert result["outage_sigkill_median_s"] == 1.0
    assert result["outage_graceful_max_s"] == 0.2
    assert result["join_seconds"] == 1.5
    assert result["bytes_per_call_ratio_large_to_small"] == 1.05
    # One JSON object on one line, as the bench prints it last.
    line = json.dumps(result, sort_keys=True)
    assert "\n" not in line and json.loads(line) == result
    assert bench.table(result).startswith("(a)")


def test_parts_not_measured_are_absent_not_invented() -> None:
    bench = load_bench()
    point = bench.LoadResult(100.0, 1.0, 2.0, 250)
    result = bench.summary({"bare": {64: point}, "r1": {64: point}, "r3": {64: point}})
    assert set(bench.REQUIRED_KEYS) <= set(result)
    assert not any(key.startswith(("outage_", "join_", "bytes_per_call")) for key in result)


def test_percentile_is_a_real_sample() -> None:
    bench = load_bench()
    samples = [float(n) for n in range(1, 101)]
    assert bench.percentile(samples, 0.5) == 50.0
    assert bench.percentile(samples, 0.99) == 99.0
    assert bench.percentile([3.0], 0.99) == 3.0
