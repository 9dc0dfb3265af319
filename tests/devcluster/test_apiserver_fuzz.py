"""Property-based fuzzing of the local API server over HTTP (issue #12, part 8).

Hypothesis generates malformed and adversarial requests: bodies (random bytes, random JSON,
valid objects with random mutations, YAML and protobuf bombs) in every content type, patches of
every patch type against existing objects and their status and scale subresources, replaced
objects, deletions with random options, and lists with bad label and field selectors and bad
query parameters. They go to a real ApiServer (with the ClusteredServer CRD from crds/, so
schema validation, defaulting and CEL run too) over a real socket. Every answer must be a
Status-shaped 4xx or a success: never a 5xx, never a dropped connection, never a dead server;
and a refused request must change nothing (the store's resourceVersion is the same before and
after it).

Between examples the garbage collector is run to its fixpoint on the server's loop, so that the
background work a successful request may start (an object created with a dangling owner
reference is collected) is not mistaken for a change caused by the next, refused, request.

Each property runs `GENCLUSTER_FUZZ_EXAMPLES` examples (default 100: seconds for the module
here); a longer run raises it, like `GENCLUSTER_CHAOS_SECONDS` for the chaos test:

    GENCLUSTER_FUZZ_EXAMPLES=2000 .venv/bin/pytest -p no:randomly \\
        tests/devcluster/test_apiserver_fuzz.py

`GENCLUSTER_FUZZ_SEED` replays a run (the seed is printed in the summary). The summary line
(requests tried, answers by status, 5xx, dropped connections, state changes by refused
requests) is written to the terminal when the module ends.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlparse

import pytest
import yaml
from gencluster_dev.machinery.protobuf import MAGIC
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from tests.devcluster.conftest import ADMIN_TOKEN, RunningApiServer, serving_apiserver

EXAMPLES = int(os.environ.get("GENCLUSTER_FUZZ_EXAMPLES", "100"))
pytestmark = [pytest.mark.integration, pytest.mark.timeout(300 + EXAMPLES)]

ROOT = Path(__file__).resolve().parents[2]
CRD = yaml.safe_load((ROOT / "crds" / "clusteredservers.gencluster.io.yaml").read_text())
SEED = int(os.environ.get("GENCLUSTER_FUZZ_SEED") or random.SystemRandom().randrange(2**32))
NAMESPACE = "fuzz"
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

COLLECTIONS = {
    "configmaps": f"/api/v1/namespaces/{NAMESPACE}/configmaps",
    "pods": f"/api/v1/namespaces/{NAMESPACE}/pods",
    "leases": f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases",
    "clusteredservers": f"/apis/gencluster.io/v1alpha1/namespaces/{NAMESPACE}/clusteredservers",
}


def valid_object(kind: str, name: str) -> dict[str, Any]:
    """A valid object of each fuzzed collection, the seed of mutations."""
    meta = {"name": name, "labels": {"app": "fuzz"}}
    return {
        "configmaps": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
                       "data": {"k": "v"}},
        "pods": {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
                 "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}},
        "leases": {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
                   "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}},
        "clusteredservers": {"apiVersion": "gencluster.io/v1alpha1", "kind": "ClusteredServer",
                             "metadata": meta,
                             "spec": {"server": "gencluster_examples.id_server:IdServer",
                                      "replicas": 3}},
    }[kind]


# -- what the run saw ----------------------------------------------------------------------------

@dataclass
class Figures:
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    refused_changes: list[str] = field(default_factory=list)
    not_status: list[str] = field(default_factory=list)

    def line(self) -> str:
        refused = sum(n for code, n in self.statuses.items() if 400 <= code < 500)
        accepted = sum(n for code, n in self.statuses.items() if code < 400)
        by_code = ", ".join(f"{code}: {n}" for code, n in sorted(self.statuses.items()))
        return (f"API server fuzz (seed {SEED}, {EXAMPLES} examples per property): "
                f"{self.requests} requests, {refused} refused with 4xx, {accepted} accepted, "
                f"{len(self.server_errors)} 5xx, {len(self.dropped)} dropped connections, "
                f"{len(self.refused_changes)} state changes by refused requests, "
                f"{len(self.not_status)} 4xx without a Status body ({by_code})")


FIGURES = Figures()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory,
           request: pytest.FixtureRequest) -> Iterator[RunningApiServer]:
    with serving_apiserver(tmp_path_factory.mktemp("fuzz")) as running:
        status, body = running.request("POST", "/apis/apiextensions.k8s.io/v1/"
                                       "customresourcedefinitions", CRD)
        assert status == 201, body
        status, body = running.request("POST", "/api/v1/namespaces", {
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        assert status == 201, body
        status, body = running.request("POST", COLLECTIONS["clusteredservers"],
                                       valid_object("clusteredservers", "fuzz-target"))
        assert status == 201, body
        yield running
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line("")
            reporter.write_line(FIGURES.line())


# -- talking to the server -----------------------------------------------------------------------

def send(server: RunningApiServer, method: str, path: str, body: bytes | None,
         content_type: str | None) -> tuple[int, Any]:
    """One request on a fresh connection; (status, decoded body or raw bytes). A dropped
    connection or a timeout is recorded and returned as status 0."""
    url = urlparse(server.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    FIGURES.requests += 1
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        raw = response.read()
        status = response.status
    except (OSError, http.client.HTTPException) as error:
        FIGURES.dropped.append(f"{method} {path}: {error!r}")
        return 0, None
    finally:
        connection.close()
    FIGURES.statuses[status] += 1
    try:
        decoded: Any = json.loads(raw)
    except ValueError:
        decoded = raw
    return status, decoded


def settle(server: RunningApiServer) -> str:
    """Run the garbage collector to its fixpoint on the server's loop; the store's
    resourceVersion afterwards."""

    async def collect() -> str:
        for _ in range(100):
            if not server.server.gc.run_once():
                break
        return str(server.server.store.resource_version)

    return str(server.call(collect()))


def check(server: RunningApiServer, method: str, path: str, body: bytes | None,
          content_type: str | None) -> int:
    """Send one fuzzed request and judge the answer; returns the status."""
    before = settle(server)
    status, answer = send(server, method, path, body, content_type)
    shown = f"{method} {path} [{content_type}] {body[:300] if body else body!r}"
    if status == 0 or status >= 500:
        if status >= 500:
            FIGURES.server_errors.append(f"{shown} -> {status} {answer!r:.500}")
        alive, _ = send(server, "GET", "/healthz", None, None)
        raise AssertionError(f"{shown} -> {status} {answer!r:.500} (server alive: {alive})")
    if 400 <= status < 500:
        if method != "HEAD" and not (isinstance(answer, dict) and answer.get("kind") == "Status"
                                     and answer.get("code") == status):
            FIGURES.not_status.append(f"{shown} -> {status} {answer!r:.300}")
            raise AssertionError(f"{shown} -> {status} without a Status body: {answer!r:.300}")
        after = str(server.server.store.resource_version)
        if after != before:
            FIGURES.refused_changes.append(f"{shown} -> {status}")
            raise AssertionError(f"{shown} was refused ({status}) but the store changed "
                                 f"({before} -> {after})")
    return status


@contextlib.contextmanager
def fresh(server: RunningApiServer, kind: str) -> Iterator[str]:
    """A valid object of `kind` with a new name, for one example to attack; deleted after it
    (so the store, which every settling pass walks, stays small over a long run)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    status, body = server.request("POST", COLLECTIONS[kind], valid_object(kind, name))
    assert status == 201, body
    try:
        yield name
    finally:
        status, body = server.request(
            "DELETE", f"{COLLECTIONS[kind]}/{name}?gracePeriodSeconds=0")
        assert status in (200, 202, 404), body


