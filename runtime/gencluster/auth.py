"""The one authentication gate of a runtime's gRPC server.

Every call passes `PeerTokenGate`, a server interceptor that looks its method up in
`METHOD_ACCESS`, the single table of who may call what:

- `Access.PUBLIC`: the Client service (what the client Service routes to), grpc.health.v1
  (kubelet probes) and server reflection (grpcurl, debugging) need no credential;
- `Access.PEER`: the Peer service (a standby pulling state) and the Admin methods that read or
  restore (Status, GetState, ExportState, Restore: the other pods, the operator, the kubectl
  plugin through the Admin bridge);
- `Access.OPERATOR`: the Admin methods that steer the cluster (Switchover, Demote, Merge,
  PauseWrites): the operator only.

  Both need the cluster's peer token in the `gencluster-peer-token` metadata; without it, or
  with another one, the call fails with UNAUTHENTICATED and a message naming that key. With
  TLS (`gencluster.tls`) the caller's certificate must also have the right identity
  (`gencluster.tls_identity`; the token alone then opens nothing, and the Admin bridge, which
  calls with its pod's certificate, still needs the caller's token): a pod of this
  ClusteredServer is PEER, the operator is OPERATOR and PEER; anyone else (no certificate:
  the client port; another cluster's certificate cannot complete the handshake on the peer
  port; a client certificate) gets PERMISSION_DENIED naming who may call. The check needs
  the connection's auth context, which gRPC gives the handler, not the interceptor: the gate
  wraps the method's handler, so a refused unary request is deserialized before it is
  refused (never handed to a servicer);
- a method not in the table never runs (the gate fails closed). If a servicer is registered
  for it (a service added to the server without an entry here), the call fails with
  PERMISSION_DENIED naming the method: not UNAUTHENTICATED, because no credential would help,
  the method is served to no one until it is classified. If nothing implements it, the answer
  is UNIMPLEMENTED, exactly what gRPC says without the gate: there is nothing to protect, and
  tools depend on it (grpcurl and other reflection clients ask grpc.reflection.v1 first and
  fall back to v1alpha, the one grpcio serves, only on UNIMPLEMENTED).

The table is derived from the services' descriptors, so a method added to the `.proto` takes
its service's access without an edit here, and a service is classified in exactly one place
(`SERVICE_ACCESS`).

A refused call never reaches a servicer and none of its request bytes are deserialized: the
gate answers with a stream-stream handler that aborts before reading, which suits a caller of
any of the four RPC shapes (the wire does not carry the shape; only the handler's reading
does).
"""

from __future__ import annotations

import enum
import hmac
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, NoReturn

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from gencluster.proto import gencluster_pb2 as pb
from gencluster.tls_identity import Caller, LocalIdentity, caller_of
from gencluster.wellknown import PEER_TOKEN_METADATA


class Access(enum.Enum):
    """Who may call a method."""

    PUBLIC = "public"
    """Anyone who can reach the port: the Client service, health checks, reflection."""

    PEER = "peer"
    """The other replicas and the operator (peer token, or certificate identity with TLS)."""

    OPERATOR = "operator"
    """The operator alone (peer token without TLS; its certificate identity with TLS)."""


OPERATOR_METHODS = frozenset({"Switchover", "Demote", "Merge", "PauseWrites"})
"""Admin methods only the operator may call: they move the active role, pause writes or
change the state by a merge (docs/security.md)."""


SERVICE_ACCESS: Mapping[ServiceDescriptor, Access] = MappingProxyType({
    pb.DESCRIPTOR.services_by_name["Client"]: Access.PUBLIC,
    pb.DESCRIPTOR.services_by_name["Peer"]: Access.PEER,
    pb.DESCRIPTOR.services_by_name["Admin"]: Access.PEER,
    health_pb2.DESCRIPTOR.services_by_name["Health"]: Access.PUBLIC,
    reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"]: Access.PUBLIC,
})
"""Every service a runtime serves and who may call it: the one place to classify a service."""


def method_path(service: ServiceDescriptor, method_name: str) -> str:
    """The `/package.Service/Method` path gRPC puts in `HandlerCallDetails.method`."""
    return f"/{service.full_name}/{method_name}"


def method_access_table(
    services: Mapping[ServiceDescriptor, Access],
) -> Mapping[str, Access]:
    """Every method of `services`, by gRPC path, with its service's access; the Admin methods
    of `OPERATOR_METHODS` are the operator's alone."""
    admin = pb.DESCRIPTOR.services_by_name["Admin"]
    return MappingProxyType({
        method_path(service, method.name): (
            Access.OPERATOR if service is admin and method.name in OPERATOR_METHODS else access
        )
        for service, access in services.items()
        for method in service.methods
    })


METHOD_ACCESS = method_access_table(SERVICE_ACCESS)
"""The gate's table: a method path missing here never runs."""

UNAUTHENTICATED_MESSAGE = (
    f"Peer and Admin calls need the cluster's peer token in {PEER_TOKEN_METADATA!r}"
)


