"""DELETE with a protobuf DeleteOptions body, as client-go's typed clients send it.

Helm's release storage (a typed Secrets client) deletes every release Secret this way on
`helm uninstall`; a server that only reads JSON options fails the uninstall.
"""

from __future__ import annotations

import pytest
from gencluster_dev.machinery.protobuf import MAGIC, ProtobufError, decode_delete_options

from tests.devcluster.conftest import RunningApiServer

pytestmark = pytest.mark.integration

PROTOBUF = "application/vnd.kubernetes.protobuf"


def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _integer(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    type_meta = _length_delimited(1, api_version.encode()) + _length_delimited(2, kind.encode())
    return MAGIC + _length_delimited(1, type_meta) + _length_delimited(2, raw)


def _delete_options(*, grace: int | None = None, uid: str | None = None,
                    policy: str | None = None, dry_run: bool = False) -> bytes:
    raw = b""
    if grace is not None:
        raw += _integer(1, grace)
    if uid is not None:
        raw += _length_delimited(2, _length_delimited(1, uid.encode()))
    if policy is not None:
        raw += _length_delimited(4, policy.encode())
    if dry_run:
        raw += _length_delimited(5, b"All")
    return _envelope("v1", "DeleteOptions", raw)


def test_decode_keeps_a_zero_grace_period_and_reads_every_field() -> None:
    assert decode_delete_options(_envelope("v1", "DeleteOptions", b"")) == {}
    assert decode_delete_options(
        _delete_options(grace=0, uid="u-1", policy="Foreground", dry_run=True)
    ) == {"gracePeriodSeconds": 0, "preconditions": {"uid": "u-1"},
          "propagationPolicy": "Foreground", "dryRun": ["All"]}
    with pytest.raises(ProtobufError):
        decode_delete_options(_envelope("v1", "Secret", b""))
    with pytest.raises(ProtobufError):
        decode_delete_options(b"{}")


def test_delete_with_protobuf_options_over_http(
    apiserver: RunningApiServer, namespace: str
) -> None:
    base = f"/api/v1/namespaces/{namespace}/secrets"
    for name in ("kept", "gone", "guarded"):
        assert apiserver.request("POST", base, {"metadata": {"name": name}})[0] == 201
    status, _ = apiserver.request("DELETE", f"{base}/kept", raw=_delete_options(dry_run=True),
                                  content_type=PROTOBUF)
    assert status in (200, 202)
    assert apiserver.request("GET", f"{base}/kept")[0] == 200
    status, _ = apiserver.request("DELETE", f"{base}/gone",
                                  raw=_envelope("v1", "DeleteOptions", b""),
                                  content_type=PROTOBUF)
    assert status in (200, 202)
    assert apiserver.request("GET", f"{base}/gone")[0] == 404
    status, conflict = apiserver.request("DELETE", f"{base}/guarded",
                                         raw=_delete_options(uid="not-its-uid"),
                                         content_type=PROTOBUF)
    assert status == 409, conflict
    status, error = apiserver.request("DELETE", f"{base}/guarded", raw=b"k8s\x00garbage",
                                      content_type=PROTOBUF)
    assert status == 400 and "DeleteOptions" in error["message"]