# -- strategies ----------------------------------------------------------------------------------

KEYS = st.sampled_from([
    "apiVersion", "kind", "metadata", "name", "namespace", "generateName", "labels",
    "annotations", "finalizers", "ownerReferences", "resourceVersion", "uid", "generation",
    "deletionTimestamp", "managedFields", "spec", "status", "data", "binaryData", "replicas",
    "args", "server", "template", "containers", "image", "holderIdentity", "conditions",
    "$patch", "$retainKeys", "$deleteFromPrimitiveList/finalizers", "$setElementOrder/containers",
    "x-kubernetes", "", "\u0000", "a" * 300,
]) | st.text(max_size=12)

SCALARS = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40)
           | st.sampled_from(["", "0", "-1", "9" * 30, "$(POD_IP)", "true", "Sync", "Fenced",
                              "busybox:1", "a:B", "1Gi", "gencluster.io/role", "\ud7ff"]))
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children,
                                                                       max_size=4),
    max_leaves=20,
)
POINTERS = st.sampled_from([
    "", "/", "/metadata", "/metadata/labels/app", "/metadata/labels/a~1b", "/metadata/name",
    "/metadata/finalizers/-", "/metadata/finalizers/0", "/metadata/ownerReferences/0/uid",
    "/spec", "/spec/replicas", "/spec/containers/0/image", "/spec/containers/-",
    "/spec/args/x", "/data/k", "/data/-", "/status/conditions/0", "/~2", "/a/b/c/d", "x",
    "/spec/containers/99999999999999999999",
]) | st.lists(KEYS, max_size=5).map(
    lambda parts: "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts))
JSON_PATCHES = st.lists(st.fixed_dictionaries(
    {"op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test", "bogus"]),
     "path": POINTERS},
    optional={"from": POINTERS, "value": JSON_VALUES}), max_size=5)


