"""The one authentication gate of a runtime's gRPC server.

Every call passes `PeerTokenGate`, a server interceptor that looks its method up in
`METHOD_ACCESS`, the single table of who may call what:

- `Access.PUBLIC`: the Client service (what the client Service routes to), grpc.health.v1
  (kubelet probes) and server reflection (grpcurl, debugging) need no credential;
- `Access.PEER`: the Peer service (a standby pulling state) and the Admin service (the operator,
  the kubectl plugin) need the cluster's peer token in the `gencluster-peer-token` metadata;
  without it, or with another one, the call fails with UNAUTHENTICATED and a message naming
  that key;
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
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, NoReturn

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from gencluster.proto import gencluster_pb2 as pb
from gencluster.wellknown import PEER_TOKEN_METADATA


class Access(enum.Enum):
    """Who may call a method."""

    PUBLIC = "public"
    """Anyone who can reach the port: the Client service, health checks, reflection."""

    PEER = "peer"
    """Holders of the cluster's peer token: the other replicas and the operator."""


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
    """Every method of `services`, by gRPC path, with its service's access."""
    return MappingProxyType({
        method_path(service, method.name): access
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


def _refusal(code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    """A handler that answers `code` without reading the request (see the module docstring)."""

    async def refuse(request_iterator: Any, context: grpc.aio.ServicerContext) -> NoReturn:
        await context.abort(code, message)
        raise AssertionError("abort returned")  # pragma: no cover

    return grpc.stream_stream_rpc_method_handler(refuse)


class PeerTokenGate(grpc.aio.ServerInterceptor):
    """Lets a call through only if `METHOD_ACCESS` (or the given table) allows it.

    The public path costs one dict lookup and an identity comparison; the token is only
    looked for on Peer and Admin calls, compared in constant time."""

    def __init__(self, peer_token: str, table: Mapping[str, Access] = METHOD_ACCESS) -> None:
        if not peer_token:
            # compare_digest("", "") is True: an empty token would open every Peer and
            # Admin method to callers that send no metadata at all.
            raise ValueError("the peer token must not be empty")
        self._token = peer_token.encode()
        self._table = table
        self._unauthenticated = _refusal(grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)

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
        if access is Access.PEER:
            if self._token_presented(handler_call_details.invocation_metadata):
                return await continuation(handler_call_details)
            return self._unauthenticated
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
