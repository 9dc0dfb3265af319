"""Fixtures for the runtime's pure core."""

from __future__ import annotations

import pytest
from gencluster.codec import JsonCodec


@pytest.fixture
def json_codec() -> JsonCodec:
    return JsonCodec()
