"""`gencluster run`: the runtime process of one pod (docs/runtime-config.md is the contract).

Configuration comes from environment variables, each with a flag that wins over it. Every
value is validated before anything starts; an invalid or missing one exits with code 78
(EX_CONFIG) and a last line of stderr that names the variable, which the operator turns into
a Degraded/ServerNotRunnable condition instead of a silent crash loop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import ipaddress
import json
import logging
import os
import signal
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from gencluster.acks import ReplicationMode
from gencluster.codec import DEFAULT_MAX_BYTES
from gencluster.election import ElectionConfig, lease_timing_problems
from gencluster.elector import ServerInitFailed
from gencluster.limits import (
    MAX_MESSAGE_BYTES,
    MAX_REPLY_TABLE_BYTES,
    MIN_MESSAGE_BYTES,
    MIN_REPLY_TABLE_BYTES,
)
from gencluster.node import Node
from gencluster.node_config import NodeConfig
from gencluster.replication import COUNTERS
from gencluster.replies import DEFAULT_MAX_REPLY_BYTES
from gencluster.roles import PartitionPolicy
from gencluster.server import GenServer, ServerLoadError, load_server_class
from gencluster.term import DEFAULT_MAX_SUBSCRIBERS

if TYPE_CHECKING:
    import grpc
    from prometheus_client.metrics_core import Metric

    from gencluster.admin_http import AdminHttp
    from gencluster.services import HealthReporter
    from gencluster.tls import TlsSettings

EX_CONFIG = 78
EX_IOERR = 74
"""The exit code of a replica whose volume failed (sysexits' EX_IOERR): the operator reports
it as `VolumeFailed` (docs/durability.md)."""
TERMINATION_LOG = Path("/dev/termination-log")
MIN_PEER_TOKEN_LENGTH = 32
DRAIN_SECONDS = 0.5

log = logging.getLogger("gencluster.run")


class ConfigError(Exception):
    """A configuration that cannot run; the message names the variable."""


# (variable, flag, default) for every setting; the flag's dest is the variable's name.
SETTINGS: tuple[tuple[str, str, str | None], ...] = (
    ("POD_NAME", "--pod-name", None),
    ("POD_NAMESPACE", "--namespace", None),
    ("POD_UID", "--pod-uid", ""),
    ("POD_IP", "--pod-ip", None),
    ("GENCLUSTER_LISTEN_HOST", "--listen-host", None),
    ("GENCLUSTER_SERVER", "--server", None),
    ("GENCLUSTER_ARGS", "--args", "{}"),
    ("GENCLUSTER_PORT", "--port", "50051"),
    ("GENCLUSTER_METRICS_PORT", "--metrics-port", "9090"),
    ("GENCLUSTER_CLUSTER", "--cluster", ""),
    ("GENCLUSTER_POD_SELECTOR", "--pod-selector", None),
    ("GENCLUSTER_PEER_SERVICE", "--peer-service", ""),
    ("GENCLUSTER_LEASE_NAME", "--lease-name", None),
    ("GENCLUSTER_LEASE_DURATION_SECONDS", "--lease-duration-seconds", "15"),
    ("GENCLUSTER_RENEW_DEADLINE_SECONDS", "--renew-deadline-seconds", "10"),
    ("GENCLUSTER_RETRY_PERIOD_SECONDS", "--retry-period-seconds", "2"),
    ("GENCLUSTER_REPLICATION_MODE", "--replication-mode", "Sync"),
    ("GENCLUSTER_MIN_SYNC_STANDBYS", "--min-sync-standbys", "1"),
    ("GENCLUSTER_PARTITION_POLICY", "--partition-policy", "Fenced"),
    ("GENCLUSTER_DEDUPLICATION_WINDOW_SECONDS", "--deduplication-window-seconds", "300"),
    ("GENCLUSTER_MAX_MESSAGE_BYTES", "--max-message-bytes", str(DEFAULT_MAX_BYTES)),
    ("GENCLUSTER_REPLY_TABLE_MAX_BYTES", "--reply-table-max-bytes", str(DEFAULT_MAX_REPLY_BYTES)),
    ("GENCLUSTER_DATA_DIR", "--data-dir", None),
    ("GENCLUSTER_MAX_SUBSCRIBERS", "--max-subscribers", str(DEFAULT_MAX_SUBSCRIBERS)),
    ("GENCLUSTER_TLS_DIR", "--tls-dir", None),
    ("GENCLUSTER_PEER_PORT", "--peer-port", "50052"),
    ("GENCLUSTER_HEALTH_PORT", "--health-port", "50053"),
    ("GENCLUSTER_PEER_SERVER_NAME", "--peer-server-name", None),
    ("GENCLUSTER_CLIENT_AUTH", "--client-auth", "None"),
    ("KUBECONFIG", "--kubeconfig", None),
)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gencluster run",
        description="Run one replica of a ClusteredServer (see docs/runtime-config.md). Every "
        "flag has an environment variable; the flag wins.",
    )
    for variable, flag, _ in SETTINGS:
        parser.add_argument(flag, dest=variable, help=f"default: ${variable}")
    parser.add_argument(
        "--peer-token-file",
        dest="GENCLUSTER_PEER_TOKEN_FILE",
        help="a file holding the peer token (default: $GENCLUSTER_PEER_TOKEN)",
    )
    return parser


def _required(values: Mapping[str, str | None], name: str) -> str:
    value = values.get(name)
    if value is None or not value.strip():
        raise ConfigError(f"{name} is required (see docs/runtime-config.md)")
    return value.strip()


def _integer(values: Mapping[str, str | None], name: str, minimum: int, maximum: int) -> int:
    text = values.get(name) or ""
    try:
        number = int(text)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {text!r}") from None
    if not minimum <= number <= maximum:
        raise ConfigError(f"{name} must be between {minimum} and {maximum}, got {number}")
    return number


def _address(name: str, text: str) -> str:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ConfigError(f"{name} must be an IPv4 or IPv6 address, got {text!r}") from None
    if address.is_unspecified:
        raise ConfigError(
            f"{name} must not be {text}: a wildcard bind takes the port on every pod's "
            "address on the local control plane; bind the pod's own IP"
        )
    return text


def resolve(argv: list[str], environ: Mapping[str, str]) -> dict[str, str | None]:
    """Flags over environment variables over defaults."""
    arguments = vars(parser().parse_args(argv))
    values: dict[str, str | None] = {}
    for variable, _, default in SETTINGS:
        flag_value = arguments.get(variable)
        values[variable] = flag_value if flag_value is not None else environ.get(variable, default)
    values[DEV_MOUNTS] = environ.get(DEV_MOUNTS)
    token_file = arguments.get("GENCLUSTER_PEER_TOKEN_FILE")
    if token_file:
        try:
            values["GENCLUSTER_PEER_TOKEN"] = Path(token_file).read_text().strip()
        except OSError as error:
            raise ConfigError(f"--peer-token-file {token_file}: {error.strerror}") from None
    else:
        values["GENCLUSTER_PEER_TOKEN"] = environ.get("GENCLUSTER_PEER_TOKEN")
    return values


DEV_MOUNTS = "GENCLUSTER_DEV_MOUNTS"
"""Set by the local control plane's kubelet: JSON {mountPath: host directory}, since its
processes share the host's filesystem (docs/devcluster.md, Volumes)."""


def data_directory(values: Mapping[str, str | None]) -> str | None:
    """GENCLUSTER_DATA_DIR, through the local control plane's mount table when it names a
    mount there; created if missing, and it must be writable."""
    text = (values.get("GENCLUSTER_DATA_DIR") or "").strip()
    if not text:
        return None
    if not os.path.isabs(text):
        raise ConfigError(f"GENCLUSTER_DATA_DIR must be an absolute path, got {text!r}")
    try:
        mounts = json.loads(values.get(DEV_MOUNTS) or "{}")
    except ValueError as error:
        raise ConfigError(f"{DEV_MOUNTS} is not valid JSON: {error}") from None
    if not isinstance(mounts, dict):
        mounts = {}
    path = str(mounts.get(text) or mounts.get(text.rstrip("/")) or text)
    probe = os.path.join(path, ".gencluster-write-probe")
    try:
        os.makedirs(path, exist_ok=True)
        # Writing is the test that counts (os.access judges by the real uid, not the
        # effective one a container runs as).
        with open(probe, "wb") as file:
            file.write(b"probe")
        os.remove(probe)
    except OSError as error:
        raise ConfigError(
            f"GENCLUSTER_DATA_DIR {path} is not writable by this user: {error.strerror}"
        ) from None
    return path


def _mounted(values: Mapping[str, str | None], path: str) -> str:
    """`path` through the local control plane's mount table when it names a mount there."""
    try:
        mounts = json.loads(values.get(DEV_MOUNTS) or "{}")
    except ValueError as error:
        raise ConfigError(f"{DEV_MOUNTS} is not valid JSON: {error}") from None
    if not isinstance(mounts, dict):
        return path
    return str(mounts.get(path) or mounts.get(path.rstrip("/")) or path)


def tls_settings(
    values: Mapping[str, str | None], *, port: int, metrics_port: int, cluster: str,
    namespace: str,
) -> TlsSettings | None:
    """GENCLUSTER_TLS_DIR and its companions (docs/runtime-config.md); None without it."""
    from gencluster.tls import CLIENT_AUTH_MODES, TlsFiles, TlsSettings
    from gencluster.tls_identity import peer_server_name

    text = (values.get("GENCLUSTER_TLS_DIR") or "").strip()
    if not text:
        return None
    directory = _mounted(values, text)
    try:
        TlsFiles(directory).read()
    except OSError as error:
        raise ConfigError(
            f"GENCLUSTER_TLS_DIR {directory} must hold tls.crt, tls.key and ca.crt: {error}"
        ) from None
    if not cluster:
        raise ConfigError("GENCLUSTER_CLUSTER is required with GENCLUSTER_TLS_DIR (the "
                          "certificate identities name the cluster)")
    ports = {name: values.get(name) or default for name, _, default in SETTINGS
             if name in ("GENCLUSTER_PEER_PORT", "GENCLUSTER_HEALTH_PORT")}
    peer_port = _integer(ports, "GENCLUSTER_PEER_PORT", 1, 65535)
    health_port = _integer(ports, "GENCLUSTER_HEALTH_PORT", 1, 65535)
    if len({port, metrics_port, peer_port, health_port}) != 4:
        raise ConfigError("GENCLUSTER_PORT, GENCLUSTER_METRICS_PORT, GENCLUSTER_PEER_PORT and "
                          "GENCLUSTER_HEALTH_PORT must all differ")
    client_auth = (values.get("GENCLUSTER_CLIENT_AUTH") or "None").strip()
    if client_auth not in CLIENT_AUTH_MODES:
        raise ConfigError(f"GENCLUSTER_CLIENT_AUTH must be one of {', '.join(CLIENT_AUTH_MODES)},"
                          f" got {client_auth!r}")
    server_name = (values.get("GENCLUSTER_PEER_SERVER_NAME") or "").strip()
    if not server_name:
        peer_service = (values.get("GENCLUSTER_PEER_SERVICE") or "").strip()
        if not peer_service:
            raise ConfigError("GENCLUSTER_PEER_SERVER_NAME (or GENCLUSTER_PEER_SERVICE) is "
                              "required with GENCLUSTER_TLS_DIR")
        server_name = peer_server_name(peer_service, namespace)
    return TlsSettings(directory=directory, peer_port=peer_port, health_port=health_port,
                       peer_server_name=server_name, client_auth=client_auth)


def build_config(values: Mapping[str, str | None]) -> NodeConfig:
    """Validate everything; raise `ConfigError` naming the first bad variable."""
    identity = _required(values, "POD_NAME")
    namespace = _required(values, "POD_NAMESPACE")
    pod_ip = _address("POD_IP", _required(values, "POD_IP"))
    listen_host = _address(
        "GENCLUSTER_LISTEN_HOST", (values.get("GENCLUSTER_LISTEN_HOST") or pod_ip).strip()
    )
    server_spec = _required(values, "GENCLUSTER_SERVER")
    try:
        args = json.loads(values.get("GENCLUSTER_ARGS") or "{}")
    except ValueError as error:
        raise ConfigError(f"GENCLUSTER_ARGS is not valid JSON: {error}") from None
    port = _integer(values, "GENCLUSTER_PORT", 1, 65535)
    metrics_port = _integer(values, "GENCLUSTER_METRICS_PORT", 1, 65535)
    if metrics_port == port:
        raise ConfigError("GENCLUSTER_METRICS_PORT must differ from GENCLUSTER_PORT")
    cluster = (values.get("GENCLUSTER_CLUSTER") or "").strip()
    selector = (values.get("GENCLUSTER_POD_SELECTOR") or "").strip()
    if not selector:
        if not cluster:
            raise ConfigError("GENCLUSTER_POD_SELECTOR (or GENCLUSTER_CLUSTER) is required")
        selector = f"gencluster.io/cluster={cluster}"
    token = values.get("GENCLUSTER_PEER_TOKEN") or ""
    if len(token.strip()) < MIN_PEER_TOKEN_LENGTH:
        raise ConfigError(
            f"GENCLUSTER_PEER_TOKEN is required, at least {MIN_PEER_TOKEN_LENGTH} characters "
            f"(got {len(token.strip())})"
        )
    lease_name = _required(values, "GENCLUSTER_LEASE_NAME")
    duration = _integer(values, "GENCLUSTER_LEASE_DURATION_SECONDS", 1, 86400)
    deadline = _integer(values, "GENCLUSTER_RENEW_DEADLINE_SECONDS", 1, 86400)
    retry = _integer(values, "GENCLUSTER_RETRY_PERIOD_SECONDS", 1, 86400)
    problems = lease_timing_problems(duration, deadline, retry)
    if problems:
        raise ConfigError(
            "GENCLUSTER_LEASE_DURATION_SECONDS / GENCLUSTER_RENEW_DEADLINE_SECONDS / "
            "GENCLUSTER_RETRY_PERIOD_SECONDS: " + "; ".join(problems)
        )
    mode_text = (values.get("GENCLUSTER_REPLICATION_MODE") or "").strip()
    try:
        mode = ReplicationMode(mode_text)
    except ValueError:
        raise ConfigError(
            f"GENCLUSTER_REPLICATION_MODE must be Sync or Async, got {mode_text!r}"
        ) from None
    min_sync = _integer(values, "GENCLUSTER_MIN_SYNC_STANDBYS", 0, 1000)
    policy_text = (values.get("GENCLUSTER_PARTITION_POLICY") or "").strip()
    try:
        policy = PartitionPolicy(policy_text)
    except ValueError:
        raise ConfigError(
            f"GENCLUSTER_PARTITION_POLICY must be Fenced or Available, got {policy_text!r}"
        ) from None
    window = _integer(values, "GENCLUSTER_DEDUPLICATION_WINDOW_SECONDS", 1, 86400)
    max_message = _integer(
        values, "GENCLUSTER_MAX_MESSAGE_BYTES", MIN_MESSAGE_BYTES, MAX_MESSAGE_BYTES
    )
    reply_table = _integer(
        values, "GENCLUSTER_REPLY_TABLE_MAX_BYTES", MIN_REPLY_TABLE_BYTES, MAX_REPLY_TABLE_BYTES
    )
    max_subscribers = _integer(values, "GENCLUSTER_MAX_SUBSCRIBERS", 1, 1_000_000)
    kubeconfig = (values.get("KUBECONFIG") or "").strip() or None
    if kubeconfig is not None and not Path(kubeconfig).is_file():
        raise ConfigError(f"KUBECONFIG {kubeconfig} is not a readable file")
    return NodeConfig(
        identity=identity,
        namespace=namespace,
        pod_ip=pod_ip,
        listen_host=listen_host,
        port=port,
        metrics_port=metrics_port,
        server_spec=server_spec,
        args=args,
        cluster=cluster,
        pod_selector=selector,
        peer_token=token.strip(),
        lease_name=lease_name,
        election=ElectionConfig(duration, float(deadline), float(retry)),
        mode=mode,
        min_sync_standbys=min_sync,
        partition_policy=policy,
        kubeconfig=kubeconfig,
        deduplication_window=float(window),
        max_message_bytes=max_message,
        reply_table_max_bytes=reply_table,
        data_dir=data_directory(values),
        max_subscribers=max_subscribers,
        tls=tls_settings(values, port=port, metrics_port=metrics_port, cluster=cluster,
                         namespace=namespace),
    )


def config_failure(message: str) -> int:
    """Report a configuration that cannot run: last line of stderr and termination log."""
    return _terminate(f"gencluster run: configuration error: {message}", EX_CONFIG)


def volume_failure(message: str) -> int:
    """Report a volume that refused a write: this replica cannot promise durability, so it
    stops (the kubelet restarts it and it recovers from what the disk really holds)."""
    return _terminate(f"gencluster run: volume failed: {message}", EX_IOERR)


def _terminate(line: str, code: int) -> int:
    """`line` is the last line of stderr and the termination message the kubelet reports in
    `lastState.terminated.message` (where the operator and `kubectl describe` read it)."""
    print(line, file=sys.stderr, flush=True)
    with contextlib.suppress(OSError):
        TERMINATION_LOG.write_text(line + "\n")
    return code


class NodeCollector:
    """The pod's role and replication figures, read from the node at scrape time (nothing on
    the call path updates a gauge). Every name starts with `gencluster_runtime_`: the operator
    exports its own view of the same cluster as `gencluster_operator_*`, and the two differ
    (during a failover a pod's epoch is not yet the status's), so they must never share a
    name in one Prometheus."""

    def __init__(self, node: Node, config: NodeConfig) -> None:
        self.node = node
        self.labels = ["cluster", "pod"]
        self.label_values = [config.cluster, config.identity]

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        node = self.node
        degraded = node.sync_degraded()
        for name, help_text, value in (
            ("gencluster_runtime_active", "1 while this replica is the serving active",
             1 if node.may_serve() else 0),
            ("gencluster_runtime_epoch", "highest epoch seen", node.epoch),
            ("gencluster_runtime_applied_seq", "last applied log sequence number",
             node.replica.applied_seq if node.replica is not None else 0),
            ("gencluster_runtime_ready", "1 while readiness is SERVING",
             1 if node.ready() else 0),
            ("gencluster_runtime_failsafe_seconds",
             "while serving in failsafe (the Lease not renewed, every pod that could take "
             "over promised not to): seconds since the last successful renewal; else 0",
             node.failsafe_seconds() or 0.0),
            ("gencluster_runtime_failsafe_episodes",
             "stretches served in failsafe by this process", node.failsafe_episodes()[0]),
            ("gencluster_runtime_sync_degraded",
             "1 while this active answers calls without the acknowledgements of "
             "minSyncStandbys standbys (partitionPolicy Available, Sync replication); else 0",
             1 if degraded is not None else 0),
            ("gencluster_runtime_sync_unsynced_entries",
             "answered entries the in-sync standbys may not hold yet (0 unless degraded)",
             degraded[1] if degraded is not None else 0),
        ):
            family = GaugeMetricFamily(name, help_text, labels=self.labels)
            family.add_metric(self.label_values, value)
            yield family
        for name, help_text, total in (
            ("gencluster_runtime_replication_sent_bytes",
             "bytes of Replicate stream messages sent to standbys as active",
             COUNTERS.bytes_sent),
            ("gencluster_runtime_replication_sent_messages",
             "Replicate stream messages sent to standbys as active", COUNTERS.messages_sent),
            ("gencluster_runtime_replication_sent_entries",
             "log entries sent to standbys as active", COUNTERS.entries_sent),
        ):
            counter = CounterMetricFamily(name, help_text, labels=self.labels)
            counter.add_metric(self.label_values, total)
            yield counter


def render_metrics(accept: str) -> tuple[bytes, str]:
    """The default registry in the format the scraper's Accept header asks for (Prometheus
    text or OpenMetrics), as prometheus_client's own HTTP server would answer."""
    from prometheus_client import REGISTRY
    from prometheus_client.exposition import choose_encoder

    encoder, content_type = choose_encoder(accept)
    return encoder(REGISTRY), content_type


async def start_http(node: Node, config: NodeConfig) -> AdminHttp | None:
    """The metrics port: Prometheus text format at `/metrics` (read at scrape time: the node's
    figures, the client-call meters of `call_metrics` and the process collectors) and the
    Admin bridge that tools reach through the API server (`gencluster.admin_http`). None,
    with a warning, when the port cannot be bound: the replica still serves."""
    from prometheus_client import REGISTRY

    from gencluster.admin_http import AdminHttp, loopback_target

    REGISTRY.register(NodeCollector(node, config))
    http = AdminHttp(loopback_target(config.listen_host, config.port), render_metrics,
                     config.tls)
    try:
        await http.start(config.listen_host, config.metrics_port)
    except OSError as error:
        log.warning("metrics and the Admin bridge disabled: cannot listen on port %d: %s",
                    config.metrics_port, error)
        await http.stop()
        return None
    return http


def main(argv: list[str]) -> int:
    """Entry point of `gencluster run`; returns the process's exit code."""
    logging.basicConfig(
        level=os.environ.get("GENCLUSTER_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = build_config(resolve(argv, os.environ))
    except ConfigError as error:
        return config_failure(str(error))
    try:
        server_class = load_server_class(config.server_spec)
    except ServerLoadError as error:
        return config_failure(f"GENCLUSTER_SERVER: {error}")
    try:
        return asyncio.run(serve(config, server_class()))
    except KeyboardInterrupt:
        return 0


GC_THRESHOLDS = (20_000, 20, 100)
"""Young-generation collections 30 times rarer and full ones 10 times rarer than Python's
default (700, 10, 10). A replicated call allocates hundreds of short-lived container objects
(gRPC, asyncio, protobuf, log entry, reply record) while the retained log and reply table are
large and long-lived; with the defaults the collector's scans were several percent of the
active's CPU and its full collections showed as p99 spikes (two paired runs, 3 replicas at
64 calls in flight: 4.3k and 4.4k calls/s with p99 45 ms without, 4.5k and 5.0k with p99
24-29 ms with)."""


def tune_garbage_collector() -> None:
    """Freeze what start-up allocated (modules, gRPC, the Kubernetes client, the user's
    server): it lives as long as the process, so no collection needs to scan it again. Then
    raise the thresholds (`GC_THRESHOLDS`). For `gencluster run` processes only: it changes
    the whole interpreter."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def bind_tls(
    grpc_server: grpc.aio.Server, config: NodeConfig, tls: TlsSettings,
    health_reporter: HealthReporter,
) -> grpc.aio.Server:
    """The three ports of a TLS runtime (`gencluster.tls`); returns the health server (not
    started). Raises RuntimeError when a port cannot be bound."""
    from gencluster.node_config import host_port
    from gencluster.services import build_health_server
    from gencluster.tls import CLIENT_AUTH_MUTUAL, TlsFiles, server_credentials

    files = TlsFiles(tls.directory)
    grpc_server.add_secure_port(
        host_port(config.listen_host, config.port),
        server_credentials(files, require_client_cert=tls.client_auth == CLIENT_AUTH_MUTUAL),
    )
    grpc_server.add_secure_port(
        host_port(config.listen_host, tls.peer_port),
        server_credentials(files, require_client_cert=True),
    )
    health_server = build_health_server(health_reporter)
    health_server.add_insecure_port(host_port(config.listen_host, tls.health_port))
    return health_server


async def serve(config: NodeConfig, server: GenServer) -> int:
    """Bind, start the services and the node; on SIGTERM hand over and exit 0."""
    from gencluster.leases import KubernetesApi, load_configuration
    from gencluster.node_config import host_port
    from gencluster.services import HealthReporter, build_server

    try:
        kubernetes_configuration = load_configuration(config.kubeconfig)
    except Exception as error:
        return config_failure(f"KUBECONFIG / in-cluster configuration: {error}")
    timings = config.election
    request_timeout = max(0.2, min(timings.retry_period, timings.renew_deadline / 3))
    api = KubernetesApi(
        kubernetes_configuration, namespace=config.namespace, request_timeout=request_timeout
    )
    node = Node(config, server, api)
    health_reporter = HealthReporter(node)
    tune_garbage_collector()
    grpc_server = build_server(node, health_reporter)
    address = host_port(config.listen_host, config.port)
    health_server = None
    try:
        if config.tls is None:
            grpc_server.add_insecure_port(address)
        else:
            health_server = bind_tls(grpc_server, config, config.tls, health_reporter)
    except RuntimeError as error:
        log.error("cannot listen on %s: %s", address, error)
        return 1
    await grpc_server.start()
    if health_server is not None:
        await health_server.start()
    await health_reporter.start()
    loop = asyncio.get_running_loop()
    node.on_role_change(lambda: loop.create_task(health_reporter.refresh()))
    http = await start_http(node, config)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    log.info(
        "%s serving %s on %s (lease %s, %s, policy %s)",
        config.identity,
        config.server_spec,
        address,
        config.lease_name,
        config.mode.value,
        config.partition_policy.value,
    )
    node_task = asyncio.create_task(node.run())
    stop_task = asyncio.create_task(stop.wait())
    waited = {node_task, stop_task}
    journal = node.journal
    volume_task = asyncio.create_task(journal.failed.wait()) if journal is not None else None
    if volume_task is not None:
        waited.add(volume_task)
    done, _ = await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
    if node_task in done:
        try:
            node_task.result()
        except ServerInitFailed as error:
            await grpc_server.stop(grace=0)
            if health_server is not None:
                await health_server.stop(grace=0)
            if http is not None:
                await http.stop()
            await api.close()
            return config_failure(str(error))
        return 1
    if volume_task is not None and volume_task in done and journal is not None:
        log.critical("%s: handing over and stopping", journal.failure)
    else:
        log.info("SIGTERM: handing over and stopping")
    if volume_task is not None:
        volume_task.cancel()
    await node.shutdown()
    node_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await node_task
    # Drain: keep answering UNAVAILABLE with the new active's address for a moment, so
    # connected clients are redirected instead of seeing the CANCELLED that a stopping gRPC
    # server gives calls it has not dispatched yet (grpc/grpc#41785).
    await asyncio.sleep(DRAIN_SECONDS)
    await grpc_server.stop(grace=1.0)
    if health_server is not None:
        await health_server.stop(grace=0)
    if http is not None:
        await http.stop()
    await api.close()
    if journal is not None and journal.failure is not None:
        return volume_failure(str(journal.failure))
    log.info("stopped")
    return 0
