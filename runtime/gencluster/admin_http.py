"""The runtime's HTTP port: `/metrics` for Prometheus and the Admin service over HTTP/1.1.

Why HTTP at all: tools outside the pod network (`kubectl gencluster`, `gencluster status` on a
laptop) reach a pod only through the Kubernetes API server, and its `pods/proxy` subresource
speaks HTTP/1.1, which gRPC (HTTP/2 framing, trailers) cannot cross. So the metrics port, which
every pod already declares, also carries a bridge to the Admin service:

    POST /admin/v1/METHOD        body: the method's request message (protobuf, may be empty),
                                 or for a client-streaming method (Restore, Merge) each
                                 message as a 4-byte big-endian length then its bytes (`frames`)
    -> 200, body: the reply message, or `frames` of them for a server-streaming method
    -> 4xx/5xx, JSON {"code": "UNAVAILABLE", "message": "..."}: the gRPC status, mapped

so the `.proto` stays the one contract: the HTTP caller sends and parses the same messages.
A streamed request body is forwarded message by message as it arrives; one that is cut short
or malformed cancels the gRPC call (never a half-close), so the runtime never acts on a
partial Restore.

Who may call it: the bridge forwards each request to this pod's own gRPC server with the value
of the `X-Gencluster-Peer-Token` header as the peer-token metadata, so the one authentication
gate (`gencluster.auth.PeerTokenGate`) decides, exactly as for a direct gRPC call; a request
without the token is answered 403 before anything is dialled. The port is therefore no
backdoor for the pod network: reaching it needs the peer token (from the cluster's Secret), and
reaching it through the API server additionally needs RBAC on `pods/proxy`. The token travels
in its own header because the API server consumes (and strips) `Authorization` itself.
`/metrics` needs no credential, as before.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import struct
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio
from aiohttp import web

from gencluster.limits import MAX_RECORD_MESSAGE_BYTES
from gencluster.proto import gencluster_pb2 as pb
from gencluster.tls import TlsSettings, peer_channel
from gencluster.wellknown import ADMIN_HTTP_PATH, ADMIN_TOKEN_HEADER, PEER_TOKEN_METADATA

log = logging.getLogger(__name__)

FRAME_HEADER = struct.Struct(">I")
MAX_REQUEST_BYTES = 4 * 1024 * 1024
"""Bound of a unary request body (Admin requests are small: a pod name, an epoch; larger is
refused with 413) and of each message of a streamed one (gRPC's default receive limit)."""
DEFAULT_TIMEOUT_SECONDS = 30.0
MAX_TIMEOUT_SECONDS = 600.0

HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 403,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.UNIMPLEMENTED: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 412,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
"""gRPC status -> HTTP status of a bridged call (anything else: 500). The JSON body keeps the
gRPC code's name, so a caller reports the same words as a direct gRPC call would. A missing or
wrong peer token is 403, not 401: through pods/proxy a 401 reads as "your API credentials were
refused" to kubectl and client-go (which may even try to refresh them)."""


@dataclass(frozen=True)
class Bridged:
    """One Admin method as the bridge calls it."""

    path: str
    request: Any
    reply: Any
    client_streaming: bool
    server_streaming: bool


def admin_methods() -> dict[str, Bridged]:
    """Every Admin method by name, from the descriptor, so a method added to the `.proto` is
    bridged without an edit here."""
    service = pb.DESCRIPTOR.services_by_name["Admin"]
    return {
        method.name: Bridged(
            f"/{service.full_name}/{method.name}",
            getattr(pb, method.input_type.name),
            getattr(pb, method.output_type.name),
            method.client_streaming,
            method.server_streaming,
        )
        for method in service.methods
    }


def frames(messages: Iterable[bytes]) -> Iterator[bytes]:
    """Length-prefixed messages, as a server-streaming method's HTTP body carries them."""
    for message in messages:
        yield FRAME_HEADER.pack(len(message)) + message


def split_frames(body: bytes) -> list[bytes]:
    """The messages of a `frames` body; ValueError when it is cut short."""
    messages, offset = [], 0
    while offset < len(body):
        if offset + FRAME_HEADER.size > len(body):
            raise ValueError("truncated frame header")
        (size,) = FRAME_HEADER.unpack_from(body, offset)
        offset += FRAME_HEADER.size
        if offset + size > len(body):
            raise ValueError(f"truncated frame: {size} bytes announced, "
                             f"{len(body) - offset} present")
        messages.append(body[offset:offset + size])
        offset += size
    return messages


def error_body(code: str, message: str) -> bytes:
    return json.dumps({"code": code, "message": message}).encode()


def call_timeout(query: Any) -> float:
    """The `timeout` query parameter (seconds), bounded; the default otherwise. ValueError
    with the reason for anything else."""
    text = query.get("timeout")
    if text is None:
        return DEFAULT_TIMEOUT_SECONDS
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"timeout {text!r} is not a number") from None
    if not 0 < value <= MAX_TIMEOUT_SECONDS:
        raise ValueError(f"timeout must be in (0, {MAX_TIMEOUT_SECONDS:g}] seconds")
    return value


