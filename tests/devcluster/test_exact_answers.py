"""kube-apiserver's exact answers where clients look: defaulted fields in create responses,
`Status` bodies in metav1.Status's field order with the encoder's trailing newline, and the
`default/kubernetes` Service with its Endpoints."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from tests.devcluster.conftest import ADMIN_TOKEN, RunningApiServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _raw(apiserver: RunningApiServer, method: str, path: str,
         body: dict | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(
        apiserver.url + path, method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_a_created_service_carries_its_status(apiserver: RunningApiServer,
                                              namespace: str) -> None:
    status, body = _raw(apiserver, "POST", f"/api/v1/namespaces/{namespace}/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}})
    assert status == 201
    created = json.loads(body)
    assert created["status"] == {"loadBalancer": {}}
    assert created["spec"]["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 80}]
    headless_status, headless = _raw(
        apiserver, "POST", f"/api/v1/namespaces/{namespace}/services", {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "headless"},
            "spec": {"clusterIP": "None", "ports": [{"port": 80}]}})
    assert headless_status == 201 and json.loads(headless)["status"] == {"loadBalancer": {}}


def test_status_bodies_follow_kube_apiservers_order_and_framing(
        apiserver: RunningApiServer, namespace: str) -> None:
    status, body = _raw(apiserver, "GET", f"/api/v1/namespaces/{namespace}/pods/missing")
    assert status == 404
    assert body == (
        b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",'
        b'"message":"pods \\"missing\\" not found","reason":"NotFound",'
        b'"details":{"name":"missing","kind":"pods"},"code":404}\n')
    _, ok = _raw(apiserver, "GET", f"/api/v1/namespaces/{namespace}")
    assert ok.endswith(b"}\n")


def test_the_kubernetes_service_names_the_api_server(apiserver: RunningApiServer) -> None:
    result = apiserver.kubectl("get", "svc", "kubernetes", "-n", "default", "-o", "json")
    service = json.loads(result.stdout)
    assert service["metadata"]["labels"] == {"component": "apiserver",
                                             "provider": "kubernetes"}
    assert service["spec"]["ports"][0]["name"] == "https"
    assert service["spec"]["ports"][0]["port"] == 443
    network = service["spec"]["clusterIP"].rsplit(".", 1)[0]
    assert service["spec"]["clusterIP"] == f"{network}.1"  # the first Service address
    endpoints = json.loads(apiserver.kubectl("get", "endpoints", "kubernetes", "-n", "default",
                                             "-o", "json").stdout)
    assert endpoints["subsets"] == [{
        "addresses": [{"ip": apiserver.server.host}],
        "ports": [{"name": "https", "port": apiserver.server.port, "protocol": "TCP"}]}]
    table = apiserver.kubectl("get", "svc", "kubernetes", "-n", "default").stdout
    assert table.splitlines()[1].startswith("kubernetes ")


def test_a_created_deployment_carries_kube_apiservers_defaults(
        apiserver: RunningApiServer, namespace: str) -> None:
    status, body = _raw(apiserver, "POST", f"/apis/apps/v1/namespaces/{namespace}/deployments", {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "nginx:1.27",
                                                       "ports": [{"containerPort": 80}]}]}}}})
    assert status == 201
    spec = json.loads(body)["spec"]
    assert (spec["replicas"], spec["revisionHistoryLimit"], spec["progressDeadlineSeconds"]) == (
        1, 10, 600)
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {
        "maxSurge": "25%", "maxUnavailable": "25%"}}
    pod_spec = spec["template"]["spec"]
    assert (pod_spec["restartPolicy"], pod_spec["dnsPolicy"], pod_spec["schedulerName"],
            pod_spec["terminationGracePeriodSeconds"], pod_spec["securityContext"]) == (
        "Always", "ClusterFirst", "default-scheduler", 30, {})
    container = pod_spec["containers"][0]
    assert (container["imagePullPolicy"], container["terminationMessagePolicy"],
            container["ports"]) == ("IfNotPresent", "File",
                                    [{"containerPort": 80, "protocol": "TCP"}])
