"""End to end: the chat example split by a real isolation and merged, watched by subscribers on
both sides (docs/partitions.md, "Subscribers across a merge").

A chat ClusteredServer (3 replicas, `partitionPolicy: Available`) runs with the operator on the
local control plane. Two subscribers follow the room through the active from the start; the
active is isolated (nftables); once the other side has its own active, two more subscribers
follow the room there from its first event. Both sides post during the split; the fault is
healed, the operator merges, both sides post again, and a last message closes the run. Then
every subscriber's messages are checked: every acknowledged message exactly once, nothing
else, each side's messages in that side's order, and the merged side's subscribers saw the
`renumbered` signal while the survivor's did not.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from gencluster.client import Client, ClusterUnavailable, Event
from gencluster.proto import gencluster_pb2 as pb
from gencluster_testing.devcluster_process import DevClusterProcess
from gencluster_testing.operator_process import OperatorProcess, create_namespace, namespace_for
from gencluster_testing.partitions.available_run import DEADLINE, POLL, AvailableIdServer
from gencluster_testing.partitions.cluster import PORT, id_server_manifest
from gencluster_testing.waiting import wait_for

pytestmark = pytest.mark.fault

REPLICATION: dict[str, Any] | None = None
"""None: no `replication` field, the CRD's default (Sync, minSyncStandbys 1), as
examples/chat.yaml; the isolated Available active acknowledges in degraded Sync (issue #13)."""
SERVER = "gencluster_examples.chat:ChatServer"
ROOM = "lobby"
TOPIC = f"room:{ROOM}"
PER_PHASE = 6
"""Messages each side posts in each phase (before the split, during it, after the merge)."""


@dataclass
class Watcher:
    """One subscription in a thread: every event it delivered, in order."""

    name: str
    addresses: str
    events: list[Event] = field(default_factory=list)
    error: BaseException | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    client: Client | None = None

    def start(self) -> None:
        self.client = Client(self.addresses, timeout=DEADLINE)
        threading.Thread(target=self._run, daemon=True, name=self.name).start()

    def _run(self) -> None:
        assert self.client is not None
        try:
            for event in self.client.subscribe(TOPIC, from_event=1):
                with self.lock:
                    self.events.append(event)
        except BaseException as error:  # reported by the test, never swallowed
            self.error = error

    def texts(self) -> list[str]:
        with self.lock:
            return [e.data["text"] for e in self.events if e.data.get("type") == "message"]

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()


@dataclass
class Poster:
    """Posts numbered messages as one user through one address; remembers what was
    acknowledged and what may or may not have been applied (a call without an answer)."""

    user: str
    addresses: str
    acknowledged: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)

    def post(self, prefix: str, count: int) -> None:
        with Client(self.addresses, timeout=15) as client:
            for index in range(count):
                text = f"{self.user}:{prefix}:{index}"
                try:
                    client.call({"op": "say", "room": ROOM, "user": self.user, "text": text})
                except ClusterUnavailable:
                    self.unknown.append(text)
                else:
                    self.acknowledged.append(text)

    def join(self) -> None:
        with Client(self.addresses, timeout=15) as client:
            client.call({"op": "join", "room": ROOM, "user": self.user})


class VerbWatcher:
    """`gencluster subscribe --address ADDRESS --from 1 TOPIC` as a user runs it: its stdout
    lines (one JSON event each) and its stderr, read by threads."""

    def __init__(self, address: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gencluster.cli", "subscribe", "--address", address,
             "--from", "1", "--timeout", str(DEADLINE), TOPIC],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.lines: list[str] = []
        self.notes: list[str] = []
        self.lock = threading.Lock()
        for stream, into in ((self.process.stdout, self.lines), (self.process.stderr,
                                                                   self.notes)):
            threading.Thread(target=self._read, args=(stream, into), daemon=True).start()

    def _read(self, stream: Any, into: list[str]) -> None:
        for line in stream:
            with self.lock:
                into.append(line.rstrip("\n"))

    name = "gencluster-subscribe"

    @property
    def error(self) -> str | None:
        """Set once the command ended by itself (it should run until stopped)."""
        code = self.process.poll()
        with self.lock:
            return None if code is None else f"exited {code}: {self.notes[-5:]}"

    def events(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(line) for line in self.lines]

    def texts(self) -> list[str]:
        return [e["data"]["text"] for e in self.events() if e["data"].get("type") == "message"]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


@pytest.fixture
def namespace(request: pytest.FixtureRequest) -> str:
    return namespace_for(request.node.name)


@pytest.fixture
def chat(
    dev_cluster: DevClusterProcess, operator: OperatorProcess, namespace: str
) -> Iterator[AvailableIdServer]:
    resource = json.loads(id_server_manifest("Available", REPLICATION))
    if REPLICATION is None:
        del resource["spec"]["replication"]
    resource["spec"]["server"] = SERVER
    create_namespace(dev_cluster, namespace)
    dev_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(resource))
    server = AvailableIdServer(dev_cluster, namespace)
    try:
        server.wait_settled(90.0)
        yield server
    finally:
        server.heal()
        dev_cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def in_order(received: list[str], order: list[str]) -> bool:
    """Whether the messages of `order` appear in `received` in that order."""
    wanted = set(order)
    return [text for text in received if text in wanted] == [t for t in order if t in received]