def loopback_target(listen_host: str, port: int) -> str:
    """Where this pod dials its own gRPC server: the listen address, or loopback when the
    server listens on every address."""
    try:
        address = ipaddress.ip_address(listen_host)
    except ValueError:
        return f"{listen_host}:{port}"
    if address.is_unspecified:
        return f"[::1]:{port}" if address.version == 6 else f"127.0.0.1:{port}"
    return f"[{listen_host}]:{port}" if address.version == 6 else f"{listen_host}:{port}"


class AdminHttp:
    """The HTTP server of one runtime process (metrics and the Admin bridge)."""

    def __init__(self, grpc_target: str, render_metrics: Callable[[str], tuple[bytes, str]],
                 tls: TlsSettings | None = None):
        """`tls`: the pod's TLS settings; the bridge then calls its own peer port with the
        pod's certificate (a peer's identity: the operator's Admin methods stay refused)."""
        self.grpc_target = grpc_target
        self.tls = tls
        self.render_metrics = render_metrics
        self.methods = admin_methods()
        self.port = 0
        self._channel: grpc.aio.Channel | None = None
        self._runner: web.AppRunner | None = None

    async def start(self, host: str, port: int) -> None:
        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_post(ADMIN_HTTP_PATH + "/{method}", self._admin)
        # Export and restore chunks are bounded in bytes, or one record alone: over gRPC's
        # default 4 MiB limit (limits.MAX_RECORD_MESSAGE_BYTES), both ways.
        self._channel = peer_channel(self.tls, self.grpc_target, options=[
            ("grpc.max_receive_message_length", MAX_RECORD_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_RECORD_MESSAGE_BYTES),
        ])
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._channel is not None:
            await self._channel.close()

    async def _metrics(self, request: web.Request) -> web.Response:
        accept = request.headers.get("Accept", "")
        body, content_type = await asyncio.get_running_loop().run_in_executor(
            None, self.render_metrics, accept
        )
        response = web.Response(body=body, headers={"Content-Type": content_type})
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            response.enable_compression()  # as prometheus_client's own server does
        return response

    async def _admin(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["method"]
        if name not in self.methods:
            return _error(404, "NOT_FOUND", f"no bridged Admin method {name!r} (bridged: "
                          f"{', '.join(sorted(self.methods))})")
        token = request.headers.get(ADMIN_TOKEN_HEADER, "")
        if not token:
            return _error(403, "UNAUTHENTICATED",
                          f"the {ADMIN_TOKEN_HEADER} header (the cluster's peer token) is "
                          "required")
        try:
            timeout = call_timeout(request.query)
        except ValueError as error:
            return _error(400, "INVALID_ARGUMENT", str(error))
        method = self.methods[name]
        assert self._channel is not None
        metadata = ((PEER_TOKEN_METADATA, token),)
        serialize, parse = method.request.SerializeToString, method.reply.FromString
        if method.client_streaming:
            factory = (self._channel.stream_stream if method.server_streaming
                       else self._channel.stream_unary)
            call = factory(method.path, request_serializer=serialize,
                           response_deserializer=parse)(metadata=metadata, timeout=timeout)
            try:
                async for frame in read_frames(request.content, MAX_REQUEST_BYTES):
                    await call.write(method.request.FromString(frame))
                await call.done_writing()
            except grpc.aio.AioRpcError:
                pass  # the server already answered (a refusal): reported below
            except Exception as error:  # a cut or malformed body, or a protobuf error
                call.cancel()  # never a half-close: the server must not act on a cut stream
                return _error(400, "INVALID_ARGUMENT",
                              f"the request stream of {name} is not {method.request.__name__} "
                              f"frames: {error}")
        else:
            try:
                message = method.request.FromString(await request.read())
            except Exception as error:  # protobuf's DecodeError and friends
                return _error(400, "INVALID_ARGUMENT",
                              f"not a {method.request.__name__}: {error}")
            factory = (self._channel.unary_stream if method.server_streaming
                       else self._channel.unary_unary)
            call = factory(method.path, request_serializer=serialize,
                           response_deserializer=parse)(message, metadata=metadata,
                                                        timeout=timeout)
        try:
            if method.server_streaming:
                replies = [reply.SerializeToString() async for reply in call]
                body = b"".join(frames(replies))
            else:
                body = (await call).SerializeToString()
        except grpc.aio.AioRpcError as error:
            code = error.code()
            return _error(HTTP_STATUS.get(code, 500), code.name, error.details() or "")
        return web.Response(body=body, content_type="application/x-protobuf")


async def read_frames(stream: Any, max_frame: int) -> AsyncIterator[bytes]:
    """The messages of a `frames` body as they arrive; ValueError when it is cut short or a
    frame is larger than `max_frame`."""
    while True:
        try:
            header = await stream.readexactly(FRAME_HEADER.size)
        except asyncio.IncompleteReadError as error:
            if error.partial:
                raise ValueError("truncated frame header") from None
            return
        (size,) = FRAME_HEADER.unpack(header)
        if size > max_frame:
            raise ValueError(f"a frame of {size} bytes (at most {max_frame})")
        try:
            yield await stream.readexactly(size)
        except asyncio.IncompleteReadError as error:
            raise ValueError(f"truncated frame: {size} bytes announced, "
                             f"{len(error.partial)} present") from None


def _error(status: int, code: str, message: str) -> web.Response:
    return web.Response(status=status, body=error_body(code, message),
                        content_type="application/json")
