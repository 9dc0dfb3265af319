"""The real kubectl against the API server: CRDs, custom resources, tables, watch, scale."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from gencluster_testing.waiting import wait_for

from tests.devcluster.conftest import RunningApiServer

pytestmark = pytest.mark.integration

CRD_FILE = Path(__file__).resolve().parents[2] / "crds" / "clusteredservers.gencluster.io.yaml"


def csrv(name: str, replicas: int = 3, **spec: object) -> str:
    return yaml.safe_dump({
        "apiVersion": "gencluster.io/v1alpha1", "kind": "ClusteredServer",
        "metadata": {"name": name},
        "spec": {"server": "examples.id_server:IdServer", "image": "python:3.11",
                 "replicas": replicas, **spec},
    })


@pytest.fixture(scope="module")
def crd(apiserver: RunningApiServer) -> None:
    """The CRD applied and known to kubectl's discovery cache: the apply itself cached the
    discovery of a server without it, and `kubectl explain` (unlike `get`) does not refresh a
    cache that lacks a resource, so a test running first in its worker failed on "no resource
    type csrv". `api-resources` always reads discovery afresh and rewrites the cache."""
    apiserver.kubectl("apply", "-f", str(CRD_FILE))
    wait_for(
        lambda: "clusteredservers" in apiserver.kubectl(
            "api-resources", "--api-group=gencluster.io", "-o", "name").stdout,
        timeout=30, message="kubectl discovery never listed clusteredservers",
    )


def test_apply_create_then_change_and_printer_columns(
    apiserver: RunningApiServer, namespace: str, crd: None
) -> None:
    out = apiserver.kubectl("apply", "-n", namespace, "-f", "-", input=csrv("demo")).stdout
    assert "clusteredserver.gencluster.io/demo created" in out
    out = apiserver.kubectl("apply", "-n", namespace, "-f", "-",
                            input=csrv("demo", replicas=4)).stdout
    assert "configured" in out
    table = apiserver.kubectl("get", "csrv", "-n", namespace).stdout.splitlines()
    assert table[0].split()[:3] == ["NAME", "REPLICAS", "READY"]
    assert table[1].split()[:2] == ["demo", "4"]
    wide = apiserver.kubectl("get", "csrv", "-n", namespace, "-o", "wide").stdout
    assert "MODE" in wide.splitlines()[0] and "Sync" in wide
    as_yaml = yaml.safe_load(apiserver.kubectl("get", "csrv", "demo", "-n", namespace,
                                               "-o", "yaml").stdout)
    assert as_yaml["spec"]["replicas"] == 4
    assert as_yaml["metadata"]["generation"] == 2
    assert as_yaml["spec"]["partitionPolicy"] == "Fenced"  # defaulted by the schema
    described = apiserver.kubectl("describe", "csrv", "demo", "-n", namespace).stdout
    assert "Replicas:" in described and "Events:" in described


def test_patch_merge_json_and_scale(
    apiserver: RunningApiServer, namespace: str, crd: None
) -> None:
    apiserver.kubectl("apply", "-n", namespace, "-f", "-", input=csrv("p"))
    apiserver.kubectl("patch", "csrv", "p", "-n", namespace, "--type", "merge",
                      "-p", '{"spec":{"replicas":5}}')
    apiserver.kubectl("patch", "csrv", "p", "-n", namespace, "--type", "json",
                      "-p", '[{"op":"replace","path":"/spec/port","value":6000}]')
    apiserver.kubectl("scale", "csrv", "p", "-n", namespace, "--replicas=2")
    got = yaml.safe_load(apiserver.kubectl("get", "csrv", "p", "-n", namespace,
                                           "-o", "yaml").stdout)
    assert (got["spec"]["replicas"], got["spec"]["port"]) == (2, 6000)
    # strategic merge is refused for custom resources exactly like Kubernetes does
    result = apiserver.kubectl("patch", "csrv", "p", "-n", namespace, "--type", "strategic",
                               "-p", '{"spec":{"replicas":3}}', check=False)
    assert result.returncode != 0
    assert "unknown format" in result.stderr


def test_schema_violation_names_the_field(
    apiserver: RunningApiServer, namespace: str, crd: None
) -> None:
    result = apiserver.kubectl("apply", "-n", namespace, "-f", "-",
                               input=csrv("bad", replicas=0), check=False)
    assert result.returncode != 0
    assert 'The ClusteredServer "bad" is invalid' in result.stderr
    assert "spec.replicas" in result.stderr
    result = apiserver.kubectl("apply", "-n", namespace, "-f", "-",
                               input=csrv("bad", replicas=2, colour="blue"), check=False)
    assert result.returncode != 0
    assert 'unknown field "spec.colour"' in result.stderr