def test_every_subscriber_gets_every_message_of_both_sides_once_across_the_merge(
    chat: AvailableIdServer,
) -> None:
    settled = chat.wait_settled(DEADLINE)
    loser = next(pod for pod, status in settled.items() if status.role == pb.ROLE_ACTIVE)
    loser_epoch = settled[loser].epoch
    others = [pod for pod in chat.pod_names() if pod != loser]
    loser_address = f"{chat.ip(loser)}:{PORT}"
    others_addresses = ",".join(f"{chat.ip(pod)}:{PORT}" for pod in others)
    isolated_side, other_side = Poster("ann", loser_address), Poster("bob", others_addresses)
    watchers = [Watcher(f"isolated-{i}", loser_address) for i in range(2)]
    verb = VerbWatcher(loser_address)
    try:
        for poster in (isolated_side, other_side):
            poster.join()
        for watcher in watchers:
            watcher.start()
        isolated_side.post("before", PER_PHASE)
        other_side.post("before", PER_PHASE)

        chat.fault("isolate", loser)
        assert chat.probe_as(loser, chat.ip(others[0]), PORT) == "timeout"

        def elected() -> pb.StatusReply | None:
            for pod in others:
                status = chat.admin_status(pod)
                if status and status.role == pb.ROLE_ACTIVE and status.epoch > loser_epoch:
                    return status
            return None

        winner = wait_for(elected, DEADLINE, interval=POLL,
                          message=lambda: f"the other side's active\n{chat.diagnostics()}")
        # Started only now: before, a standby would redirect them to the isolated active.
        other_watchers = [Watcher(f"others-{i}", others_addresses) for i in range(2)]
        for watcher in other_watchers:
            watcher.start()
        watchers += other_watchers
        split = [threading.Thread(target=poster.post, args=("split", PER_PHASE))
                 for poster in (isolated_side, other_side)]
        for thread in split:
            thread.start()
        for thread in split:
            thread.join()
        status = chat.admin_status(loser)
        assert status is not None and (status.role, status.epoch) == (pb.ROLE_ACTIVE, loser_epoch)
        assert isolated_side.acknowledged and other_side.acknowledged

        chat.dev.gencluster("dev", "fault", "--dir", str(chat.dev.dir), "heal")
        wait_for(lambda: chat.merges() >= 1, DEADLINE, interval=POLL,
                 message=lambda: f"a merge after the heal\n{chat.diagnostics()}")
        isolated_side.post("after", PER_PHASE)
        other_side.post("after", PER_PHASE)
        closing = Poster("bob", others_addresses)
        closing.post("closing", 1)
        assert closing.acknowledged, "the closing message"
        # Streams are ordered: once every subscriber has the closing message, it has been
        # delivered everything published before it.
        wait_for(lambda: all(closing.acknowledged[0] in w.texts() or w.error
                             for w in [*watchers, verb]),
                 DEADLINE, interval=POLL,
                 message=lambda: "every subscriber receives the closing message: " + "; ".join(
                     f"{w.name}: {len(w.texts())} messages, error {w.error!r}"
                     for w in watchers))
    finally:
        for watcher in watchers:
            watcher.stop()
        verb.stop()

    for watcher in watchers:
        assert watcher.error is None, (watcher.name, watcher.error)
    assert verb.process.returncode in (0, -15), verb.notes  # ended by our terminate
    acknowledged = [*isolated_side.acknowledged, *other_side.acknowledged, *closing.acknowledged]
    unknown = set(isolated_side.unknown) | set(other_side.unknown)
    sides = {"isolated": isolated_side.acknowledged, "others": other_side.acknowledged}
    merged_side = {w.name for w in watchers if any(e.renumbered for e in w.events)}
    report = {w.name: w.texts() for w in [*watchers, verb]}
    for watcher in [*watchers, verb]:
        received = watcher.texts()
        counts = {text: received.count(text) for text in received}
        assert all(counts.get(text) == 1 for text in acknowledged), (watcher.name, report)
        assert all(count == 1 for count in counts.values()), (watcher.name, report)
        assert set(received) <= set(acknowledged) | unknown, (watcher.name, report)
        for side, order in sides.items():
            assert in_order(received, order), (watcher.name, side, report)
    final = chat.wait_settled(DEADLINE)
    survivor = next(pod for pod, status in final.items() if status.role == pb.ROLE_ACTIVE)
    losing = "isolated" if survivor != loser else "others"
    assert merged_side == {w.name for w in watchers if w.name.startswith(losing)}, merged_side
    # The verb followed the isolated side: it shows the signal where that side lost the merge.
    marked = [e["number"] for e in verb.events() if e.get("renumbered")]
    assert len(marked) == (1 if losing == "isolated" else 0), verb.events()
    assert len([n for n in verb.notes if "numbering changed" in n]) == len(marked), verb.notes
    history = Client(f"{chat.ip(survivor)}:{PORT}", timeout=10)
    with history:
        messages = history.call({"op": "history", "room": ROOM})
    assert {m["text"] for m in messages} >= set(acknowledged)
    print(f"winner {winner.identity}, survivor {survivor}, loser {loser}; "
          f"{len(acknowledged)} acknowledged, {len(unknown)} unknown; merged side {losing}")

