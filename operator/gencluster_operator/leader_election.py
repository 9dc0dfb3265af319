"""Leader election between operator replicas: the thin I/O shell around `leadership`.

How the operator uses it (main.py, `--leader-election`), the way controller-runtime does:

1. `wait_until_leading()` blocks, looking at the Lease every retry period, until this process
   holds it. Meanwhile nothing of kopf runs, so a standby never writes anything (no handler,
   no timer, no kopf annotation on a ClusteredServer), and a `/healthz` answers for the probes.
2. Once leading, `start_renewing()` renews from a thread of its own (kopf's event loop being
   busy must not delay a renewal) and kopf starts. If a renewal cannot succeed within the renew
   deadline, or another holder appears, the process exits at once (exit code 1, Deployment
   restarts it as a candidate): it stops acting before any candidate may take the Lease.
3. On SIGTERM kopf stops, then `release()` empties holderIdentity so the standby takes over at
   its next look (within a retry period) instead of waiting for the lease to expire.

Who leads is visible: the metric `gencluster_operator_leader{identity}` (1 on the leader, 0 on
a standby), the Lease's holderIdentity, and an Event `LeaderElection` on the Lease
("IDENTITY became leader", as client-go's resource lock posts it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlparse

import kubernetes

from gencluster_operator import metrics
from gencluster_operator.leadership import (
    Create,
    LeadershipConfig,
    LeaseRecord,
    Renew,
    Seen,
    Take,
    Wait,
    decide,
    lease_body,
    must_step_down,
    observe,
    record_from_lease,
    released,
)

log = logging.getLogger(__name__)

DEFAULT_LEASE_NAME = "gencluster-operator"
LEASE_LABELS = {"app.kubernetes.io/component": "operator-leader-election"}
LEADER_ELECTION_REASON = "LeaderElection"
EXIT_LOST_LEADERSHIP = 1


def default_identity() -> str:
    """The pod's name (POD_NAME, set by the chart) plus the process id, else host and pid:
    unique per process, so a restarted container never mistakes the old holder for itself."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{os.getpid()}"


