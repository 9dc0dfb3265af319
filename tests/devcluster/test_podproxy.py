"""pods/proxy's pure parts: the `[SCHEME:]NAME[:PORT]` segment, the headers passed on and the
URL built (the forwarding runs end to end in tests/operator/test_tooling_through_apiserver.py
and test_kubectl_plugin.py)."""

from __future__ import annotations

import pytest
from gencluster_dev.apiserver import podproxy
from gencluster_dev.machinery.errors import ApiError

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("segment", "expected"), [
    ("web", ("http", "web", 80)),
    ("web:8080", ("http", "web", 8080)),
    ("https:web:8443", ("https", "web", 8443)),
    ("https:web:", ("https", "web", 80)),
])
def test_segments_kube_apiserver_accepts(segment: str, expected: tuple[str, str, int]) -> None:
    assert podproxy.parse_target(segment) == podproxy.ProxyTarget(*expected)


@pytest.mark.parametrize("segment", ["web:metrics", "web:0", "web:70000", "ftp:web:80",
                                     "a:b:c:d", ":80"])
def test_bad_segments_are_400(segment: str) -> None:
    with pytest.raises(ApiError) as error:
        podproxy.parse_target(segment)
    assert error.value.code == 400


def test_the_callers_credentials_and_hop_by_hop_headers_stay_behind() -> None:
    headers = [("Authorization", "Bearer secret"), ("Connection", "keep-alive"),
               ("X-Gencluster-Peer-Token", "t"), ("Accept", "a"), ("Accept", "b"),
               ("Host", "api"), ("Content-Type", "application/x-protobuf")]
    assert podproxy.forwarded_headers(headers) == [
        ("X-Gencluster-Peer-Token", "t"), ("Accept", "a"), ("Accept", "b"),
        ("Content-Type", "application/x-protobuf")]
    assert podproxy.returned_headers([("Transfer-Encoding", "chunked"), ("Set-Cookie", "1"),
                                      ("Set-Cookie", "2")]) == [("Set-Cookie", "1"),
                                                                ("Set-Cookie", "2")]


def test_target_url() -> None:
    target = podproxy.ProxyTarget("http", "web", 9090)
    assert podproxy.target_url(target, "10.0.0.7", "/admin/v1/Status", "timeout=2") == \
        "http://10.0.0.7:9090/admin/v1/Status?timeout=2"
    assert podproxy.target_url(target, "fd00::7", "", "") == "http://[fd00::7]:9090/"


def test_unreachable_is_kube_apiservers_503() -> None:
    error = podproxy.unreachable("dial tcp: refused")
    assert error.code == 503
    assert error.message == "error trying to reach service: dial tcp: refused"


@pytest.mark.parametrize(("raw", "path"), [
    ("/api/v1/namespaces/ns/pods/web:80/proxy", "/"),
    ("/api/v1/namespaces/ns/pods/web:80/proxy/", "/"),
    ("/api/v1/namespaces/ns/pods/web:80/proxy/a/b%20c/", "/a/b%20c/"),
    ("/api/v1/namespaces/proxy/pods/proxy-pod%3A80/proxy/proxy", "/proxy"),
])
def test_the_pod_gets_the_raw_path_after_proxy(raw: str, path: str) -> None:
    assert podproxy.proxied_path(raw) == path


def test_a_path_that_is_not_pods_proxy_is_400() -> None:
    with pytest.raises(ApiError) as error:
        podproxy.proxied_path("/api/v1/namespaces/ns/pods/web")
    assert error.value.code == 400
