"""The chat example on three replicas: subscribers (blocking and asyncio clients) receive every
message exactly once, in order, across a SIGKILL of the active."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from gencluster import AsyncClient, Client, RemoteError
from gencluster_testing.devcluster_process import DevClusterProcess
from gencluster_testing.waiting import wait_for

from tests.runtime.test_cluster_idserver import IdCluster

pytestmark = pytest.mark.integration

ROOM = "lobby"
WARM_UP = "warm-up"
TOPIC = f"room:{ROOM}"
MESSAGES = 120


@pytest.fixture(scope="module")
def chat(dev_cluster: DevClusterProcess) -> Iterator[IdCluster]:
    group = IdCluster(
        dev_cluster,
        "chat",
        secrets.token_urlsafe(32),
        3,
        server="gencluster_examples.chat:ChatServer",
    )
    group.create()
    group.ready_cluster()
    yield group


class Collector:
    """Events of one subscription, gathered by a background thread."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.error: BaseException | None = None
        self.lock = threading.Lock()

    def add(self, event: Any) -> None:
        with self.lock:
            self.events.append(event)

    def messages(self) -> list[str]:
        """The test's messages, without the warm-up ones sent until every subscriber listens."""
        with self.lock:
            return [
                e.data["text"]
                for e in self.events
                if e.data["type"] == "message" and e.data["text"] != WARM_UP
            ]


def subscribe_blocking(client: Client, collector: Collector) -> None:
    try:
        for event in client.subscribe(TOPIC, from_event=1):
            collector.add(event)
    except BaseException as error:
        collector.error = error


def subscribe_async(addresses: str, collector: Collector, stop: threading.Event) -> None:
    async def run() -> None:
        async with AsyncClient(addresses, timeout=30) as client:

            async def consume() -> None:
                async for event in client.subscribe(TOPIC):
                    collector.add(event)

            consumer = asyncio.create_task(consume())
            while not stop.is_set() and not consumer.done():
                await asyncio.sleep(0.1)  # polls a flag set from another thread: no deadline,
                # the test decides when the subscription ends
            if consumer.done():
                consumer.result()
            consumer.cancel()

    try:
        asyncio.run(run())
    except BaseException as error:
        collector.error = error


def test_subscribers_get_every_message_once_across_a_failover(chat: IdCluster) -> None:
    old_active = chat.ready_cluster()
    addresses = chat.addresses()
    client = Client(addresses, timeout=30)
    client.call({"op": "join", "room": ROOM, "user": "ann"})
    blocking, live = Collector(), Collector()
    subscriber = Client(addresses, timeout=30)
    stop = threading.Event()
    threads = [
        threading.Thread(target=subscribe_blocking, args=(subscriber, blocking), daemon=True),
        threading.Thread(target=subscribe_async, args=(addresses, live, stop), daemon=True),
    ]
    for thread in threads:
        thread.start()
    wait_for(lambda: blocking.events, 20, 0.05, "the joined event")

    def live_subscriber_listens() -> bool:
        # The asyncio subscriber takes live events only: it must be subscribed before the
        # test's messages start, or it would rightly miss the first ones.
        client.call({"op": "say", "room": ROOM, "user": "ann", "text": WARM_UP}, timeout=30)
        return bool(live.events)

    wait_for(live_subscriber_listens, 20, 0.2, "the asyncio subscriber to listen")
    texts = [f"message {n}" for n in range(MESSAGES)]
    for number, text in enumerate(texts):
        if number == MESSAGES // 3:
            chat.dev.gencluster("dev", "fault", "--dir", str(chat.dev.dir), "kill", old_active)
        client.call({"op": "say", "room": ROOM, "user": "ann", "text": text}, timeout=30)
    try:
        wait_for(lambda: len(blocking.messages()) >= MESSAGES or blocking.error, 30, 0.1,
                 "every message at the blocking subscriber")
        wait_for(lambda: len(live.messages()) >= MESSAGES or live.error, 30, 0.1,
                 "every message at the asyncio subscriber")
    finally:
        stop.set()
        subscriber.close()
    assert blocking.error is None and live.error is None, (blocking.error, live.error)
    assert chat.holder() != old_active
    # Exactly once and in order, for the subscriber that started from event 1...
    assert blocking.messages() == texts
    assert [event.number for event in blocking.events] == list(
        range(1, len(blocking.events) + 1)
    )
    # ...and for the one that subscribed to live events only: a suffix, without gaps.
    live_numbers = [event.number for event in live.events]
    assert live_numbers == list(range(live_numbers[0], live_numbers[0] + len(live_numbers)))
    assert live.messages() == texts[len(texts) - len(live.messages()):]
    assert len(live.messages()) == MESSAGES

    async def history_through_the_asyncio_client() -> Any:
        async with AsyncClient(addresses, timeout=30) as async_client:
            return await async_client.call({"op": "history", "room": ROOM})

    history = asyncio.run(history_through_the_asyncio_client())
    assert [message["text"] for message in history if message["text"] != WARM_UP][-100:] == (
        texts[-100:]
    )
    # A handler that raises (bob never joined) answers an error and changes nothing.
    with pytest.raises(RemoteError) as raised:
        client.call({"op": "say", "room": ROOM, "user": "bob", "text": "hi"})
    assert raised.value.type == "PermissionError"
    assert client.call({"op": "history", "room": ROOM}) == history