def default_namespace() -> str:
    """Where the Lease lives: POD_NAMESPACE (the chart's release namespace), the in-cluster
    ServiceAccount's namespace, else `default`."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    with contextlib.suppress(OSError):
        path = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
        with open(path) as file:
            return file.read().strip() or "default"
    return "default"


class LeaderElector:
    """One candidate for the operator's leader-election Lease."""

    def __init__(
        self,
        configuration: kubernetes.client.Configuration,
        name: str,
        namespace: str,
        identity: str,
        config: LeadershipConfig,
        on_lost: Callable[[str], None] | None = None,
    ) -> None:
        self.api_client = kubernetes.client.ApiClient(configuration)
        self.leases = kubernetes.client.CoordinationV1Api(self.api_client)
        self.core = kubernetes.client.CoreV1Api(self.api_client)
        self.name, self.namespace, self.identity, self.config = name, namespace, identity, config
        self.on_lost = on_lost or _exit_lost
        self.seen: Seen | None = None
        self.record: LeaseRecord | None = None
        self.last_renewed = 0.0
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._timeout = max(0.5, config.retry_period)
        metrics.LEADER.labels(identity=identity).set(0)

    # -- one step ------------------------------------------------------------------------------

    def _read(self) -> LeaseRecord | None:
        from kubernetes.client.exceptions import ApiException

        try:
            lease = self.leases.read_namespaced_lease(self.name, self.namespace,
                                                      _request_timeout=self._timeout)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return record_from_lease(self.api_client.sanitize_for_serialization(lease))

    def try_once(self) -> float | None:
        """Read, decide, write. None when this process holds the Lease afterwards, else how
        long to wait before the next try. API errors (409 included) just mean 'not now'."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            record = self._read()
            now = time.monotonic()
            self.seen = None if record is None else observe(self.seen, record, now)
            decision = decide(self.seen, self.identity, now, time.time(), self.config)
            if isinstance(decision, Wait):
                return decision.seconds or self.config.retry_period
            body = lease_body(self.name, self.namespace, decision.record, LEASE_LABELS)
            if isinstance(decision, Create):
                written = self.leases.create_namespaced_lease(
                    self.namespace, body, _request_timeout=self._timeout)
            else:
                written = self.leases.replace_namespaced_lease(
                    self.name, self.namespace, body, _request_timeout=self._timeout)
        except (ApiException, HTTPError, OSError) as error:
            log.debug("leader election: %s", error)
            return self.config.retry_period
        self.record = record_from_lease(self.api_client.sanitize_for_serialization(written))
        self.last_renewed = time.monotonic()
        if isinstance(decision, Create | Take):
            previous = decision.previous_holder if isinstance(decision, Take) else ""
            self._became_leader(previous)
        assert isinstance(decision, Create | Take | Renew)
        return None

    def _became_leader(self, previous: str) -> None:
        after = f" (after {previous})" if previous else ""
        log.info("%s became leader on Lease %s/%s%s", self.identity, self.namespace,
                 self.name, after)
        metrics.LEADER.labels(identity=self.identity).set(1)
        metrics.LEADER_TRANSITIONS.inc()
        self._post_event(f"{self.identity} became leader{after}")

    def _post_event(self, message: str) -> None:
        """An Event on the Lease, as client-go's resource lock posts one; best effort."""
        now = datetime.now(UTC)
        lease_uid = ""
        with contextlib.suppress(Exception):
            lease_uid = self.leases.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=self._timeout).metadata.uid
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{self.name}.", "namespace": self.namespace},
            "involvedObject": {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                               "name": self.name, "namespace": self.namespace,
                               "uid": lease_uid},
            "reason": LEADER_ELECTION_REASON,
            "message": message,
            "type": "Normal",
            "source": {"component": "gencluster-operator"},
            "firstTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "lastTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "count": 1,
            "reportingComponent": "gencluster-operator",
            "reportingInstance": self.identity,
        }
        try:
            self.core.create_namespaced_event(self.namespace, event,
                                              _request_timeout=self._timeout)
        except Exception as error:
            log.warning("cannot post the LeaderElection event: %s", error)

    # -- the three phases ----------------------------------------------------------------------

    def wait_until_leading(self) -> bool:
        """Block until this process holds the Lease (True), or `stop()` was called (False)."""
        log.info("%s waiting to lead (Lease %s/%s)", self.identity, self.namespace, self.name)
        while not self.stopping.is_set():
            wait = self.try_once()
            if wait is None:
                return True
            self.stopping.wait(wait)
        return False

    def start_renewing(self) -> None:
        self._thread = threading.Thread(target=self._renew_loop, name="leader-election",
                                        daemon=True)
        self._thread.start()

    def _renew_loop(self) -> None:
        while not self.stopping.wait(self.config.retry_period):
            if self.try_once() is None:
                continue
            if self.seen is not None and self.seen.record.holder not in ("", self.identity):
                self._lose(f"the Lease is held by {self.seen.record.holder}")
                return
            if must_step_down(self.last_renewed, time.monotonic(), self.config):
                self._lose(f"no renewal for {self.config.renew_deadline:g} s")
                return

    def _lose(self, why: str) -> None:
        if self.stopping.is_set():
            return
        metrics.LEADER.labels(identity=self.identity).set(0)
        log.error("%s lost the leadership: %s; stopping", self.identity, why)
        self.on_lost(why)

    def stop(self) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=self._timeout * 2)

    def release(self) -> None:
        """Give the Lease up (graceful stop): the standby takes it at its next look."""
        self.stop()
        metrics.LEADER.labels(identity=self.identity).set(0)
        record = self.record
        if record is None or record.holder != self.identity:
            return
        body = lease_body(self.name, self.namespace, released(record, time.time()),
                          LEASE_LABELS)
        try:
            self.leases.replace_namespaced_lease(self.name, self.namespace, body,
                                                 _request_timeout=self._timeout)
            log.info("%s released the Lease %s/%s", self.identity, self.namespace, self.name)
        except Exception as error:
            log.warning("cannot release the Lease (the standby waits for it to expire): %s",
                        error)

    def close(self) -> None:
        self.api_client.close()


def _exit_lost(why: str) -> None:
    """Stop acting at once: exiting is the only way to stop kopf's handlers mid-flight, and
    the Deployment starts the process again as a candidate."""
    logging.shutdown()
    os._exit(EXIT_LOST_LEADERSHIP)


class StandbyHealth:
    """`/healthz` on kopf's liveness address while the process waits to lead (kopf, which
    serves it otherwise, has not started): a standby is alive, so its probes must pass."""

    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        self.path = parsed.path or "/healthz"
        self.server = ThreadingHTTPServer((parsed.hostname or "", parsed.port or 80),
                                          self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        path = self.path

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                code = 200 if urlparse(self.path).path == path else 404
                body = b'{"leader": false}' if code == 200 else b""
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
