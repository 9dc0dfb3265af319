"""The standby's concerns of the node: what the `Follower` reports, as role events.

Part of the `node.Node` façade (see node_state.py for how it is spread over files).
"""

from __future__ import annotations

from dataclasses import replace

from gencluster import roles
from gencluster.log import Snapshot
from gencluster.node_state import NodeState
from gencluster.replica import Replica


class FollowingReports(NodeState):
    """The `FollowerHost` side of the node. A report can arrive after the role stopped
    following (a stream ends asynchronously after its cancellation), so each checks the role
    before it becomes an event: `roles.transition` treats such an event as a bug."""

    def follows(self) -> bool:
        return roles.follows(self._role)

    def follow_override(self) -> str | None:
        return roles.follow_override(self._role)

    def lease_holder(self) -> str:
        holder = self.elector.holder
        return "" if holder == self.config.identity else holder

    def joined(self, snapshot: Snapshot) -> Replica:
        self._replica = self._persisted(
            Replica.from_snapshot(
                self.server, self.codec, snapshot, retention=self._retention,
                limits=self._limits,
            )
        )
        self.recovered_from_disk = False
        return self._replica

    def snapshot_needed(self) -> None:
        if roles.follows(self._role):
            self._become(roles.SnapshotNeeded())

    def batch_applied(self, source: str, caught_up: bool) -> None:
        if not self.known_active.reachable:
            self.known_active = replace(self.known_active, reachable=True)
        self.recovered_from_disk = False  # following an active: its log decides
        if roles.follows(self._role):
            self._become(roles.BatchApplied(source, caught_up))

    def source_refused(self, address: str) -> None:
        if roles.follows(self._role):
            self._become(roles.SourceRefused(address))

    def version_refused(self, reason: str) -> None:
        if reason != self.downgrade_refused:
            self.downgrade_refused = reason

    def stream_ended(self) -> None:
        self.known_active = replace(self.known_active, reachable=False)
        self.elector.wake()

    def holder_located(self, holder: str, address: str) -> None:
        if holder == self.known_active.identity:
            self.known_active = replace(self.known_active, address=address)
