"""`gencluster dev` argument parsing: options where a user types them."""

from __future__ import annotations

from pathlib import Path

import pytest
from gencluster_dev.cli import DEFAULT_DIR, build_parser

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("argv", [
    ["fault", "--dir", "/tmp/x", "kill", "id-server-0"],
    ["fault", "kill", "id-server-0", "--dir", "/tmp/x"],
    ["fault", "kill", "--dir", "/tmp/x", "id-server-0"],
])
def test_fault_takes_dir_before_or_after_the_verb(argv: list[str]) -> None:
    arguments = build_parser().parse_args(argv)
    assert (arguments.fault, arguments.pod, arguments.dir) == ("kill", "id-server-0",
                                                               Path("/tmp/x"))


def test_fault_without_dir_uses_the_default_and_every_kind_takes_it_after() -> None:
    assert build_parser().parse_args(["fault", "heal"]).dir == DEFAULT_DIR
    arguments = build_parser().parse_args(["fault", "partition", "a", "b", "--dir", "/d"])
    assert (arguments.pod_a, arguments.pod_b, arguments.dir) == ("a", "b", Path("/d"))
    assert build_parser().parse_args(["fault", "heal", "--dir", "/d"]).dir == Path("/d")