@st.composite
def mutated_objects(draw: st.DrawFn, kind: str, name: str) -> Any:
    """A valid object with a few random changes at random places."""
    obj: Any = valid_object(kind, name)
    for _ in range(draw(st.integers(0, 4))):
        path = draw(st.lists(KEYS, min_size=1, max_size=4))
        target = obj
        for key in path[:-1]:
            if not isinstance(target.get(key), dict):
                target[key] = {}
            target = target[key]
        target[path[-1]] = draw(JSON_VALUES)
    if draw(st.booleans()):
        obj = draw(JSON_VALUES) if draw(st.integers(0, 9)) == 0 else obj
    return obj


def _deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _laughs(levels: int) -> bytes:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines).encode()


ADVERSARIAL = st.sampled_from([
    b"", b" ", b"null", b"[]", b"{}", b'"x"', b"1e999", b'{"a": NaN}', b"{" * 5, _deep(150),
    _deep(100_000), _laughs(9), _laughs(4), b"a: &a [*a]", b"a: !!python/object/apply:os.system"
    b" [true]", b"a: !!binary aGVsbG8=", b"---\na: 1\n---\nb: 2", b"\xff\xfe\xfd",
    b"\xef\xbb\xbf{}", b"{\"k\": \"\\ud800\"}", b'{"metadata": {"name": "' + b"n" * 70_000
    + b'"}}', MAGIC, MAGIC + b"\x0a\x80", MAGIC + b"\x0a\x05\x0a\x02v1\x12\xff\xff\xff\xff\x0f",
    MAGIC + bytes(range(256)), b"a:\n" + b"".join(b" " * i + b"b:\n" for i in range(1, 120)),
])


@st.composite
def bodies(draw: st.DrawFn, kind: str, name: str) -> bytes:
    """A request body: random bytes, random JSON or YAML of a (mutated) object, or a bomb."""
    choice = draw(st.integers(0, 5))
    if choice == 0:
        return draw(st.binary(max_size=300))
    if choice == 1:
        return draw(ADVERSARIAL)
    value = draw(mutated_objects(kind, name))
    if choice == 2:
        return yaml.safe_dump(value).encode()
    text = json.dumps(value)
    if choice == 3 and text:
        cut = draw(st.integers(0, len(text)))
        return text[:cut].encode()  # truncated JSON
    return text.encode()


BODY_TYPES = st.sampled_from([
    "application/json", "application/yaml", "application/vnd.kubernetes.protobuf",
    "application/json; charset=utf-8", "text/plain", "", "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x", "application/json;charset=utf-16",
]) | st.none()
PATCH_TYPES = st.sampled_from([
    "application/merge-patch+json", "application/json-patch+json",
    "application/strategic-merge-patch+json", "application/apply-patch+yaml",
    "application/apply-patch+cbor", "application/json",
])
WORDS = st.text(alphabet="abcz019-_./=!,()~ \t<>*%", max_size=30)
SELECTORS = WORDS | st.sampled_from([
    "a in (b", "a notin ()", "!a,!b", "a=b,c!=d,e", "a==", "=a", "a in (b,c), d", "x" * 400,
    "metadata.name=", "metadata.name!=x,metadata.namespace=fuzz", "spec.nodeName=n",
    "status.phase in (Running)", "metadata.name==a==b", "a=b=c", "a\u0000=b", "",
])
PARAMETERS = st.dictionaries(
    st.sampled_from(["labelSelector", "fieldSelector", "limit", "continue", "resourceVersion",
                     "resourceVersionMatch", "dryRun", "fieldValidation", "fieldManager",
                     "force", "propagationPolicy", "gracePeriodSeconds", "orphanDependents",
                     "pretty", "includeObject", "sendInitialEvents", "allowWatchBookmarks"]),
    SELECTORS | st.integers(-(2**40), 2**70).map(str),
    max_size=4,
)