class Lines:
    """A subprocess's stdout lines, read by a thread (so waiting for one has a deadline)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: list[str] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self.lock:
                self.lines.append(line.rstrip("\n"))

    def snapshot(self) -> list[str]:
        with self.lock:
            return list(self.lines)


def test_the_subscribe_verb_and_the_chat_client_follow_a_room_across_a_failover(
    chat: IdCluster,
) -> None:
    """`gencluster subscribe --address ... room:R` prints one JSON line per event, and
    `python -m gencluster_examples.chat.client R NICK` posts stdin lines and prints the room;
    both keep going across a SIGKILL of the active."""
    old_active = chat.ready_cluster()
    addresses = chat.addresses()
    room = "cli"
    watcher = subprocess.Popen(
        [sys.executable, "-m", "gencluster.cli", "subscribe", "--address", addresses,
         "--from", "1", f"room:{room}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    talker = subprocess.Popen(
        [sys.executable, "-m", "gencluster_examples.chat.client", room, "cy",
         "--address", addresses],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    watched, talked = Lines(watcher), Lines(talker)
    assert talker.stdin is not None
    try:
        wait_for(lambda: any(line.startswith("-- joined cli") for line in talked.snapshot()),
                 30, 0.05, "the chat client joined")
        for index in range(3):
            talker.stdin.write(f"hello {index}\n")
        talker.stdin.flush()
        wait_for(lambda: "<cy> hello 2" in talked.snapshot(), 30, 0.05, "the chat client's echo")
        chat.dev.gencluster("dev", "fault", "--dir", str(chat.dev.dir), "kill", old_active)
        talker.stdin.write("after the failover\n")
        talker.stdin.close()
        assert talker.wait(60) == 0, talker.stderr.read() if talker.stderr else ""
        wait_for(lambda: len(watched.snapshot()) >= 6, 30, 0.05,
                 lambda: f"every event at the subscribe verb: {watched.snapshot()}")
    finally:
        watcher.terminate()
        watcher.wait(30)
        if talker.poll() is None:
            talker.kill()
            talker.wait(30)
    events = [json.loads(line) for line in watched.snapshot()]
    assert [event["number"] for event in events] == list(range(1, len(events) + 1))
    assert [(e["data"]["type"], e["data"].get("text")) for e in events] == [
        ("joined", None), ("message", "hello 0"), ("message", "hello 1"),
        ("message", "hello 2"), ("message", "after the failover"), ("left", None),
    ]
    assert events[-1]["epoch"] > events[0]["epoch"]  # the last ones came from the new active
    assert not any(event.get("renumbered") for event in events)
    assert "<cy> after the failover" in talked.snapshot()
