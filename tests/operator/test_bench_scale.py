"""`bench/scale.py` ends with one JSON object; the bench itself (a dev cluster, an operator and
up to 90 server pods) is too heavy for CI, so this checks its pure parts: the summary's keys,
the request counter's parsing and who a request is attributed to."""

from __future__ import annotations

import json

import pytest

from tests.bench_modules import load_bench

pytestmark = pytest.mark.unit

OPERATOR = "system:serviceaccount:gencluster-system:gencluster"


def test_summary_has_the_keys_of_the_last_line() -> None:
    bench = load_bench("scale")
    one = bench.Step(1, all_ready_seconds=12.0, idle_requests_per_second=3.5,
                     operator_rss_mb=80.0, pod_rss_mb=[90.0, 92.0, 94.0], outages=[0.2])
    ten = bench.Step(10, all_ready_seconds=40.0, idle_requests_per_second=21.5,
                     operator_rss_mb=95.0, pod_rss_mb=[91.0] * 30)
    result = bench.summary([one, ten], 1.5, quick=True)
    assert set(bench.REQUIRED_KEYS) <= set(result)
    assert result["clusters"] == [1, 10]
    assert result["all_ready_seconds"] == [12.0, 40.0]
    # (total at rest - the control plane's own baseline) / clusters
    assert result["api_requests_per_second_per_idle_cluster"] == [2.0, 2.0]
    assert result["pod_rss_mb"] == [92.0, 91.0]
    assert result["outage_sigkill_median_s"] == [0.2, None]
    assert json.loads(json.dumps(result)) == result
    assert "baseline" in bench.table(result)


def test_a_step_not_measured_makes_no_number_up() -> None:
    result = load_bench("scale").summary([load_bench("scale").Step(5)], None, quick=True)
    assert result["api_requests_per_second_per_idle_cluster"] == [None]
    assert result["pod_rss_mb"] == [None]


def test_request_rates_by_source_leave_the_benchs_own_reads_out() -> None:
    bench = load_bench("scale")
    text = "\n".join([
        "# TYPE apiserver_request_total counter",
        'apiserver_request_total{verb="UPDATE",resource="leases",code="200",'
        'username="system:serviceaccount:default:s0",client="gencluster"} 30',
        'apiserver_request_total{verb="PATCH",resource="clusteredservers/status",code="200",'
        f'username="{OPERATOR}",client="kopf"}} 10',
        'apiserver_request_total{verb="GET",resource="",code="200",'
        'username="admin",client="kubectl"} 7',
        'apiserver_request_total{verb="PATCH",resource="pods/status",code="200",'
        'username="admin",client="Python"} 4',
    ])
    after = bench.parse_request_counts(text)
    before = {key: value / 2 for key, value in after.items()}
    by_source, by_verb = bench.rates(before, after, 5.0, OPERATOR)
    assert by_source == {"pods": 3.0, "operator": 1.0, "control_plane": 0.4}
    assert by_verb["pods UPDATE leases"] == 3.0
    assert not any(label.startswith("bench") for label in by_verb)