def with_query(path: str, query: dict[str, str]) -> str:
    return f"{path}?{urlencode(query)}" if query else path


# -- properties ----------------------------------------------------------------------------------

@FUZZ
@seed(SEED)
@given(data=st.data(), kind=st.sampled_from(sorted(COLLECTIONS)), content_type=BODY_TYPES,
       query=PARAMETERS)
def test_fuzzed_creates(server: RunningApiServer, data: st.DataObject, kind: str,
                        content_type: str | None, query: dict[str, str]) -> None:
    body = data.draw(bodies(kind, f"c-{uuid.uuid4().hex[:10]}"))
    check(server, "POST", with_query(COLLECTIONS[kind], query), body, content_type)


@FUZZ
@seed(SEED)
@given(data=st.data(), kind=st.sampled_from(sorted(COLLECTIONS)), patch_type=PATCH_TYPES,
       subresource=st.sampled_from(["", "/status", "/scale"]),
       query=PARAMETERS)
def test_fuzzed_patches(server: RunningApiServer, data: st.DataObject, kind: str,
                        patch_type: str, subresource: str, query: dict[str, str]) -> None:
    with fresh(server, kind) as name:
        if patch_type == "application/json-patch+json" and data.draw(st.booleans()):
            body = json.dumps(data.draw(JSON_PATCHES)).encode()
        else:
            body = data.draw(bodies(kind, name))
        if patch_type.startswith("application/apply-patch"):
            query = {**query, "fieldManager": query.get("fieldManager") or "fuzz"}
        check(server, "PATCH", with_query(f"{COLLECTIONS[kind]}/{name}{subresource}", query),
              body, patch_type)


@FUZZ
@seed(SEED)
@given(data=st.data(), kind=st.sampled_from(sorted(COLLECTIONS)), content_type=BODY_TYPES,
       subresource=st.sampled_from(["", "/status", "/scale"]), query=PARAMETERS)
def test_fuzzed_updates(server: RunningApiServer, data: st.DataObject, kind: str,
                        content_type: str | None, subresource: str,
                        query: dict[str, str]) -> None:
    with fresh(server, kind) as name:
        body = data.draw(bodies(kind, name))
        check(server, "PUT", with_query(f"{COLLECTIONS[kind]}/{name}{subresource}", query),
              body, content_type)


@FUZZ
@seed(SEED)
@given(data=st.data(), kind=st.sampled_from(sorted(COLLECTIONS)), content_type=BODY_TYPES,
       query=PARAMETERS)
def test_fuzzed_deletes(server: RunningApiServer, data: st.DataObject, kind: str,
                        content_type: str | None, query: dict[str, str]) -> None:
    with fresh(server, kind) as name:
        delete_with_options(server, data, kind, name, content_type, query)


def delete_with_options(server: RunningApiServer, data: st.DataObject, kind: str, name: str,
                        content_type: str | None, query: dict[str, str]) -> None:
    options = data.draw(st.one_of(
        st.fixed_dictionaries({}, optional={
            "kind": st.sampled_from(["DeleteOptions", "Pod", ""]),
            "apiVersion": st.sampled_from(["v1", "meta.k8s.io/v1", "x"]),
            "propagationPolicy": st.sampled_from(["Orphan", "Background", "Foreground", "x"])
            | SCALARS,
            "gracePeriodSeconds": SCALARS,
            "preconditions": st.fixed_dictionaries({}, optional={"uid": SCALARS,
                                                                 "resourceVersion": SCALARS}),
            "dryRun": st.sampled_from([["All"], ["x"], "All"]) | SCALARS,
            "orphanDependents": SCALARS,
        }).map(lambda value: json.dumps(value).encode()),
        bodies(kind, name),
    ))
    check(server, "DELETE", with_query(f"{COLLECTIONS[kind]}/{name}", query), options,
          content_type)


