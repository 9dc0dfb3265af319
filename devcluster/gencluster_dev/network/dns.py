"""The cluster DNS server: the local control plane's CoreDNS.

It listens on one address of the plane (`127.SLOT.0.10`, port 53 over UDP and TCP; port 53
needs root, and without it the server takes `FALLBACK_PORT` so it can still be queried
directly) and keeps Namespaces, Services and Endpoints cached from the API with informers.

- Names of the cluster zone (`cluster.local`) and reverse names of cluster addresses are
  answered from that cache (`dnsnames`, the rules of CoreDNS's `kubernetes` plugin); until
  the caches are first synced such a query gets SERVFAIL, as CoreDNS answers then.
- Every other name is forwarded, as the query bytes the client sent, to the node's own
  nameservers (its /etc/resolv.conf, like kind's `forward . /etc/resolv.conf`), over the
  transport the client used; with no nameserver to forward to it gets REFUSED, and with
  none answering in time, SERVFAIL.

Pods of the podman runtime use it through their resolv.conf (`node.resolvconf`); local
process pods share the node's resolver and cannot (docs/devcluster.md, "DNS").
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import struct
import time
from pathlib import Path

from gencluster_dev.client.apiclient import ApiClient, Informer
from gencluster_dev.network.dnsnames import (
    ClusterRecords,
    DnsSettings,
    answer,
    in_zone,
    is_reverse,
    records_from,
    reverse_answer,
)
from gencluster_dev.network.dnswire import (
    CLASS_IN,
    FORMERR,
    NOTIMP,
    REFUSED,
    SERVFAIL,
    TCP_MESSAGE_LIMIT,
    DnsFormatError,
    Query,
    Response,
    encode_response,
    error_response,
    parse_query,
)

log = logging.getLogger(__name__)

#: The DNS port; binding it needs root (or CAP_NET_BIND_SERVICE).
DNS_PORT = 53
#: The port taken instead when port 53 cannot be bound (queries then name it explicitly).
FALLBACK_PORT = 10053
#: How long one upstream nameserver gets to answer a forwarded query.
FORWARD_TIMEOUT = 2.0
#: An idle TCP client is closed after this long (RFC 7766 suggests seconds).
TCP_IDLE_TIMEOUT = 10.0
#: Where the node's nameservers are read from, for forwarding.
HOST_RESOLV_CONF = Path("/etc/resolv.conf")
#: Informers must have listed once before the zone is answered; this long at most at start.
SYNC_TIMEOUT = 30.0


def upstream_servers(resolv_text: str, own_host: str) -> list[str]:
    """The nameservers of a resolv.conf to forward to (never this server itself)."""
    servers = []
    for raw in resolv_text.splitlines():
        parts = raw.split("#", 1)[0].split()
        if len(parts) >= 2 and parts[0] == "nameserver" and parts[1] != own_host:
            servers.append(parts[1])
    return servers


class ClusterDns:
    """The plane's DNS server: answers the cluster zone, forwards the rest."""

    def __init__(self, *, api_url: str, token: str, host: str,
                 zone: str = "cluster.local", ttl: int = 30,
                 upstreams: list[str] | None = None) -> None:
        self.api = ApiClient(api_url, token)
        self.host = host
        self.port = DNS_PORT
        self.settings = DnsSettings(zone=zone, ttl=ttl, server_ip=host)
        if upstreams is None:
            try:
                upstreams = upstream_servers(HOST_RESOLV_CONF.read_text(), host)
            except OSError:
                upstreams = []
        self.upstreams = upstreams
        self._informers = [Informer(self.api, path, self._changed) for path in
                           ("/api/v1/namespaces", "/api/v1/services", "/api/v1/endpoints")]
        self._records: ClusterRecords | None = None
        self._serial = int(time.time())
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task] = set()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Sync the caches, then listen (UDP and TCP on the same port)."""
        for informer in self._informers:
            informer.start()
        await asyncio.wait_for(asyncio.gather(*(i.synced.wait() for i in self._informers)),
                               SYNC_TIMEOUT)
        try:
            await self._listen(DNS_PORT)
        except PermissionError:
            log.info("cluster DNS: port %d needs root; using %d", DNS_PORT, FALLBACK_PORT)
            await self._listen(FALLBACK_PORT)

    async def _listen(self, port: int) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self), local_addr=(self.host, port))
        try:
            self._tcp = await asyncio.start_server(self._serve_tcp, self.host, port,
                                                   reuse_address=True)
        except OSError:
            transport.close()
            raise
        self._udp = transport  # type: ignore[assignment]
        self.port = port

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            with contextlib.suppress(Exception):
                await self._tcp.wait_closed()
            self._tcp = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for informer in self._informers:
            await informer.stop()
        await self.api.close()

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ records

    def _changed(self, kind: str, obj: dict) -> None:
        self._records = None
        self._serial = int(time.time())

    def records(self) -> ClusterRecords:
        """The current snapshot (rebuilt after a change, at the next query)."""
        if self._records is None:
            namespaces, services, endpoints = (list(i.cache.values()) for i in self._informers)
            self._records = records_from(namespaces, services, endpoints, self._serial)
        return self._records

    def local_response(self, query: Query) -> Response | None:
        """The answer from the cluster's records, or None when the name is not the cluster's
        (then it is forwarded)."""
        if query.opcode != 0:
            return Response(rcode=NOTIMP)
        if query.qclass != CLASS_IN:
            return None if not in_zone(query.name, self.settings.zone) else Response(
                rcode=REFUSED)
        if in_zone(query.name, self.settings.zone):
            if not all(i.synced.is_set() for i in self._informers):
                return Response(rcode=SERVFAIL)
            return answer(self.records(), query.name, query.qtype, self.settings)
        if is_reverse(query.name):
            return reverse_answer(self.records(), query.name, query.qtype, self.settings)
        return None

    # ------------------------------------------------------------------ serving

    async def respond(self, message: bytes, *, tcp: bool) -> bytes | None:
        """The bytes to send back for one received message (None: nothing)."""
        try:
            query = parse_query(message)
        except DnsFormatError:
            return error_response(message, FORMERR)
        try:
            local = self.local_response(query)
        except Exception:  # a bug: the client gets SERVFAIL, the server keeps serving
            log.exception("cluster DNS: answering %s type %d", query.name, query.qtype)
            local = Response(rcode=SERVFAIL)
        limit = TCP_MESSAGE_LIMIT if tcp else query.udp_limit()
        if local is not None:
            return encode_response(query, local, limit=limit)
        if not self.upstreams:
            return encode_response(query, Response(rcode=REFUSED), limit=limit)
        forwarded = await self._forward(message, tcp=tcp)
        if forwarded is None:
            return encode_response(query, Response(rcode=SERVFAIL), limit=limit)
        return forwarded

    async def _forward(self, message: bytes, *, tcp: bool) -> bytes | None:
        """The first upstream answer to the client's own query bytes (its id kept)."""
        for server in self.upstreams:
            try:
                if tcp:
                    return await asyncio.wait_for(_tcp_exchange(server, message),
                                                  FORWARD_TIMEOUT)
                return await asyncio.wait_for(_udp_exchange(server, message), FORWARD_TIMEOUT)
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                log.debug("cluster DNS: upstream %s: %s", server, exc)
        return None

    def udp_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._spawn(self._answer_udp(data, addr))

    async def _answer_udp(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = await self.respond(data, tcp=False)
        if reply is not None and self._udp is not None:
            with contextlib.suppress(OSError):
                self._udp.sendto(reply, addr)

    async def _serve_tcp(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        """Queries on one connection, each with its two-byte length, until the client stops."""
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_TIMEOUT)
                    (length,) = struct.unpack("!H", head)
                    message = await asyncio.wait_for(reader.readexactly(length),
                                                     TCP_IDLE_TIMEOUT)
                except (asyncio.IncompleteReadError, TimeoutError, OSError):
                    return
                reply = await self.respond(message, tcp=True)
                if reply is None:
                    return
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (ConnectionError, OSError):
            return
        finally:
            writer.close()


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: ClusterDns) -> None:
        self.server = server

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.server.udp_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        if getattr(exc, "errno", None) not in (errno.ECONNREFUSED,):
            log.debug("cluster DNS: %s", exc)


class _UpstreamProtocol(asyncio.DatagramProtocol):
    """One forwarded UDP query: the first datagram with the query's id is the answer."""

    def __init__(self, ident: bytes) -> None:
        self.ident = ident
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if data[:2] == self.ident and not self.answer.done():
            self.answer.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.answer.done():
            self.answer.set_exception(exc)


async def _udp_exchange(server: str, message: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: _UpstreamProtocol(message[:2]), remote_addr=(server, DNS_PORT))
    try:
        transport.sendto(message)
        return await protocol.answer
    finally:
        transport.close()


async def _tcp_exchange(server: str, message: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(server, DNS_PORT)
    try:
        writer.write(struct.pack("!H", len(message)) + message)
        await writer.drain()
        (length,) = struct.unpack("!H", await reader.readexactly(2))
        return await reader.readexactly(length)
    finally:
        writer.close()
