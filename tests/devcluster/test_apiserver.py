"""The REST surface over HTTP: verbs, metadata, pods, services, auth, watches, bad input."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import time
from typing import Any
from urllib.parse import urlparse

import aiohttp
import pytest
from gencluster_dev.apiserver import watch as watch_module
from gencluster_dev.apiserver.server import ApiServer
from gencluster_dev.machinery.resources import BUILTINS
from gencluster_testing.waiting import wait_for, wait_for_async

from tests.devcluster.conftest import RunningApiServer

pytestmark = pytest.mark.integration


def cm(name: str, data: dict[str, str] | None = None, **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, **meta},
            "data": data or {"k": "v"}}


def pod(name: str, containers: int = 1, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": f"c{i}", "image": "busybox:1"}
                                    for i in range(containers)], **spec}}


def watch_lines(server: RunningApiServer, path: str, count: int,
                timeout: float = 10.0) -> list[dict[str, Any]]:
    """Read up to `count` watch events (fewer if the server ends the stream)."""
    url = urlparse(server.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    connection.request("GET", path, headers={"Authorization": "Bearer test-admin-token"})
    response = connection.getresponse()
    assert response.status == 200
    events = []
    deadline = time.monotonic() + timeout
    while len(events) < count and time.monotonic() < deadline:
        line = response.readline()
        if not line:
            break
        events.append(json.loads(line))
    connection.close()
    return events


def watch_to_end(server: RunningApiServer, path: str,
                 timeout: float = 10.0) -> list[dict[str, Any]]:
    """Every event of a watch that the server must end by itself; fails if the stream is still
    open (or silent) at `timeout`."""
    url = urlparse(server.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    connection.request("GET", path, headers={"Authorization": "Bearer test-admin-token"})
    response = connection.getresponse()
    assert response.status == 200
    events = []
    deadline = time.monotonic() + timeout
    try:
        while line := response.readline():  # a silent open stream raises TimeoutError
            events.append(json.loads(line))
            assert time.monotonic() < deadline, f"the server never ended the watch: {events}"
    finally:
        connection.close()
    return events


# -- objects and metadata ---------------------------------------------------------------------

def test_create_get_update_delete_with_server_metadata(
    apiserver: RunningApiServer, namespace: str
) -> None:
    base = f"/api/v1/namespaces/{namespace}/configmaps"
    status, created = apiserver.request("POST", base, cm("a"))
    assert status == 201
    meta = created["metadata"]
    assert meta["uid"] and meta["creationTimestamp"] and meta["resourceVersion"]
    status, fetched = apiserver.request("GET", f"{base}/a")
    assert status == 200 and fetched == created
    fetched["data"] = {"k": "w"}
    status, updated = apiserver.request("PUT", f"{base}/a", fetched)
    assert status == 200
    assert int(updated["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    status, error = apiserver.request("PUT", f"{base}/a", fetched)  # stale resourceVersion
    assert status == 409 and error["reason"] == "Conflict"
    assert error["message"] == (
        'Operation cannot be fulfilled on configmaps "a": the object has been modified; '
        "please apply your changes to the latest version and try again")
    del fetched["metadata"]["resourceVersion"]  # unconditional update
    fetched["data"] = {"k": "x"}
    status, forced = apiserver.request("PUT", f"{base}/a", fetched)
    assert status == 200 and forced["data"] == {"k": "x"}
    status, error = apiserver.request("POST", base, cm("a"))
    assert (status, error["reason"]) == (409, "AlreadyExists")
    status, _ = apiserver.request("DELETE", f"{base}/a")
    assert status == 200
    status, error = apiserver.request("GET", f"{base}/a")
    assert (status, error["kind"], error["reason"]) == (404, "Status", "NotFound")
    assert error["details"] == {"name": "a", "kind": "configmaps"}


def test_generate_name_and_list_selectors_and_pages(
    apiserver: RunningApiServer, namespace: str
) -> None:
    base = f"/api/v1/namespaces/{namespace}/configmaps"
    names = set()
    for i in range(5):
        body = cm("", labels={"app": "x" if i % 2 else "y"})
        del body["metadata"]["name"]
        body["metadata"]["generateName"] = "gen-"
        status, created = apiserver.request("POST", base, body)
        assert status == 201
        assert created["metadata"]["name"].startswith("gen-")
        names.add(created["metadata"]["name"])
    assert len(names) == 5
    status, listing = apiserver.request("GET", f"{base}?labelSelector=app%3Dx")
    assert len(listing["items"]) == 2
    assert listing["metadata"]["resourceVersion"] == str(apiserver.server.store.resource_version)
    status, listing = apiserver.request("GET", f"{base}?labelSelector=app+in+(x,y),app!=y")
    assert len(listing["items"]) == 2
    first_name = sorted(names)[0]
    status, listing = apiserver.request("GET", f"{base}?fieldSelector=metadata.name%3D{first_name}")
    assert [i["metadata"]["name"] for i in listing["items"]] == [first_name]
    seen, token = [], ""
    while True:
        status, page = apiserver.request("GET", f"{base}?limit=2&continue={token}")
        seen += [i["metadata"]["name"] for i in page["items"]]
        token = page["metadata"].get("continue", "")
        if not token:
            break
    assert seen == sorted(names)


def test_generation_counts_spec_changes_only_for_status_resources(
    apiserver: RunningApiServer, namespace: str
) -> None:
    base = f"/apis/apps/v1/namespaces/{namespace}/deployments"
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
                  "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}},
                           "template": {"metadata": {"labels": {"a": "b"}},
                                        "spec": {"containers": [{"name": "c", "image": "i"}]}}}}
    _, created = apiserver.request("POST", base, deployment)
    assert created["metadata"]["generation"] == 1
    _, patched = apiserver.request("PATCH", f"{base}/d", {"metadata": {"labels": {"x": "y"}}},
                                   content_type="application/merge-patch+json")
    assert patched["metadata"]["generation"] == 1
    _, patched = apiserver.request("PATCH", f"{base}/d", {"status": {"replicas": 7}},
                                   content_type="application/merge-patch+json")
    assert "status" not in patched or patched["status"].get("replicas") != 7
    _, patched = apiserver.request("PATCH", f"{base}/d/status", {"status": {"replicas": 7}},
                                   content_type="application/merge-patch+json")
    assert patched["status"]["replicas"] == 7 and patched["metadata"]["generation"] == 1
    _, scaled = apiserver.request("PATCH", f"{base}/d/scale", {"spec": {"replicas": 3}},
                                  content_type="application/merge-patch+json")
    assert scaled["kind"] == "Scale" and scaled["spec"]["replicas"] == 3
    assert scaled["status"]["replicas"] == 7
    _, fetched = apiserver.request("GET", f"{base}/d")
    assert fetched["spec"]["replicas"] == 3 and fetched["metadata"]["generation"] == 2


def test_strategic_merge_patch_merges_containers_by_name(
    apiserver: RunningApiServer, namespace: str
) -> None:
    base = f"/api/v1/namespaces/{namespace}/pods"
    apiserver.request("POST", base, pod("p", containers=2))
    status, patched = apiserver.request(
        "PATCH", f"{base}/p", {"spec": {"containers": [{"name": "c1", "image": "busybox:2"}]}},
        content_type="application/strategic-merge-patch+json")
    assert status == 200, patched
    images = {c["name"]: c["image"] for c in patched["spec"]["containers"]}
    assert images == {"c0": "busybox:1", "c1": "busybox:2"}


# -- pods -------------------------------------------------------------------------------------

def test_pod_defaults_binding_and_graceful_delete(
    apiserver: RunningApiServer, namespace: str
) -> None:
    base = f"/api/v1/namespaces/{namespace}/pods"
    _, created = apiserver.request("POST", base, pod("p", terminationGracePeriodSeconds=12))
    assert created["status"]["phase"] == "Pending"
    assert created["spec"]["restartPolicy"] == "Always"
    assert created["spec"]["serviceAccountName"] == "default"
    binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"},
               "target": {"apiVersion": "v1", "kind": "Node", "name": "node-1"}}
    status, _ = apiserver.request("POST", f"{base}/p/binding", binding)
    assert status == 201
    status, error = apiserver.request("POST", f"{base}/p/binding", binding)
    assert (status, error["reason"]) == (409, "Conflict")
    status, deleting = apiserver.request("DELETE", f"{base}/p")
    assert status in (200, 202)
    assert deleting["metadata"]["deletionGracePeriodSeconds"] == 12
    assert deleting["metadata"]["deletionTimestamp"]
    status, still = apiserver.request("GET", f"{base}/p")
    assert status == 200
    wrong_uid = {"preconditions": {"uid": "not-the-uid"}, "gracePeriodSeconds": 0}
    status, error = apiserver.request("DELETE", f"{base}/p", wrong_uid)
    assert (status, error["reason"]) == (409, "Conflict")
    status, _ = apiserver.request(
        "DELETE", f"{base}/p",
        {"preconditions": {"uid": still["metadata"]["uid"]}, "gracePeriodSeconds": 0})
    assert status == 200
    assert apiserver.request("GET", f"{base}/p")[0] == 404
    apiserver.request("POST", base, pod("unbound"))
    status, _ = apiserver.request("DELETE", f"{base}/unbound")
    assert status == 200 and apiserver.request("GET", f"{base}/unbound")[0] == 404


def test_pod_status_writes_only_status(apiserver: RunningApiServer, namespace: str) -> None:
    base = f"/api/v1/namespaces/{namespace}/pods"
    apiserver.request("POST", base, pod("p"))
    status, updated = apiserver.request(
        "PATCH", f"{base}/p/status",
        {"metadata": {"labels": {"sneaky": "yes"}}, "status": {"phase": "Running"}},
        content_type="application/merge-patch+json")
    assert status == 200 and updated["status"]["phase"] == "Running"
    assert "sneaky" not in (updated["metadata"].get("labels") or {})
    _, main = apiserver.request("PATCH", f"{base}/p", {"status": {"phase": "Failed"}},
                                content_type="application/merge-patch+json")
    assert main["status"]["phase"] == "Running"


def test_pod_log_reads_the_kubelet_files(apiserver: RunningApiServer, namespace: str) -> None:
    base = f"/api/v1/namespaces/{namespace}/pods"
    _, created = apiserver.request("POST", base, pod("p", containers=2))
    logs = apiserver.pods_dir / f"{namespace}_p_{created['metadata']['uid']}" / "logs"
    logs.mkdir(parents=True)
    (logs / "c0.log").write_text("one\ntwo\nthree\n")
    (logs / "c0.previous.log").write_text("before restart\n")
    status, error = apiserver.request("GET", f"{base}/p/log")
    assert status == 400 and "a container name must be specified" in error["message"]
    assert apiserver.request("GET", f"{base}/p/log?container=c0") == (200, "one\ntwo\nthree\n")
    assert apiserver.request("GET", f"{base}/p/log?container=c0&tailLines=1") == (200, "three\n")
    assert apiserver.request("GET", f"{base}/p/log?container=c0&limitBytes=3") == (200, "one")
    assert apiserver.request("GET", f"{base}/p/log?container=c0&previous=true") == (
        200, "before restart\n")


# -- services and namespaces ---------------------------------------------------------------

def test_service_cluster_ips(apiserver: RunningApiServer, namespace: str) -> None:
    base = f"/api/v1/namespaces/{namespace}/services"

    def svc(name: str, ip: str | None = None) -> dict[str, Any]:
        spec: dict[str, Any] = {"ports": [{"port": 80}], "selector": {"a": "b"}}
        if ip:
            spec["clusterIP"] = ip
        return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}

    _, a = apiserver.request("POST", base, svc("a"))
    ip = a["spec"]["clusterIP"]
    assert ip.startswith("127.250.") and a["spec"]["clusterIPs"] == [ip]
    _, headless = apiserver.request("POST", base, svc("h", "None"))
    assert headless["spec"]["clusterIP"] == "None"
    status, error = apiserver.request("POST", base, svc("b", ip))
    assert status == 422 and "already allocated" in error["message"]
    status, error = apiserver.request("POST", base, svc("c", "10.0.0.1"))
    assert status == 422 and "not in the valid range" in error["message"]


def test_namespace_lifecycle(apiserver: RunningApiServer) -> None:
    for name in ("default", "kube-system", "kube-public"):
        assert apiserver.request("GET", f"/api/v1/namespaces/{name}")[0] == 200
    apiserver.request("POST", "/api/v1/namespaces",
                      {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "doomed"}})
    wait_for(lambda: apiserver.request(
        "GET", "/api/v1/namespaces/doomed/serviceaccounts/default")[0] == 200, 10,
        message="default ServiceAccount")
    apiserver.request("POST", "/api/v1/namespaces/doomed/configmaps", cm("x"))
    held = cm("held", finalizers=["example.com/hold"])
    apiserver.request("POST", "/api/v1/namespaces/doomed/configmaps", held)
    status, ns = apiserver.request("DELETE", "/api/v1/namespaces/doomed")
    assert status in (200, 202)
    _, ns = apiserver.request("GET", "/api/v1/namespaces/doomed")
    assert ns["status"]["phase"] == "Terminating"
    wait_for(lambda: apiserver.request("GET", "/api/v1/namespaces/doomed/configmaps/x")[0] == 404,
             10, message="namespace contents deleted")
    status, _ = apiserver.request("POST", "/api/v1/namespaces/doomed/configmaps", cm("new"))
    assert status == 403
    apiserver.request("PATCH", "/api/v1/namespaces/doomed/configmaps/held",
                      {"metadata": {"finalizers": None}},
                      content_type="application/merge-patch+json")
    wait_for(lambda: apiserver.request("GET", "/api/v1/namespaces/doomed")[0] == 404, 10,
         message="namespace gone")


# -- authentication ---------------------------------------------------------------------------

def test_tokens_identify_service_accounts_until_they_are_deleted(
    apiserver: RunningApiServer, namespace: str
) -> None:
    assert apiserver.request("GET", "/api/v1/namespaces", token=None)[0] == 401
    status, error = apiserver.request("GET", "/api/v1/namespaces", token="wrong")
    assert (status, error["reason"]) == (401, "Unauthorized")
    assert apiserver.request("GET", "/version", token=None)[0] == 200
    assert apiserver.request("GET", "/healthz", token=None) == (200, "ok")
    base = f"/api/v1/namespaces/{namespace}/serviceaccounts"
    apiserver.request("POST", base, {"apiVersion": "v1", "kind": "ServiceAccount",
                                     "metadata": {"name": "robot"}})
    status, issued = apiserver.request(
        "POST", f"{base}/robot/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
         "spec": {"expirationSeconds": 3600}})
    assert status == 201 and issued["kind"] == "TokenRequest"
    token = issued["status"]["token"]
    assert issued["status"]["expirationTimestamp"]
    # Authenticated as the ServiceAccount (RBAC then refuses it: nothing is bound to it).
    status, refused = apiserver.request("GET", f"{base}/robot", token=token)
    assert status == 403
    assert f'User "system:serviceaccount:{namespace}:robot"' in refused["message"]
    apiserver.request("DELETE", f"{base}/robot")
    assert apiserver.request("GET", f"{base}", token=token)[0] == 401
    assert apiserver.request("POST", f"{base}/ghost/token", {})[0] == 404


# -- watches ----------------------------------------------------------------------------------

def test_watch_sends_current_objects_then_changes(
    apiserver: RunningApiServer, namespace: str
) -> None:
    base = f"/api/v1/namespaces/{namespace}/configmaps"
    apiserver.request("POST", base, cm("a"))
    events = watch_lines(apiserver, f"{base}?watch=true&timeoutSeconds=1", 5)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "a")]


def test_watch_resume_bookmarks_and_timeout(apiserver: RunningApiServer, namespace: str) -> None:
    base = f"/api/v1/namespaces/{namespace}/configmaps"
    _, a = apiserver.request("POST", base, cm("a", labels={"keep": "yes"}))
    rv = a["metadata"]["resourceVersion"]
    apiserver.request("PATCH", f"{base}/a", {"data": {"k": "2"}},
                      content_type="application/merge-patch+json")
    apiserver.request("PATCH", f"{base}/a", {"metadata": {"labels": {"keep": "no"}}},
                      content_type="application/merge-patch+json")
    apiserver.request("POST", base, cm("b", labels={"keep": "yes"}))
    # watch_to_end fails unless the server itself ends the stream (timeoutSeconds).
    events = watch_to_end(
        apiserver,
        f"{base}?watch=true&resourceVersion={rv}&labelSelector=keep%3Dyes"
        "&allowWatchBookmarks=true&timeoutSeconds=1")
    kinds = [(e["type"], e["object"]["metadata"].get("name")) for e in events]
    assert kinds[:3] == [("MODIFIED", "a"), ("DELETED", "a"), ("ADDED", "b")]
    assert kinds[-1][0] == "BOOKMARK"
    assert events[-1]["object"]["metadata"]["resourceVersion"] == str(
        apiserver.server.store.resource_version)


def test_watch_from_a_compacted_version_gets_410(
    apiserver: RunningApiServer, namespace: str
) -> None:
    base = f"/api/v1/namespaces/{namespace}/configmaps"
    _, a = apiserver.request("POST", base, cm("a"))
    for i in range(250):  # the fixture keeps 200 events
        apiserver.request("PATCH", f"{base}/a", {"data": {"k": str(i)}},
                          content_type="application/merge-patch+json")
    rv = a["metadata"]["resourceVersion"]
    events = watch_lines(apiserver, f"{base}?watch=true&resourceVersion={rv}", 3)
    assert len(events) == 1 and events[0]["type"] == "ERROR"
    status = events[0]["object"]
    assert (status["code"], status["reason"]) == (410, "Expired")
    assert status["message"].startswith(f"too old resource version: {rv} (")


# -- bad input --------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("method", "path", "body", "content_type", "code", "reason"),
    [
        ("POST", "/api/v1/namespaces/NS/configmaps", b"{not json", "application/json", 400,
         "BadRequest"),
        ("POST", "/api/v1/namespaces/NS/configmaps", b'{"kind":"ConfigMap"}', "text/plain",
         415, "UnsupportedMediaType"),
        ("PATCH", "/api/v1/namespaces/NS/configmaps/x", b"{}", "application/json", 415,
         "UnsupportedMediaType"),
        ("GET", "/api/v1/namespaces/NS/widgets", None, "", 404, "NotFound"),
        ("GET", "/apis/nope.example.com/v1/things", None, "", 404, "NotFound"),
        ("GET", "/api/v9/pods", None, "", 404, "NotFound"),
        ("POST", "/api/v1/namespaces/NS/configmaps",
         b'{"apiVersion":"v1","kind":"Secret","metadata":{"name":"x"}}', "application/json",
         400, "BadRequest"),
        ("POST", "/api/v1/namespaces/NS/configmaps",
         b'{"apiVersion":"apps/v1","kind":"ConfigMap","metadata":{"name":"x"}}',
         "application/json", 400, "BadRequest"),
        ("PUT", "/api/v1/namespaces/NS/configmaps/x",
         b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"y"}}', "application/json",
         400, "BadRequest"),
        ("POST", "/api/v1/namespaces/NS/configmaps",
         b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{}}', "application/json", 422,
         "Invalid"),
        ("POST", "/api/v1/namespaces/NS/configmaps",
         b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Bad_Name"}}',
         "application/json", 422, "Invalid"),
        ("POST", "/api/v1/namespaces/no-such-ns/configmaps",
         b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"}}',
         "application/json", 404, "NotFound"),
        ("PUT", "/api/v1/namespaces/NS/configmaps", b"{}", "application/json", 405,
         "MethodNotAllowed"),
        ("POST", "/api/v1/namespaces/NS/configmaps", b"[1, 2]", "application/json", 400,
         "BadRequest"),
        ("POST", "/api/v1/namespaces/NS/configmaps", b"\xff\xfe", "application/json", 400,
         "BadRequest"),
        ("GET", "/api/v1/namespaces/NS/configmaps?labelSelector=a%20in%20(", None, "", 400,
         "BadRequest"),
        ("GET", "/api/v1/namespaces/NS/configmaps?fieldSelector=spec.nope%3D1", None, "", 400,
         "BadRequest"),
        ("GET", "/api/v1/namespaces/NS/configmaps?watch=true&resourceVersion=abc", None, "",
         400, "BadRequest"),
        ("PATCH", "/api/v1/namespaces/NS/configmaps/x", b'[{"op":"nope"}]',
         "application/json-patch+json", 404, "NotFound"),
    ],
)
def test_bad_input_gets_a_status_never_a_500(
    apiserver: RunningApiServer, namespace: str, method: str, path: str, body: bytes | None,
    content_type: str, code: int, reason: str,
) -> None:
    status, answer = apiserver.request(method, path.replace("NS", namespace), raw=body,
                                       content_type=content_type)
    assert status == code, answer
    assert answer["kind"] == "Status" and answer["status"] == "Failure"
    assert answer["reason"] == reason and answer["code"] == code


def test_invalid_names_are_named_in_the_error(
    apiserver: RunningApiServer, namespace: str
) -> None:
    status, error = apiserver.request("POST", f"/api/v1/namespaces/{namespace}/configmaps",
                                      cm("Bad_Name"))
    assert status == 422
    assert error["message"].startswith('ConfigMap "Bad_Name" is invalid: metadata.name: ')
    assert error["details"]["causes"][0]["field"] == "metadata.name"
    status, error = apiserver.request(
        "POST", f"/api/v1/namespaces/{namespace}/configmaps",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}})
    assert "name or generateName is required" in error["message"]
    status, error = apiserver.request("POST", "/api/v1/namespaces/no-such/configmaps", cm("x"))
    assert error["message"] == 'namespaces "no-such" not found'


def test_json_patch_errors_do_not_change_the_object(
    apiserver: RunningApiServer, namespace: str
) -> None:
    base = f"/api/v1/namespaces/{namespace}/configmaps"
    _, created = apiserver.request("POST", base, cm("x"))
    status, error = apiserver.request(
        "PATCH", f"{base}/x", [{"op": "remove", "path": "/data/missing"}],
        content_type="application/json-patch+json")
    assert status in (400, 422) and error["kind"] == "Status"
    status, _ = apiserver.request("PATCH", f"{base}/x", raw=b"{oops",
                                          content_type="application/merge-patch+json")
    assert status == 400
    _, after = apiserver.request("GET", f"{base}/x")
    assert after["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]


WEIRD_VALUES = [None, 1, "s", [1], True, {"a": [None]}, {"containers": "x"},
                {"containers": [1]}, {"ports": "x", "clusterIP": 5}, {"finalizers": 3},
                {"names": [], "versions": {}}]


def test_wrongly_typed_fields_never_cause_a_500(
    apiserver: RunningApiServer, namespace: str
) -> None:
    for t in BUILTINS:
        prefix = f"/api/{t.version}" if not t.group else f"/apis/{t.group}/{t.version}"
        base = f"{prefix}/namespaces/{namespace}/{t.plural}" if t.namespaced else \
            f"{prefix}/{t.plural}"
        for i, value in enumerate(WEIRD_VALUES):
            for field in ("spec", "status", "data", "metadata"):
                name = f"w{i}-{field}"
                body = {"apiVersion": t.group_version, "kind": t.kind, "metadata": {"name": name},
                        field: value}
                if field == "metadata":
                    body["metadata"] = {"name": name, "labels": value, "finalizers": value,
                                        "ownerReferences": value}
                for method, path in (("POST", base), ("PUT", f"{base}/{name}")):
                    status, answer = apiserver.request(method, path, body)
                    assert status < 500, (method, path, body, answer)
    deep = b'{"a":' + b"[" * 5000 + b"]" * 5000 + b"}"
    status, _ = apiserver.request("POST", f"/api/v1/namespaces/{namespace}/configmaps",
                                  raw=deep)
    assert status == 400


def test_watch_list_marks_the_end_of_initial_events(
    apiserver: RunningApiServer, namespace: str
) -> None:
    base = f"/api/v1/namespaces/{namespace}/configmaps"
    apiserver.request("POST", base, cm("a"))
    events = watch_lines(apiserver, f"{base}?watch=true&sendInitialEvents=true"
                         "&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true"
                         "&timeoutSeconds=1", 2)
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"]
    assert events[1]["object"]["metadata"]["annotations"] == {
        "k8s.io/initial-events-end": "true"}


def test_a_second_delete_does_not_cut_a_pods_grace_period_short(
    apiserver: RunningApiServer, namespace: str
) -> None:
    base = f"/api/v1/namespaces/{namespace}/pods"
    apiserver.request("POST", base, pod("p", nodeName="node-1"))
    _, first = apiserver.request("DELETE", f"{base}/p")
    _, second = apiserver.request("DELETE", f"{base}/p")
    assert second["metadata"]["deletionTimestamp"] == first["metadata"]["deletionTimestamp"]
    _, shorter = apiserver.request("DELETE", f"{base}/p", {"gracePeriodSeconds": 5})
    assert shorter["metadata"]["deletionGracePeriodSeconds"] == 5
    assert apiserver.request("GET", f"{base}/p")[0] == 200


def test_strict_field_validation_of_builtins(apiserver: RunningApiServer, namespace: str) -> None:
    base = f"/api/v1/namespaces/{namespace}/configmaps"
    body = {**cm("strict"), "datta": {"a": "b"}}
    status, error = apiserver.request("POST", f"{base}?fieldValidation=Strict", body)
    assert status == 400
    assert error["message"] == 'strict decoding error: unknown field "datta"'
    status, created = apiserver.request("POST", base, body)
    assert status == 201 and "datta" not in created


def test_events_are_one_store_served_in_both_groups(
    apiserver: RunningApiServer, namespace: str
) -> None:
    new_style = {"apiVersion": "events.k8s.io/v1", "kind": "Event",
                 "metadata": {"name": "e1"}, "eventTime": "2026-01-01T00:00:00.000000Z",
                 "regarding": {"kind": "Pod", "name": "p", "namespace": namespace},
                 "note": "hello", "reason": "Testing", "type": "Normal", "action": "Test",
                 "reportingController": "tests", "reportingInstance": "tests-1"}
    status, created = apiserver.request(
        "POST", f"/apis/events.k8s.io/v1/namespaces/{namespace}/events", new_style)
    assert status == 201, created
    assert created["note"] == "hello" and created["apiVersion"] == "events.k8s.io/v1"
    _, core = apiserver.request("GET", f"/api/v1/namespaces/{namespace}/events/e1")
    assert core["message"] == "hello" and core["involvedObject"]["name"] == "p"
    assert core["reportingComponent"] == "tests"
    _, listing = apiserver.request(
        "GET", f"/api/v1/namespaces/{namespace}/events?fieldSelector=involvedObject.name%3Dp")
    assert [e["metadata"]["name"] for e in listing["items"]] == ["e1"]


def test_stop_ends_open_watches(tmp_path: Any) -> None:
    """stop() closes a watch that would otherwise never end (no timeoutSeconds) instead of
    waiting for it: the stream reaches its end and stop() returns, both within a deadline far
    below any graceful-shutdown wait."""

    async def scenario() -> bytes:
        server = ApiServer(host="127.0.250.1", port=0, admin_token="t",
                           service_network="127.250.128.0/17", pods_dir=tmp_path)
        await server.start()
        headers = {"Authorization": "Bearer t"}
        async with aiohttp.ClientSession(headers=headers) as session:
            response = await session.get(
                f"{server.url}/api/v1/namespaces?watch=true&allowWatchBookmarks=true")
            last = await response.content.readline()
            assert last.startswith(b'{"type":"ADDED"')
            async with asyncio.timeout(5):
                await server.stop()
                while line := await response.content.readline():
                    last = line
            return last

    assert asyncio.run(scenario()).startswith(b'{"type":')


def test_crd_with_a_broken_printer_column_is_rejected(apiserver: RunningApiServer) -> None:
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "things.example.org"},
           "spec": {"group": "example.org", "scope": "Namespaced",
                    "names": {"plural": "things", "kind": "Thing"},
                    "versions": [{"name": "v1", "served": True, "storage": True,
                                  "additionalPrinterColumns": [
                                      {"name": "X", "type": "string", "jsonPath": ".spec["}]}]}}
    status, error = apiserver.request(
        "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    assert status == 422
    assert error["details"]["causes"][0]["field"] == \
        "spec.versions[0].additionalPrinterColumns[0].jsonPath"


def test_objects_rv_crds_and_tokens_survive_a_restart_with_data_path(tmp_path: Any) -> None:
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "notes.example.org"},
           "spec": {"group": "example.org", "scope": "Namespaced",
                    "names": {"plural": "notes", "kind": "Note"},
                    "versions": [{"name": "v1", "served": True, "storage": True,
                                  "schema": {"openAPIV3Schema": {
                                      "type": "object",
                                      "x-kubernetes-preserve-unknown-fields": True}}}]}}

    async def session_on(server: ApiServer) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(headers={"Authorization": "Bearer t"},
                                     base_url=server.url)

    async def scenario() -> None:
        # One port for both runs: the default/kubernetes Endpoints name it, and a new port
        # would rightly be written on restart.
        with socket.socket() as probe:
            probe.bind(("127.0.250.1", 0))
            port = probe.getsockname()[1]

        def make() -> ApiServer:
            return ApiServer(host="127.0.250.1", port=port, admin_token="t",
                             service_network="127.250.128.0/17", pods_dir=tmp_path,
                             data_path=tmp_path / "state.db")

        first = make()
        await first.start()
        async with await session_on(first) as http:
            await http.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                            json=crd)
            response = await http.post("/apis/example.org/v1/namespaces/default/notes", json={
                "apiVersion": "example.org/v1", "kind": "Note", "metadata": {"name": "n"},
                "text": "kept"})
            assert response.status == 201
            issued = await (await http.post(
                "/api/v1/namespaces/default/serviceaccounts/default/token", json={})).json()
        before = first.store.resource_version
        await first.stop()

        second = make()
        await second.start()
        try:
            assert second.store.resource_version == before  # nothing new was written
            async with await session_on(second) as http:
                note = await (await http.get("/apis/example.org/v1/namespaces/default/notes/n")
                              ).json()
                assert note["text"] == "kept"
                token = issued["status"]["token"]
                async with aiohttp.ClientSession(
                        headers={"Authorization": f"Bearer {token}"}) as robot:
                    # Discovery: every authenticated identity may read it (system:discovery).
                    assert (await robot.get(f"{second.url}/api/v1")).status == 200
                created = await (await http.post("/api/v1/namespaces/default/configmaps", json={
                    "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}})).json()
                assert int(created["metadata"]["resourceVersion"]) == before + 1
                watch = await http.get(
                    "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=2")
                line = json.loads(await watch.content.readline())
                assert line["type"] == "ERROR" and line["object"]["code"] == 410
        finally:
            await second.stop()

    asyncio.run(scenario())


def test_pod_log_follow_streams_until_the_pod_is_gone(
    apiserver: RunningApiServer, namespace: str
) -> None:
    base = f"/api/v1/namespaces/{namespace}/pods"
    _, created = apiserver.request("POST", base, pod("p"))
    logs = apiserver.pods_dir / f"{namespace}_p_{created['metadata']['uid']}" / "logs"
    logs.mkdir(parents=True)
    (logs / "c0.log").write_text("first\n")
    url = urlparse(apiserver.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    connection.request("GET", f"{base}/p/log?follow=true",
                       headers={"Authorization": "Bearer test-admin-token"})
    response = connection.getresponse()
    assert response.readline() == b"first\n"
    with (logs / "c0.log").open("a") as log:
        log.write("second\n")
    assert response.readline() == b"second\n"
    apiserver.request("DELETE", f"{base}/p")
    # The stream ends once the pod is gone: a stream left open would end in the connection's
    # timeout instead, which raises.
    assert response.read() == b""
    connection.close()


def test_no_op_updates_keep_the_resource_version_but_stale_ones_conflict(
    apiserver: RunningApiServer, namespace: str
) -> None:
    base = f"/api/v1/namespaces/{namespace}/configmaps"
    _, created = apiserver.request("POST", base, cm("same"))
    _, again = apiserver.request("PUT", f"{base}/same", created)
    assert again["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    apiserver.request("PATCH", f"{base}/same", {"data": {"k": "changed"}},
                      content_type="application/merge-patch+json")
    status, _ = apiserver.request("PUT", f"{base}/same", created)  # stale, even if unchanged
    assert status == 409


def test_a_watch_whose_client_vanished_is_dropped(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(watch_module, "CLIENT_CHECK_INTERVAL", 0.2)

    async def scenario() -> None:
        server = ApiServer(host="127.0.250.1", port=0, admin_token="t",
                           service_network="127.250.128.0/17", pods_dir=tmp_path)
        await server.start()
        try:
            reader, writer = await asyncio.open_connection("127.0.250.1", server.port)
            writer.write(b"GET /api/v1/configmaps?watch=true&resourceVersion=1 HTTP/1.1\r\n"
                         b"Host: x\r\nAuthorization: Bearer t\r\n\r\n")
            await writer.drain()
            await reader.readline()
            await wait_for_async(lambda: server.store.watcher_count == 1, 5,
                                 message="the watch registered")
            writer.close()
            await wait_for_async(lambda: server.store.watcher_count == 0, 5,
                                 message="the vanished client's watch dropped")
        finally:
            await server.stop()

    asyncio.run(scenario())


def test_metrics_count_answered_requests_by_verb_resource_user_and_client(
    apiserver: RunningApiServer, namespace: str
) -> None:
    """`GET /metrics`: what bench/scale.py reads to count the requests of idle clusters."""

    def count(text: str, labels: str) -> int:
        line = next((row for row in text.splitlines() if row.startswith(
            f"apiserver_request_total{{{labels}}} ")), None)
        return int(line.rsplit(" ", 1)[1]) if line else 0

    labels = 'verb="LIST",resource="pods",code="200",username="admin",client="metrics-test"'
    _, before = apiserver.request("GET", "/metrics")
    for _ in range(3):
        status, _ = apiserver.request("GET", f"/api/v1/namespaces/{namespace}/pods",
                                      headers={"User-Agent": "metrics-test/1"})
        assert status == 200
    status, after = apiserver.request("GET", "/metrics")
    assert status == 200 and "# TYPE apiserver_request_total counter" in after
    assert count(after, labels) == count(before, labels) + 3
    assert apiserver.request("GET", "/metrics", token=None)[0] == 401
    assert apiserver.request("POST", "/metrics", body={})[0] == 405
