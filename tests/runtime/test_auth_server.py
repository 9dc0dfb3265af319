"""A real grpc.aio server on a real socket obeys the authentication gate, one method of each RPC
shape behind it (the table itself: test_auth.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace
from typing import Any, cast

import grpc
import pytest
from gencluster.auth import (
    UNAUTHENTICATED_MESSAGE,
    Access,
    PeerTokenGate,
)
from gencluster.codec import JsonCodec
from gencluster.node import Node
from gencluster.proto import gencluster_pb2 as pb
from gencluster.proto import gencluster_pb2_grpc as pb_grpc
from gencluster.services import HealthReporter, build_server
from gencluster.wellknown import PEER_TOKEN_METADATA
from grpc_health.v1 import health_pb2, health_pb2_grpc

pytestmark = pytest.mark.integration

TOKEN = "a-peer-token-long-enough-for-the-runtime"
EXPECTED_ACCESS = {
    "gencluster.v1.Client": Access.PUBLIC,
    "gencluster.v1.Peer": Access.PEER,
    "gencluster.v1.Admin": Access.PEER,
    "grpc.health.v1.Health": Access.PUBLIC,
    "grpc.reflection.v1alpha.ServerReflection": Access.PUBLIC,
}




class EchoAdmin(pb_grpc.AdminServicer):
    async def Status(self, request: pb.StatusRequest, context: Any) -> pb.StatusReply:
        return pb.StatusReply(identity="echo")

    async def ExportState(self, request: Any, context: Any) -> AsyncIterator[pb.SnapshotChunk]:
        yield pb.SnapshotChunk(epoch=7)

    async def Merge(self, request_iterator: Any, context: Any) -> pb.MergeReply:
        async for _ in request_iterator:
            pass
        return pb.MergeReply(epoch=7)


class EchoPeer(pb_grpc.PeerServicer):
    async def Replicate(self, request_iterator: Any, context: Any) -> AsyncIterator[Any]:
        async for _ in request_iterator:
            yield pb.ReplicateDown()


class EchoClient(pb_grpc.ClientServicer):
    async def Call(self, request: pb.CallRequest, context: Any) -> pb.CallReply:
        return pb.CallReply(epoch=3)


MADE_UP = "/gencluster.v1.Admin/MadeUp"
UNLISTED_SERVED = "/gencluster.v1.Unlisted/Leak"


def _unlisted_handler() -> grpc.GenericRpcHandler:
    """A servicer registered on the server but absent from the table: must stay unreachable."""
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: b"secret")
    return grpc.method_handlers_generic_handler("gencluster.v1.Unlisted", {"Leak": handler})


async def _each_shape(channel: grpc.aio.Channel, metadata: Any) -> dict[str, Any]:
    """One call of each shape; the status code of each (OK when it went through)."""
    admin = pb_grpc.AdminStub(channel)
    peer = pb_grpc.PeerStub(channel)

    async def merge_chunks() -> AsyncIterator[pb.MergeChunk]:
        yield pb.MergeChunk(origin=pb.MergeOrigin(source="a"))

    async def replicate_up() -> AsyncIterator[Any]:
        yield pb.ReplicateUp()

    async def unary_stream() -> list[Any]:
        return [chunk async for chunk in admin.ExportState(pb.ExportStateRequest(),
                                                            metadata=metadata, timeout=5)]

    async def stream_stream() -> list[Any]:
        return [message async for message in peer.Replicate(replicate_up(), metadata=metadata,
                                                             timeout=5)]

    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "unary_unary": lambda: admin.Status(pb.StatusRequest(), metadata=metadata, timeout=5),
        "unary_stream": unary_stream,
        "stream_unary": lambda: admin.Merge(merge_chunks(), metadata=metadata, timeout=5),
        "stream_stream": stream_stream,
    }
    codes: dict[str, Any] = {}
    for shape, call in calls.items():
        try:
            await call()
        except grpc.aio.AioRpcError as error:
            codes[shape] = (error.code(), error.details())
        else:
            codes[shape] = grpc.StatusCode.OK
    return codes


async def _against_a_real_server() -> dict[str, Any]:
    server = grpc.aio.server(interceptors=[PeerTokenGate(TOKEN)])
    pb_grpc.add_AdminServicer_to_server(EchoAdmin(), server)
    pb_grpc.add_PeerServicer_to_server(EchoPeer(), server)
    pb_grpc.add_ClientServicer_to_server(EchoClient(), server)
    server.add_generic_rpc_handlers((_unlisted_handler(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    results: dict[str, Any] = {}
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            results["no token"] = await _each_shape(channel, None)
            results["wrong token"] = await _each_shape(
                channel, ((PEER_TOKEN_METADATA, "x" * len(TOKEN)),)
            )
            results["token"] = await _each_shape(channel, ((PEER_TOKEN_METADATA, TOKEN),))
            reply = await pb_grpc.ClientStub(channel).Call(pb.CallRequest(), timeout=5)
            results["client call"] = reply.epoch
            for name, path in (("made up", MADE_UP), ("unlisted", UNLISTED_SERVED)):
                try:
                    await channel.unary_unary(path)(b"", metadata=((PEER_TOKEN_METADATA, TOKEN),),
                                                    timeout=5)
                except grpc.aio.AioRpcError as error:
                    results[name] = (error.code(), error.details())
    finally:
        await server.stop(None)
    return results


def test_a_real_server_enforces_the_gate_for_all_four_rpc_shapes() -> None:
    results = asyncio.run(_against_a_real_server())
    refused = (grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED_MESSAGE)
    shapes = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
    assert results["no token"] == dict.fromkeys(shapes, refused)
    assert results["wrong token"] == dict.fromkeys(shapes, refused)
    assert PEER_TOKEN_METADATA in UNAUTHENTICATED_MESSAGE
    assert results["token"] == dict.fromkeys(shapes, grpc.StatusCode.OK)
    assert results["client call"] == 3
    code, details = results["unlisted"]
    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert UNLISTED_SERVED in details
    assert results["made up"][0] is grpc.StatusCode.UNIMPLEMENTED


async def _build_server_refuses_a_tokenless_admin_call() -> tuple[Any, Any]:
    stand_in = SimpleNamespace(codec=JsonCodec(),
                               config=SimpleNamespace(peer_token=TOKEN, tls=None))
    node = cast(Node, stand_in)
    server = build_server(node, HealthReporter(node))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await pb_grpc.AdminStub(channel).Status(pb.StatusRequest(), timeout=5)
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=5
            )
    finally:
        await server.stop(None)
    return refused.value.code(), health.status


def test_build_server_puts_every_call_behind_the_gate() -> None:
    code, health_status = asyncio.run(_build_server_refuses_a_tokenless_admin_call())
    assert code is grpc.StatusCode.UNAUTHENTICATED
    # Health stays public: kubelet probes carry no token (grpc's servicer starts with "" set).
    assert health_status == health_pb2.HealthCheckResponse.SERVING