def unclassified_method_message(method: str) -> str:
    return f"{method} is served but not in the access table (gencluster.auth): refused"


ALLOWED_CALLERS: Mapping[Access, frozenset[Caller]] = MappingProxyType({
    Access.PEER: frozenset({Caller.PEER, Caller.OPERATOR}),
    Access.OPERATOR: frozenset({Caller.OPERATOR}),
})
"""With TLS: which certificate identities each access admits."""


def identity_refusal_message(method: str, access: Access, caller: Caller) -> str:
    who = "the operator" if access is Access.OPERATOR else "this cluster's pods or the operator"
    return (f"{method} is for {who}, by certificate identity (mutual TLS on the peer port); "
            f"this caller is {caller.value}")


def _refusal(code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    """A handler that answers `code` without reading the request (see the module docstring)."""

    async def refuse(request_iterator: Any, context: grpc.aio.ServicerContext) -> NoReturn:
        await context.abort(code, message)
        raise AssertionError("abort returned")  # pragma: no cover

    return grpc.stream_stream_rpc_method_handler(refuse)


class PeerTokenGate(grpc.aio.ServerInterceptor):
    """Lets a call through only if `METHOD_ACCESS` (or the given table) allows it.

    The public path costs one dict lookup and an identity comparison; the token (and, with
    `identity`, the certificate's identity) is only looked at on Peer and Admin calls, the
    token compared in constant time."""

    def __init__(
        self, peer_token: str, table: Mapping[str, Access] = METHOD_ACCESS,
        identity: LocalIdentity | None = None,
    ) -> None:
        if not peer_token:
            # compare_digest("", "") is True: an empty token would open every Peer and
            # Admin method to callers that send no metadata at all.
            raise ValueError("the peer token must not be empty")
        self._token = peer_token.encode()
        self._table = table
        self._unauthenticated = _refusal(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)
        self._identity = identity

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        access = self._table.get(handler_call_details.method)
        if access is Access.PUBLIC:
            return await continuation(handler_call_details)
        if access is Access.PEER or access is Access.OPERATOR:
            if not self._token_presented(handler_call_details.invocation_metadata):
                return self._unauthenticated
            if self._identity is None:
                return await continuation(handler_call_details)
            handler = await continuation(handler_call_details)
            if handler is None:
                return None
            return _checked(handler, handler_call_details.method, access, self._identity)
        if await continuation(handler_call_details) is None:
            return None  # nothing implements it: gRPC answers UNIMPLEMENTED
        message = unclassified_method_message(handler_call_details.method)
        return _refusal(grpc.StatusCode.PERMISSION_DENIED, message)

    def _token_presented(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> bool:
        for key, value in metadata or ():
            if key == PEER_TOKEN_METADATA:
                presented = value.encode() if isinstance(value, str) else value
                return hmac.compare_digest(presented, self._token)
        return False


def _checked(
    handler: grpc.RpcMethodHandler, method: str, access: Access, identity: LocalIdentity
) -> grpc.RpcMethodHandler:
    """`handler`, with the caller's certificate identity checked before its behaviour runs."""
    allowed = ALLOWED_CALLERS[access]

    async def check(context: grpc.aio.ServicerContext) -> None:
        caller = caller_of(context.auth_context(), identity)
        if caller not in allowed:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                identity_refusal_message(method, access, caller))

    options = {"request_deserializer": handler.request_deserializer,
               "response_serializer": handler.response_serializer}
    if handler.unary_unary is not None:
        inner_uu = handler.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await check(context)
            return await _awaited(inner_uu(request, context))

        return grpc.unary_unary_rpc_method_handler(unary_unary, **options)
    if handler.unary_stream is not None:
        inner_us = handler.unary_stream

        async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await check(context)
            async for item in _streamed(inner_us(request, context)):
                yield item

        return grpc.unary_stream_rpc_method_handler(unary_stream, **options)
    if handler.stream_unary is not None:
        inner_su = handler.stream_unary

        async def stream_unary(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            await check(context)
            return await _awaited(inner_su(requests, context))

        return grpc.stream_unary_rpc_method_handler(stream_unary, **options)
    inner_ss = handler.stream_stream

    async def stream_stream(requests: Any, context: grpc.aio.ServicerContext) -> Any:
        await check(context)
        async for item in _streamed(inner_ss(requests, context)):
            yield item

    return grpc.stream_stream_rpc_method_handler(stream_stream, **options)


async def _awaited(result: Any) -> Any:
    return await result if inspect.isawaitable(result) else result


async def _streamed(result: Any) -> AsyncIterator[Any]:
    """A streaming behaviour's items: an async generator's, or none when it writes through
    `context.write` and returns (awaited here)."""
    if hasattr(result, "__aiter__"):
        async for item in result:
            yield item
    elif inspect.isawaitable(result):
        await result
    else:
        for item in result or ():
            yield item
