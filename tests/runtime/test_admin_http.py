"""The Admin bridge's pure parts: which methods it carries, the framing of streamed replies,
the status mapping, the timeout parameter and the address it dials (no sockets here; the
bridge itself runs in tests/operator/test_kubectl_plugin.py and test_tooling_through_apiserver)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import grpc
import pytest
from gencluster import admin_http
from gencluster.commands import AdminCallFailed, _proxy_error, admin_over_api
from gencluster.proto import gencluster_pb2 as pb

pytestmark = pytest.mark.unit


def test_every_admin_method_is_bridged_with_its_shape() -> None:
    methods = admin_http.admin_methods()
    assert methods["Status"] == admin_http.Bridged(
        "/gencluster.v1.Admin/Status", pb.StatusRequest, pb.StatusReply, False, False)
    assert methods["ExportState"].server_streaming and not methods["ExportState"].client_streaming
    assert methods["Restore"].client_streaming and methods["Restore"].reply is pb.RestoreReply
    names = {m.name for m in pb.DESCRIPTOR.services_by_name["Admin"].methods}
    assert set(methods) == names


def test_frames_round_trip_and_a_cut_body_is_refused() -> None:
    messages = [b"", b"a", b"x" * 70_000]
    body = b"".join(admin_http.frames(messages))
    assert admin_http.split_frames(body) == messages
    assert admin_http.split_frames(b"") == []
    with pytest.raises(ValueError, match="truncated frame:"):
        admin_http.split_frames(body[:-1])
    with pytest.raises(ValueError, match="truncated frame header"):
        admin_http.split_frames(b"\x00\x00")


def test_a_refused_token_is_403_not_401() -> None:
    """A 401 through pods/proxy would read as a refused API credential to kubectl."""
    assert admin_http.HTTP_STATUS[grpc.StatusCode.UNAUTHENTICATED] == 403
    assert admin_http.HTTP_STATUS[grpc.StatusCode.UNAVAILABLE] == 503


def test_timeout_parameter() -> None:
    assert admin_http.call_timeout({}) == admin_http.DEFAULT_TIMEOUT_SECONDS
    assert admin_http.call_timeout({"timeout": "2.5"}) == 2.5
    for bad in ("x", "0", "-1", str(admin_http.MAX_TIMEOUT_SECONDS + 1)):
        with pytest.raises(ValueError, match="timeout"):
            admin_http.call_timeout({"timeout": bad})


def test_the_bridge_dials_its_own_listen_address_or_loopback() -> None:
    assert admin_http.loopback_target("10.1.2.3", 50051) == "10.1.2.3:50051"
    assert admin_http.loopback_target("0.0.0.0", 50051) == "127.0.0.1:50051"
    assert admin_http.loopback_target("::", 50051) == "[::1]:50051"
    assert admin_http.loopback_target("fd00::7", 50051) == "[fd00::7]:50051"
    assert admin_http.loopback_target("localhost", 50051) == "localhost:50051"


class Body:
    """A request body arriving in pieces, as aiohttp's StreamReader hands it out."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def readexactly(self, size: int) -> bytes:
        piece, self.data = self.data[:size], self.data[size:]
        if len(piece) < size:
            raise asyncio.IncompleteReadError(piece, size)
        return piece


def read_all(data: bytes, max_frame: int = 100) -> list[bytes]:
    async def collect() -> list[bytes]:
        return [frame async for frame in admin_http.read_frames(Body(data), max_frame)]

    return asyncio.run(collect())


def test_streamed_frames_are_read_as_they_come_and_a_cut_stream_is_an_error() -> None:
    body = b"".join(admin_http.frames([b"one", b"", b"three"]))
    assert read_all(body) == [b"one", b"", b"three"]
    assert read_all(b"") == []
    with pytest.raises(ValueError, match="truncated frame:"):
        read_all(body[:-2])
    with pytest.raises(ValueError, match="truncated frame header"):
        read_all(body + b"\x00")
    with pytest.raises(ValueError, match="at most 4"):
        read_all(b"".join(admin_http.frames([b"12345"])), max_frame=4)


def test_a_proxied_failure_reads_as_the_runtimes_code_or_the_api_servers_status() -> None:
    bridge = admin_http.error_body("FAILED_PRECONDITION", "holds state")
    assert _proxy_error(412, bridge) == ("FAILED_PRECONDITION", "holds state")
    api_status = b'{"kind": "Status", "message": "error trying to reach service: refused"}'
    assert _proxy_error(503, api_status) == ("HTTP_503",
                                             "error trying to reach service: refused")
    assert _proxy_error(502, b"Bad Gateway\n") == ("HTTP_502", "Bad Gateway")


def test_a_pod_without_a_metrics_port_is_a_clear_failure() -> None:
    pod = SimpleNamespace(metadata=SimpleNamespace(name="id-0"), spec=SimpleNamespace(
        containers=[SimpleNamespace(ports=[SimpleNamespace(name="grpc", container_port=1)])]))
    with pytest.raises(AdminCallFailed, match="declares no 'metrics' port"):
        admin_over_api(None, "ns", pod, "Status", pb.StatusRequest(), "t", 1.0)
