"""The authentication gate's table covers every method served, and decides each without sockets
(a real server obeying it: test_auth_server.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, cast

import grpc
import pytest
from gencluster.auth import (
    METHOD_ACCESS,
    SERVICE_ACCESS,
    Access,
    PeerTokenGate,
    method_path,
)
from gencluster.proto import gencluster_pb2 as pb
from gencluster.wellknown import PEER_TOKEN_METADATA
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

pytestmark = pytest.mark.unit

TOKEN = "a-peer-token-long-enough-for-the-runtime"
EXPECTED_ACCESS = {
    "gencluster.v1.Client": Access.PUBLIC,
    "gencluster.v1.Peer": Access.PEER,
    "gencluster.v1.Admin": Access.PEER,
    "grpc.health.v1.Health": Access.PUBLIC,
    "grpc.reflection.v1alpha.ServerReflection": Access.PUBLIC,
}

OPERATOR_ONLY = {"Switchover", "Demote", "Merge", "PauseWrites"}
"""Admin methods that steer the cluster: the operator's alone (docs/security.md)."""


def served_services() -> Iterator[ServiceDescriptor]:
    """Every service a runtime's server registers, from the descriptors (not from the table)."""
    yield from pb.DESCRIPTOR.services_by_name.values()
    yield health_pb2.DESCRIPTOR.services_by_name["Health"]
    yield reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"]


def test_every_method_of_every_served_service_is_classified() -> None:
    walked: dict[str, Access] = {}
    for service in served_services():
        assert service.full_name in EXPECTED_ACCESS, f"{service.full_name}: classify it"
        for method in service.methods:
            path = method_path(service, method.name)
            expected = EXPECTED_ACCESS[service.full_name]
            if service.full_name == "gencluster.v1.Admin" and method.name in OPERATOR_ONLY:
                expected = Access.OPERATOR
            assert METHOD_ACCESS.get(path) is expected, path
            walked[path] = METHOD_ACCESS[path]
    assert dict(METHOD_ACCESS) == walked, "the table holds a method no served service has"
    assert {service.full_name for service in SERVICE_ACCESS} == set(EXPECTED_ACCESS)
    assert "/gencluster.v1.Admin/Status" in walked and "/grpc.health.v1.Health/Check" in walked


class FakeDetails:
    def __init__(self, method: str, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self.method = method
        self.invocation_metadata = metadata


def decide(
    method: str, metadata: tuple[tuple[str, str], ...] = (), *, implemented: bool = True
) -> str:
    """'through' when the gate continues to the servicer, 'unimplemented' when it lets gRPC say
    nothing implements the method, else the refusal's status code."""
    servicer_handler = object()

    async def continuation(details: Any) -> Any:
        return servicer_handler if implemented else None

    async def run() -> Any:
        gate = PeerTokenGate(TOKEN)
        return await gate.intercept_service(
            cast(Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
                 continuation),
            cast(grpc.HandlerCallDetails, FakeDetails(method, metadata)),
        )

    handler = asyncio.run(run())
    if handler is servicer_handler:
        return "through"
    if handler is None:
        return "unimplemented"
    assert handler.request_streaming and handler.response_streaming
    context = RecordingContext()
    with pytest.raises(Aborted):
        asyncio.run(handler.stream_stream(iter(()), context))
    return context.code.name


class Aborted(Exception):
    pass


class RecordingContext:
    code: grpc.StatusCode
    details: str

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code, self.details = code, details
        raise Aborted


@pytest.mark.parametrize("path", sorted(METHOD_ACCESS))
def test_the_gate_decides_every_method_by_its_table_entry(path: str) -> None:
    if METHOD_ACCESS[path] is Access.PUBLIC:
        assert decide(path) == "through"
    else:
        assert decide(path) == "UNAUTHENTICATED"
        assert decide(path, ((PEER_TOKEN_METADATA, "not-the-token"),)) == "UNAUTHENTICATED"
        assert decide(path, (("other", "x"), (PEER_TOKEN_METADATA, TOKEN))) == "through"


UNLISTED = ["/gencluster.v1.Admin/Backdoor", "/gencluster.v1.Secret/Call", "", "Admin/Status"]


@pytest.mark.parametrize("path", UNLISTED)
def test_a_served_method_not_in_the_table_is_refused_even_with_the_token(path: str) -> None:
    assert decide(path) == "PERMISSION_DENIED"
    assert decide(path, ((PEER_TOKEN_METADATA, TOKEN),)) == "PERMISSION_DENIED"


@pytest.mark.parametrize("path", UNLISTED)
def test_a_method_nothing_implements_is_left_to_grpcs_unimplemented(path: str) -> None:
    assert decide(path, implemented=False) == "unimplemented"


def test_an_empty_peer_token_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="empty"):
        PeerTokenGate("")