def test_wait_for_a_condition_set_through_status(
    apiserver: RunningApiServer, namespace: str, crd: None
) -> None:
    apiserver.kubectl("apply", "-n", namespace, "-f", "-", input=csrv("w"))
    watchers = apiserver.server.store.watcher_count
    waiting = subprocess.Popen(
        ["kubectl", "--kubeconfig", str(apiserver.kubeconfig), "--cache-dir",
         str(apiserver.cache_dir), "wait", "-n", namespace, "--for=condition=Ready",
         "csrv/w", "--timeout=20s"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # The condition must appear while kubectl watches (not be there at its first read).
    wait_for(lambda: apiserver.server.store.watcher_count > watchers, 20, 0.05,
             "kubectl wait to start its watch")
    status, body = apiserver.request(
        "PATCH", f"/apis/gencluster.io/v1alpha1/namespaces/{namespace}/clusteredservers/w/status",
        {"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Up",
                                    "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}},
        content_type="application/merge-patch+json")
    assert status == 200, body
    out, err = waiting.communicate(timeout=30)
    assert waiting.returncode == 0, err
    assert "condition met" in out


def test_get_watch_prints_rows_as_they_change(
    apiserver: RunningApiServer, namespace: str, crd: None
) -> None:
    apiserver.kubectl("apply", "-n", namespace, "-f", "-", input=csrv("live"))
    watcher = subprocess.Popen(
        ["kubectl", "--kubeconfig", str(apiserver.kubeconfig), "--cache-dir",
         str(apiserver.cache_dir), "get", "csrv", "-n", namespace, "-w"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert watcher.stdout is not None
        header = watcher.stdout.readline()
        first = watcher.stdout.readline()
        assert header.split()[:2] == ["NAME", "REPLICAS"]
        assert first.split()[:2] == ["live", "3"]
        apiserver.kubectl("patch", "csrv", "live", "-n", namespace, "--type", "merge",
                          "-p", '{"spec":{"replicas":7,"replication":{"minSyncStandbys":1}}}')
        changed = watcher.stdout.readline()
        assert changed.split()[:2] == ["live", "7"]
    finally:
        watcher.kill()
        watcher.wait()


def test_delete_is_held_by_a_finalizer_until_it_is_removed(
    apiserver: RunningApiServer, namespace: str, crd: None
) -> None:
    apiserver.kubectl("apply", "-n", namespace, "-f", "-", input=csrv("held"))
    apiserver.kubectl("patch", "csrv", "held", "-n", namespace, "--type", "merge",
                      "-p", '{"metadata":{"finalizers":["example.com/hold"]}}')
    apiserver.kubectl("delete", "csrv", "held", "-n", namespace, "--wait=false")
    got = yaml.safe_load(apiserver.kubectl("get", "csrv", "held", "-n", namespace,
                                           "-o", "yaml").stdout)
    assert got["metadata"]["deletionTimestamp"]
    watchers = apiserver.server.store.watcher_count
    deleting = subprocess.Popen(
        ["kubectl", "--kubeconfig", str(apiserver.kubeconfig), "--cache-dir",
         str(apiserver.cache_dir), "delete", "csrv", "held", "-n", namespace,
         "--timeout=20s"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: apiserver.server.store.watcher_count > watchers, 20, 0.05,
             "kubectl delete to watch for the object to go")
    assert deleting.poll() is None  # kubectl waits for the object to go
    apiserver.kubectl("patch", "csrv", "held", "-n", namespace, "--type", "json",
                      "-p", '[{"op":"remove","path":"/metadata/finalizers"}]')
    _, err = deleting.communicate(timeout=30)
    assert deleting.returncode == 0, err
    wait_for(lambda: apiserver.kubectl("get", "csrv", "held", "-n", namespace,
                                   check=False).returncode != 0, 10, message="gone")


def test_builtin_client_side_apply_server_side_apply_and_describe(
    apiserver: RunningApiServer, namespace: str
) -> None:
    manifest = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"},
                "data": {"a": "1", "b": "2"}}
    apiserver.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest))
    manifest["data"] = {"a": "1"}  # removing b: client-side apply computes a delete
    apiserver.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest))
    got = yaml.safe_load(apiserver.kubectl("get", "cm", "cfg", "-n", namespace,
                                           "-o", "yaml").stdout)
    assert got["data"] == {"a": "1"}
    manifest["metadata"]["name"] = "ssa"
    manifest["data"] = {"a": "1", "b": "2"}
    out = apiserver.kubectl("apply", "--server-side", "-n", namespace, "-f", "-",
                            input=yaml.safe_dump(manifest)).stdout
    assert "serverside-applied" in out
    apiserver.kubectl("patch", "cm", "ssa", "-n", namespace, "-p", '{"data":{"other":"x"}}')
    manifest["data"] = {"a": "3"}  # b dropped from the file: server-side apply removes it
    apiserver.kubectl("apply", "--server-side", "-n", namespace, "-f", "-",
                      input=yaml.safe_dump(manifest))
    got = yaml.safe_load(apiserver.kubectl("get", "cm", "ssa", "-n", namespace,
                                           "-o", "yaml").stdout)
    assert got["data"] == {"a": "3", "other": "x"}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}}
    apiserver.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(pod))
    _, created = apiserver.request("GET", f"/api/v1/namespaces/{namespace}/pods/p")
    event = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "p.1"},
             "involvedObject": {"kind": "Pod", "name": "p", "namespace": namespace,
                                "uid": created["metadata"]["uid"], "apiVersion": "v1"},
             "reason": "Testing", "message": "hello from the test", "type": "Normal",
             "count": 1, "firstTimestamp": "2026-01-01T00:00:00Z",
             "lastTimestamp": "2026-01-01T00:00:00Z", "source": {"component": "test"}}
    assert apiserver.request("POST", f"/api/v1/namespaces/{namespace}/events", event)[0] == 201
    described = apiserver.kubectl("describe", "pod", "p", "-n", namespace).stdout
    assert "hello from the test" in described
    assert "Pending" in described
    assert apiserver.kubectl("get", "pods", "-n", namespace).stdout.split()[:5] == [
        "NAME", "READY", "STATUS", "RESTARTS", "AGE"]


