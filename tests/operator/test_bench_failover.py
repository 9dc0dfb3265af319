"""`bench/failover.py` ends with one JSON object; the bench itself (a dev cluster, the
operator, ten SIGKILLs) is too heavy and too noisy for CI, so this checks only the pure
summary builder."""

from __future__ import annotations

import json

import pytest

from tests.bench_modules import load_bench

pytestmark = pytest.mark.unit


def test_summary_has_the_keys_of_the_last_line() -> None:
    bench = load_bench("failover")
    result = bench.summary([1.2, 0.4, 0.9], 15)
    assert set(result) == set(bench.REQUIRED_KEYS)
    assert result == {"trials": 3, "outage_min": 0.4, "outage_median": 0.9,
                      "outage_max": 1.2, "lease_duration_seconds": 15}
    assert json.loads(json.dumps(result)) == result


def test_summary_without_a_trial_makes_no_number_up() -> None:
    result = load_bench("failover").summary([], 15)
    assert result["trials"] == 0 and result["outage_median"] is None


def test_the_late_kubelets_figures_stand_next_to_the_instant_ones() -> None:
    result = load_bench("failover").summary([0.2, 0.1, 0.3], 15, [1.1, 0.7, 0.9], 1.0)
    assert set(load_bench("failover").REQUIRED_KEYS) <= set(result)
    assert (result["outage_median"], result["relist_outage_median"]) == (0.2, 0.9)
    assert result["relist_trials"] == 3 and result["relist_period_seconds"] == 1.0
    assert "next relist" in load_bench("failover").report(result)