@FUZZ
@seed(SEED)
@given(kind=st.sampled_from(sorted(COLLECTIONS)), query=PARAMETERS,
       label=SELECTORS, field_selector=SELECTORS, namespaced=st.booleans())
def test_fuzzed_lists_and_selectors(server: RunningApiServer, kind: str,
                                    query: dict[str, str], label: str, field_selector: str,
                                    namespaced: bool) -> None:
    path = COLLECTIONS[kind]
    if not namespaced:
        path = path.replace(f"/namespaces/{NAMESPACE}", "")
    query = {**query, "labelSelector": label, "fieldSelector": field_selector}
    query.pop("sendInitialEvents", None)  # a list, not a watch
    check(server, "GET", with_query(path, query), None, None)


@FUZZ
@seed(SEED)
@given(segments=st.lists(st.text(max_size=20) | st.sampled_from(
    ["api", "apis", "v1", "namespaces", NAMESPACE, "configmaps", "gencluster.io", "v1alpha1",
     "clusteredservers", "status", "scale", "log", "token", "binding", "..", "%2e%2e", "%00"]),
    max_size=7), method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS",
                                         "HEAD"]))
def test_fuzzed_paths(server: RunningApiServer, segments: list[str], method: str) -> None:
    path = "/" + "/".join(quote(s, safe="%") for s in segments)
    body = b"{}" if method in ("POST", "PUT", "PATCH") else None
    content_type = "application/merge-patch+json" if method == "PATCH" else "application/json"
    check(server, method, path, body, content_type)


CR = COLLECTIONS["clusteredservers"]


@pytest.mark.parametrize(
    ("method", "path", "body", "content_type", "code"),
    [
        # apiVersion of the wrong JSON type: was a 500 (AttributeError).
        ("POST", CR, b'{"apiVersion": {"a": 1}, "kind": "ClusteredServer", "metadata": '
         b'{"name": "x"}, "spec": {"server": "a:B"}}', "application/json", 400),
        ("POST", COLLECTIONS["configmaps"], b'{"apiVersion": "v1", "kind": ["ConfigMap"], '
         b'"metadata": {"name": "x"}}', "application/json", 400),
        # An owner reference that is not an object on a custom resource: was stored, and the
        # garbage collector's next pass crashed on it, ending collection for good.
        ("POST", CR, b'{"apiVersion": "gencluster.io/v1alpha1", "kind": "ClusteredServer", '
         b'"metadata": {"name": "owned", "ownerReferences": ["x"]}, "spec": {"server": "a:B"}}',
         "application/json", 400),
        # A Scale whose metadata is not an object: was a 500 (AttributeError).
        ("PUT", f"{CR}/fuzz-target/scale", b'{"metadata": true, "spec": {"replicas": 2}}',
         "application/json", 400),
        ("PUT", f"{CR}/fuzz-target/scale", b'{"metadata": {"resourceVersion": 5}, "spec": '
         b'{"replicas": 2}}', "application/json", 400),
        # A path with a newline: was aiohttp's plain-text 404, not a Status.
        ("GET", "/api/v1/%0A", None, None, 404),
    ],
)
def test_inputs_the_fuzzer_found(server: RunningApiServer, method: str, path: str,
                                 body: bytes | None, content_type: str | None,
                                 code: int) -> None:
    assert check(server, method, path, body, content_type) == code


def test_a_warning_quoting_a_control_character_is_escaped(server: RunningApiServer) -> None:
    """An unknown field named with a control character is reported in a Warning header; the
    raw character made aiohttp refuse the header and drop the connection after the object was
    created."""
    with fresh(server, "configmaps") as name:
        body = json.dumps({**valid_object("configmaps", name), "\u001f\n": 1}).encode()
        assert check(server, "PUT", f"{COLLECTIONS['configmaps']}/{name}", body,
                     "application/json") == 200


def test_the_fuzzed_server_is_healthy_and_the_figures_are_clean(server: RunningApiServer) -> None:
    """Runs last in the module: the summary of every property above."""
    assert server.request("GET", "/healthz")[0] == 200
    assert FIGURES.server_errors == [] and FIGURES.dropped == []
    assert FIGURES.refused_changes == [] and FIGURES.not_status == []