def test_imperative_creates_sent_as_protobuf(apiserver: RunningApiServer) -> None:
    """kubectl's typed clients send protobuf bodies for these commands."""
    apiserver.kubectl("create", "namespace", "proto")
    apiserver.kubectl("create", "configmap", "c", "--from-literal=a=b", "-n", "proto")
    apiserver.kubectl("create", "secret", "generic", "s", "--from-literal=pw=x", "-n", "proto")
    apiserver.kubectl("create", "serviceaccount", "robot", "-n", "proto")
    apiserver.kubectl("create", "role", "r", "--verb=get", "--resource=pods,configmaps",
                      "-n", "proto")
    apiserver.kubectl("create", "rolebinding", "rb", "--role=r",
                      "--serviceaccount=proto:robot", "-n", "proto")
    token = apiserver.kubectl("create", "token", "robot", "-n", "proto").stdout.strip()
    status, _ = apiserver.request("GET", "/api/v1/namespaces/proto/configmaps/c", token=token)
    assert status == 200
    _, secret = apiserver.request("GET", "/api/v1/namespaces/proto/secrets/s")
    assert secret["data"] == {"pw": "eA=="}
    _, binding = apiserver.request(
        "GET", "/apis/rbac.authorization.k8s.io/v1/namespaces/proto/rolebindings/rb")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": "r"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "robot",
                                    "namespace": "proto"}]


def test_explain_reads_the_crd_schema_from_openapi_v3(
    apiserver: RunningApiServer, crd: None
) -> None:
    out = apiserver.kubectl("explain", "csrv.spec.replicas").stdout
    assert "KIND:       ClusteredServer" in out
    assert "replicas" in out and "integer" in out


def test_custom_resource_status_and_invalid_message_over_http(
    apiserver: RunningApiServer, namespace: str, crd: None
) -> None:
    base = f"/apis/gencluster.io/v1alpha1/namespaces/{namespace}/clusteredservers"
    body = yaml.safe_load(csrv("s"))
    body["status"] = {"phase": "Ignored"}
    status, created = apiserver.request("POST", base, body)
    assert status == 201 and "status" not in created  # status comes only through /status
    status, error = apiserver.request("POST", base, yaml.safe_load(csrv("bad", replicas=0)))
    assert status == 422
    assert error["message"].startswith('ClusteredServer.gencluster.io "bad" is invalid: ')
    assert {c["field"] for c in error["details"]["causes"]} >= {"spec.replicas"}
    assert error["details"]["group"] == "gencluster.io"
    assert error["details"]["kind"] == "ClusteredServer"
