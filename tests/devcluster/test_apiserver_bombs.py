"""The local API server against hostile clients: YAML alias bombs, deep nesting, huge bodies and
slow clients are answered with 4xx Status bodies (or cut off), change nothing, and never keep
the server from answering everyone else (issue #12, part 7)."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlparse

import pytest
from gencluster_dev.apiserver.server import MAX_BODY_BYTES
from gencluster_dev.machinery import decoding
from gencluster_testing.waiting import wait_for

from tests.devcluster.conftest import ADMIN_TOKEN, RunningApiServer, serving_apiserver

pytestmark = pytest.mark.integration

PATIENCE = 900.0
"""Header and body timeouts of the `patient` server: longer than any test here."""
SHORT_TIMEOUT = 2.0
"""Header and body timeouts of the `impatient` server, to see slow clients cut off."""

LAUGHS = "\n".join(
    ["apiVersion: v1", "kind: ConfigMap", "metadata: {name: bomb}", "data:",
     '  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"  {c}: &{c} [{','.join([f'*{p}'] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi",
                                                                  strict=True)]
).encode()
"""CVE-2019-11253's body: about 420 bytes that expand to 9**9 strings."""


@pytest.fixture(scope="module")
def patient(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApiServer]:
    """A server with long timeouts: slow clients stay connected for the whole of a test,
    however slow the machine (the defaults are 32 s for headers, 60 s for a body)."""
    with serving_apiserver(tmp_path_factory.mktemp("patient"), header_timeout=PATIENCE,
                           body_timeout=PATIENCE) as running:
        yield running


@pytest.fixture(scope="module")
def impatient(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApiServer]:
    with serving_apiserver(tmp_path_factory.mktemp("impatient"), header_timeout=SHORT_TIMEOUT,
                           body_timeout=SHORT_TIMEOUT) as running:
        yield running


def _resource_version(server: RunningApiServer) -> str:
    status, listing = server.request("GET", "/api/v1/configmaps")
    assert status == 200, listing
    return str(listing["metadata"]["resourceVersion"])


def _assert_status(answer: tuple[int, Any], code: int, reason: str, text: str) -> None:
    status, body = answer
    assert status == code, answer
    assert isinstance(body, dict), answer
    assert (body["kind"], body["status"], body["code"], body["reason"]) == (
        "Status", "Failure", code, reason), body
    assert text in body["message"], body


def _connect(server: RunningApiServer) -> socket.socket:
    url = urlparse(server.url)
    return socket.create_connection((url.hostname, url.port), timeout=60)


def _slow_headers(server: RunningApiServer) -> socket.socket:
    """A slowloris connection: a request line and half a header, and then nothing."""
    sock = _connect(server)
    sock.sendall(b"GET /api/v1/namespaces HTTP/1.1\r\nHost: x\r\nAuthoriz")
    return sock


def _slow_body(server: RunningApiServer, path: str) -> socket.socket:
    """Complete headers that promise a body, then only its first bytes."""
    sock = _connect(server)
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"kind\"".encode())
    return sock


def _closed(sock: socket.socket) -> bool:
    """Whether the server closed `sock` (everything it sent is drained first)."""
    sock.settimeout(0.2)
    try:
        while chunk := sock.recv(65536):
            del chunk
        return True
    except TimeoutError:
        return False
    except OSError:
        return True


# -- bodies -------------------------------------------------------------------------------------

def test_a_yaml_alias_bomb_is_refused_as_excessive_aliasing_and_stores_nothing(
    patient: RunningApiServer,
) -> None:
    before = _resource_version(patient)
    _assert_status(patient.request("POST", "/api/v1/namespaces/default/configmaps",
                                   raw=LAUGHS, content_type="application/yaml"),
                   400, "BadRequest", "document contains excessive aliasing")
    _assert_status(patient.request("PATCH", "/api/v1/namespaces/default/configmaps/bomb"
                                   "?fieldManager=bomber", raw=LAUGHS,
                                   content_type="application/apply-patch+yaml"),
                   400, "BadRequest", "document contains excessive aliasing")
    assert patient.request("GET", "/api/v1/namespaces/default/configmaps/bomb")[0] == 404
    assert _resource_version(patient) == before


@pytest.mark.parametrize("content_type", ["application/json", "application/yaml"])
def test_deep_nesting_is_refused_naming_the_limit(
    patient: RunningApiServer, content_type: str
) -> None:
    before = _resource_version(patient)
    depth = 100_000
    body = (b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"deep"},"x":'
            + b"[" * depth + b"]" * depth + b"}")
    _assert_status(patient.request("POST", "/api/v1/namespaces/default/configmaps", raw=body,
                                   content_type=content_type),
                   400, "BadRequest", f"at most {decoding.MAX_DEPTH} levels")
    _assert_status(patient.request("PATCH", "/api/v1/namespaces/default/configmaps/deep",
                                   raw=b'{"data":' + b"[" * depth + b"]" * depth + b"}",
                                   content_type="application/merge-patch+json"),
                   400, "BadRequest", "exceeded max depth")
    assert _resource_version(patient) == before


