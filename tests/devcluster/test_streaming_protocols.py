"""The pure halves of exec and port-forward: SPDY/3.1 framing and the remote command rules."""

from __future__ import annotations

import json
import struct
import zlib

import pytest
from gencluster_dev.machinery import remotecommand as rc
from gencluster_dev.machinery import spdy
from gencluster_dev.machinery.errors import ApiError

pytestmark = pytest.mark.unit

POD = {"metadata": {"name": "p", "namespace": "default", "uid": "u"},
       "spec": {"containers": [{"name": "main"}, {"name": "side"}]},
       "status": {"phase": "Running"}}


def test_the_header_dictionary_is_the_specifications() -> None:
    """Its Adler-32 is the dictionary id every SPDY/3 peer checks."""
    assert len(spdy.HEADER_DICTIONARY) == 1423
    assert zlib.adler32(spdy.HEADER_DICTIONARY) == 0xE3C6A7C2


def test_syn_streams_parse_however_the_bytes_are_sliced() -> None:
    deflate = spdy.new_deflate()
    wire = b"".join([
        spdy.encode_syn_stream(deflate, 1, {"streamType": ["error"], "port": ["80"],
                                            "requestID": ["0"]}),
        spdy.encode_syn_stream(deflate, 3, {"streamType": ["data"], "port": ["80"],
                                            "requestID": ["0"]}),
        *spdy.FrameWriter.data(3, b"hello", fin=True),
        spdy.FrameWriter.ping(1),
    ])
    reader = spdy.FrameReader()
    frames: list[spdy.Frame] = []
    for i in range(len(wire)):  # one byte at a time, as WebSocket messages may cut it
        frames += reader.feed(wire[i:i + 1])
    assert frames == [
        spdy.SynStream(1, {"streamtype": ["error"], "port": ["80"], "requestid": ["0"]}, False),
        spdy.SynStream(3, {"streamtype": ["data"], "port": ["80"], "requestid": ["0"]}, False),
        spdy.DataFrame(3, b"hello", True),
        spdy.Ping(1),
    ]


def test_replies_share_one_compressor_and_read_back() -> None:
    writer, reader = spdy.FrameWriter(), spdy.FrameReader()
    frames = reader.feed(writer.syn_reply(1) + writer.syn_reply(3)
                         + spdy.FrameWriter.rst_stream(5, spdy.REFUSED_STREAM)
                         + spdy.FrameWriter.goaway(3))
    assert frames == [spdy.Ignored(spdy.SYN_REPLY), spdy.Ignored(spdy.SYN_REPLY),
                      spdy.RstStream(5, spdy.REFUSED_STREAM), spdy.GoAway(3, 0)]


def test_large_data_is_split_into_frames_and_fin_rides_the_last() -> None:
    payload = b"x" * (spdy.MAX_DATA_LENGTH + 10)
    frames = spdy.FrameWriter.data(7, payload, fin=True)
    parsed = spdy.FrameReader().feed(b"".join(frames))
    assert [(f.stream_id, len(f.data), f.fin) for f in parsed  # type: ignore[union-attr]
            ] == [(7, spdy.MAX_DATA_LENGTH, False), (7, 10, True)]
    assert spdy.FrameWriter.data(7, b"", fin=True) == [struct.pack(">II", 7, 1 << 24)]


def test_bytes_that_are_not_spdy_are_a_protocol_error() -> None:
    with pytest.raises(spdy.ProtocolError):
        spdy.FrameReader().feed(struct.pack(">HHI", 0x8002, spdy.PING, 4) + b"\0\0\0\1")
    bad_block = struct.pack(">HHI", 0x8003, spdy.SYN_STREAM, 14) + b"\0" * 10 + b"zzzz"
    with pytest.raises(spdy.ProtocolError):
        spdy.FrameReader().feed(bad_block)


def test_exec_options_follow_kube_apiserver() -> None:
    options = rc.exec_options(POD, {"container": "side", "stdin": "true", "tty": "true"},
                              ["sh"])
    assert options == rc.ExecOptions(("sh",), "side", True, True, False, True)
    with pytest.raises(ApiError, match="at least 1 command"):
        rc.exec_options(POD, {"container": "main"}, [])
    with pytest.raises(ApiError, match="a container name must be specified for pod p"):
        rc.exec_options(POD, {}, ["true"])
    with pytest.raises(ApiError, match="container nope is not valid for pod p"):
        rc.exec_options(POD, {"container": "nope"}, ["true"])
    with pytest.raises(ApiError, match="invalid value for stdin"):
        rc.exec_options(POD, {"container": "main", "stdin": "maybe"}, ["true"])
    with pytest.raises(ApiError, match="completed pod"):
        rc.require_not_completed({**POD, "status": {"phase": "Succeeded"}})


def test_exit_status_is_what_kubectl_decodes() -> None:
    assert rc.exit_status(0, ["true"]) == {"metadata": {}, "status": "Success"}
    failure = rc.exit_status(3, ["sh", "-c", "exit 3"])
    assert failure["reason"] == "NonZeroExitCode"
    assert failure["details"] == {"causes": [{"reason": "ExitCode", "message": "3"}]}
    assert rc.exit_status(-9, ["sleep"])["details"]["causes"][0]["message"] == "137"
    assert json.loads(rc.status_json(failure)) == failure
    assert rc.start_failure_code(FileNotFoundError()) == 127
    assert rc.start_failure_code(PermissionError()) == 126


def test_terminal_sizes_and_forward_streams() -> None:
    assert rc.terminal_size(b'{"Width":120,"Height":40}') == (40, 120)
    assert rc.terminal_size(b"{}") is None
    assert rc.terminal_size(b'{"Width":-1,"Height":40}') is None
    assert rc.forward_stream({"streamtype": ["data"], "port": ["50051"],
                              "requestid": ["2"]}) == rc.ForwardStream("data", 50051, "2")
    assert "port" in str(rc.forward_stream({"streamtype": ["data"], "port": ["0"],
                                            "requestid": ["2"]}))
    assert "stream type" in str(rc.forward_stream({"streamtype": ["x"]}))
    assert "requestID" in str(rc.forward_stream({"streamtype": ["error"], "port": ["1"]}))


def test_exec_runs_with_the_containers_identity_and_capabilities() -> None:
    status = "Name:\tpython\nCapInh:\t0000000000000004\nCapAmb:\t0000000000000004\n"
    assert rc.ambient_capabilities(status) == ["dac_read_search"]
    assert rc.ambient_capabilities("CapAmb:\t0000000000000000\n") == []
    assert rc.ambient_capabilities("Name: x\n") == []
    assert rc.identity_argv("/usr/bin/setpriv", 200007, ["dac_read_search"]) == [
        "/usr/bin/setpriv", "--reuid=200007", "--regid=200007", "--clear-groups",
        "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search", "--"]
