"""The validated configuration of one runtime process (built by `gencluster run`), apart from
the node so that every piece of the node can read it without importing the node."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gencluster.acks import ReplicationMode
from gencluster.codec import DEFAULT_MAX_BYTES
from gencluster.election import ElectionConfig
from gencluster.replies import DEFAULT_DEDUPLICATION_WINDOW_SECONDS, DEFAULT_MAX_REPLY_BYTES
from gencluster.roles import PartitionPolicy
from gencluster.term import DEFAULT_MAX_SUBSCRIBERS

if TYPE_CHECKING:
    from gencluster.tls import TlsSettings


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """Everything `gencluster run` validated (docs/runtime-config.md)."""

    identity: str
    namespace: str
    pod_ip: str
    listen_host: str
    port: int
    metrics_port: int
    server_spec: str
    args: Any
    cluster: str
    pod_selector: str
    peer_token: str
    lease_name: str
    election: ElectionConfig
    mode: ReplicationMode
    min_sync_standbys: int
    partition_policy: PartitionPolicy
    kubeconfig: str | None
    codec: str = "json"
    deduplication_window: float = DEFAULT_DEDUPLICATION_WINDOW_SECONDS
    """Seconds a request id is remembered for exactly-once retries (the reply table's
    window; it must be the same on every replica, as the operator sets it)."""
    max_message_bytes: int = DEFAULT_MAX_BYTES
    """The codec's limit on one request, reply or event (docs/limits.md)."""
    reply_table_max_bytes: int = DEFAULT_MAX_REPLY_BYTES
    """The reply table's byte bound; like the window, the same on every replica."""
    data_dir: str | None = None
    """Where the log and snapshots live (GENCLUSTER_DATA_DIR, resolved on the local
    control plane); None: the state lives in memory only."""
    max_subscribers: int = DEFAULT_MAX_SUBSCRIBERS
    """Subscribe streams the active serves at once (GENCLUSTER_MAX_SUBSCRIBERS; the next gets
    RESOURCE_EXHAUSTED)."""
    tls: TlsSettings | None = None
    """TLS on the client port and mutual TLS on the peer port (`gencluster.tls`); None:
    plaintext on one port, Peer and Admin calls authenticated by the peer token."""

    @property
    def advertise_address(self) -> str:
        return host_port(self.pod_ip, self.port)

    @property
    def heartbeat_interval(self) -> float:
        """How often an idle active sends a heartbeat batch; a standby gives up on a stream
        after four of silence."""
        return max(0.1, self.election.retry_period / 2)


def host_port(host: str, port: int) -> str:
    """`host:port`, with IPv6 addresses in brackets."""
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]:{port}"
    except ValueError:
        pass
    return f"{host}:{port}"
