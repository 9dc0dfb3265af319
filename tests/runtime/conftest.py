"""Fixtures for the runtime's pure core."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from gencluster.codec import JsonCodec

EXAMPLES_ROOT = Path(__file__).resolve().parents[2] / "examples"

if importlib.util.find_spec("gencluster_examples") is None:
    # Until `examples` is listed in pyproject's package roots (and the editable install is
    # refreshed), make the example package importable the way a pod's PYTHONPATH would.
    sys.path.insert(0, str(EXAMPLES_ROOT))


@pytest.fixture
def json_codec() -> JsonCodec:
    return JsonCodec()
