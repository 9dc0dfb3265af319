"""The one way tests and benchmarks wait: poll a condition until it holds or a deadline passes.

A bare sleep either waits too long (slow suite) or not long enough (flaky suite); a condition with
a deadline waits exactly as long as needed and, when it fails, says what it was waiting for.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T],
    timeout: float,
    interval: float = 0.1,
    message: str = "",
    *,
    retry_on: tuple[type[BaseException], ...] = (),
) -> T:
    """Poll until `condition()` is truthy and return its value; at the deadline, fail with
    `message` and the last value (or error) seen.

    `retry_on` names exceptions that mean "not yet" (a server still starting refuses
    connections); any other exception propagates at once, since it is a real failure.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = condition()
        except retry_on as error:
            last = error
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s: {message} (last: {last!r})")
        time.sleep(interval)


async def wait_for_async(
    condition: Callable[[], T | Awaitable[T]],
    timeout: float,
    interval: float = 0.05,
    message: str = "",
) -> T:
    """`wait_for` inside an event loop: yields to the loop between polls instead of blocking it.
    `condition` may be a plain function or return an awaitable."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        value = condition()
        last = await value if isinstance(value, Awaitable) else value
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s: {message} (last: {last!r})")
        await asyncio.sleep(interval)
