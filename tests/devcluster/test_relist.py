"""`gencluster dev up --relist-period`: the dev kubelet can report a container's death as late
as a real kubelet's PLEG would (the next relist), so failover benches can show both figures."""

from __future__ import annotations

import argparse

import pytest
from gencluster_dev.cli import non_negative_seconds
from gencluster_dev.node.podspec import relist_delay

pytestmark = pytest.mark.unit


def test_no_period_reports_at_once() -> None:
    assert relist_delay(12.34, 0.0) == 0.0


@pytest.mark.parametrize(("now", "expected"), [(10.25, 0.75), (10.0, 1.0), (10.999, 0.001)])
def test_a_death_waits_for_the_next_relist_tick(now: float, expected: float) -> None:
    assert relist_delay(now, 1.0) == pytest.approx(expected)


def test_every_delay_is_within_one_period() -> None:
    delays = [relist_delay(t / 100, 1.0) for t in range(1000)]
    assert all(0 < d <= 1.0 for d in delays)


@pytest.mark.parametrize("text", ["-1", "nan", "inf", "soon"])
def test_a_bad_period_is_a_clear_error(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        non_negative_seconds(text)


def test_a_period_in_seconds() -> None:
    assert non_negative_seconds("1") == 1.0
    assert non_negative_seconds("0") == 0.0
