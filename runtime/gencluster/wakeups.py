"""Waking asyncio tasks: bounded waits and one-to-many notifications, shared by the runtime's
shells so each subtle rule about them is written once."""

from __future__ import annotations

import asyncio


async def set_within(event: asyncio.Event, timeout: float) -> bool:
    """Wait until `event` is set (True) or `timeout` passed (False).

    `asyncio.timeout`, not `asyncio.wait_for`: on Python 3.11, wait_for swallows a
    cancellation that arrives as the event is set. That happens when a replica reads the Lease
    in its own name (waking the follower's back-off) and takes the lead, cancelling the
    follower at once: the follower then looped on and the election waited for it forever
    (graceful handovers stalled until the Lease expired). Every event wait of the runtime goes
    through here."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True


class Notifier:
    """Wakes every listener at once (asyncio.Event per listener, so none clears another's)."""

    def __init__(self) -> None:
        self._events: set[asyncio.Event] = set()

    def listen(self) -> asyncio.Event:
        event = asyncio.Event()
        self._events.add(event)
        return event

    def forget(self, event: asyncio.Event) -> None:
        self._events.discard(event)

    def notify(self) -> None:
        for event in self._events:
            event.set()
