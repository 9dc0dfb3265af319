"""The one way tests and benchmarks wait: poll a condition until it holds or a deadline passes.

A bare sleep either waits too long (slow suite) or not long enough (flaky suite); a condition with
a deadline waits exactly as long as needed and, when it fails, says what it was waiting for.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


Message = str | Callable[[], str]
"""What a timeout says: a string, or a function called only at the deadline, so diagnostics
(a process's output, a cluster's status) describe the moment of failure and cost nothing on
success."""


def _text(message: Message) -> str:
    return message() if callable(message) else message


def wait_for(
    condition: Callable[[], T],
    timeout: float,
    interval: float = 0.1,
    message: Message = "",
    *,
    retry_on: tuple[type[BaseException], ...] = (),
) -> T:
    """Poll until `condition()` is truthy and return its value; at the deadline, fail with
    `message` and the last value (or error) seen.

    `retry_on` names exceptions that mean "not yet" (a server still starting refuses
    connections); any other exception propagates at once, since it is a real failure.
    """
    deadline = time.monotonic() + timeout
    while True:
        last: object
        try:
            value = condition()
        except retry_on as error:
            last = error
        else:
            if value:
                return value
            last = value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s: {_text(message)} (last: {last!r})"
            )
        time.sleep(interval)


async def wait_for_async(
    condition: Callable[[], T],
    timeout: float,
    interval: float = 0.05,
    message: Message = "",
) -> T:
    """`wait_for` inside an event loop: yields to the loop between polls instead of blocking
    it, so the code under test (on the same loop) makes progress."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s: {_text(message)} (last: {value!r})"
            )
        await asyncio.sleep(interval)