def test_a_body_over_three_mebibytes_is_refused_with_413(patient: RunningApiServer) -> None:
    before = _resource_version(patient)
    big = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"},
                      "data": {"k": "x" * MAX_BODY_BYTES}}).encode()
    _assert_status(patient.request("POST", "/api/v1/namespaces/default/configmaps", raw=big),
                   413, "RequestEntityTooLarge", "limit is 3145728")
    # The same without a Content-Length (chunked): counted as it arrives.
    url = urlparse(patient.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    chunks = (big[i:i + 65536] for i in range(0, len(big), 65536))
    connection.request("POST", "/api/v1/namespaces/default/configmaps", body=chunks,
                       headers={"Authorization": f"Bearer {ADMIN_TOKEN}",
                                "Content-Type": "application/json"}, encode_chunked=True)
    response = connection.getresponse()
    answer = (response.status, json.loads(response.read()))
    connection.close()
    _assert_status(answer, 413, "RequestEntityTooLarge", "limit is 3145728")
    assert _resource_version(patient) == before


# -- slow clients -------------------------------------------------------------------------------

def test_the_server_answers_everyone_while_slow_clients_hold_connections(
    patient: RunningApiServer,
) -> None:
    slow = [_slow_headers(patient) for _ in range(40)]
    slow += [_slow_body(patient, "/api/v1/namespaces/default/configmaps") for _ in range(20)]
    try:
        status, namespaces = patient.request("GET", "/api/v1/namespaces")
        assert status == 200 and namespaces["items"], namespaces
        listed = patient.kubectl("get", "namespaces", "-o", "name").stdout
        assert "namespace/default" in listed
        created = patient.request("POST", "/api/v1/namespaces/default/configmaps", {
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "meanwhile"}})
        assert created[0] == 201, created
        # The slow clients were in progress all along: none was answered or cut off yet.
        assert not any(_closed(sock) for sock in slow)
    finally:
        for sock in slow:
            sock.close()


def _post(server: RunningApiServer, body: bytes, content_type: str) -> int:
    """POST a body to the default namespace's ConfigMaps; the status code. Patient (a large
    YAML body waits its turn for a decoder)."""
    url = urlparse(server.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=300)
    try:
        connection.request("POST", "/api/v1/namespaces/default/configmaps", body=body,
                           headers={"Authorization": f"Bearer {ADMIN_TOKEN}",
                                    "Content-Type": content_type})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def test_the_server_answers_everyone_while_bombs_arrive(patient: RunningApiServer) -> None:
    """Bombs (and a large, valid YAML body, decoded off the event loop) keep arriving from
    other threads while a client lists and kubectl gets: every normal request succeeds, every
    bomb gets its 4xx."""
    many = "\n".join(f"  key{i}: {'v' * 40}" for i in range(50_000))
    large = f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: large}}\ndata:\n{many}\n"
    assert len(large) < MAX_BODY_BYTES
    bombs: list[tuple[bytes, str, set[int]]] = [
        (LAUGHS, "application/yaml", {400}),
        (b"[" * 200_000 + b"]" * 200_000, "application/json", {400}),
        (b"a: " + b"[" * 900 + b"]" * 900, "application/yaml", {400}),
        # Valid YAML: created once (or refused for its size), then AlreadyExists.
        (large.encode(), "application/yaml", {201, 409, 422}),
    ]
    stop = threading.Event()
    answers: list[list[int]] = [[] for _ in bombs]

    def bomber(index: int) -> None:
        body, content_type, _ = bombs[index]
        while not stop.is_set():
            answers[index].append(_post(patient, body, content_type))

    with ThreadPoolExecutor(len(bombs)) as pool:
        running = [pool.submit(bomber, index) for index in range(len(bombs))]
        try:
            for _ in range(5):
                status, _ = patient.request("GET", "/api/v1/namespaces/default/configmaps")
                assert status == 200
                assert "namespace/default" in patient.kubectl(
                    "get", "namespaces", "-o", "name").stdout
            wait_for(lambda: all(answers), 300, message="every bomb answered at least once")
        finally:
            stop.set()
        for future in running:
            future.result()
    for (_, _, expected), got in zip(bombs, answers, strict=True):
        assert set(got) <= expected, (expected, got)


def test_headers_that_never_complete_are_cut_off(impatient: RunningApiServer) -> None:
    sock = _slow_headers(impatient)
    try:
        wait_for(lambda: _closed(sock), 60, message="the server closing a slowloris connection")
    finally:
        sock.close()
    assert impatient.request("GET", "/api/v1/namespaces")[0] == 200


def test_a_body_that_never_arrives_is_answered_408_and_stores_nothing(
    impatient: RunningApiServer,
) -> None:
    before = _resource_version(impatient)
    sock = _slow_body(impatient, "/api/v1/namespaces/default/configmaps")
    received = b""
    try:
        sock.settimeout(60)  # the answer comes, and the server closes the connection after it
        while chunk := sock.recv(65536):
            received += chunk
    finally:
        sock.close()
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), received
    status = json.loads(body)
    assert (status["kind"], status["code"], status["reason"]) == ("Status", 408, "Timeout")
    assert "did not arrive within 2 seconds" in status["message"]
    assert _resource_version(impatient) == before
