"""The `gencluster` command's entry: the images' ENTRYPOINT is `gencluster`, so
`podman run IMAGE gencluster --help` hands it its own name first; that is accepted."""

from __future__ import annotations

import pytest
from gencluster.cli import main

pytestmark = pytest.mark.unit


def test_the_commands_own_name_first_is_accepted(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gencluster", "--help"]) == 0
    assert "usage: gencluster COMMAND" in capsys.readouterr().out
    assert main(["--help"]) == 0
    assert main(["gencluster", "nonsense"]) == 2
    assert "unknown command 'nonsense'" in capsys.readouterr().err
