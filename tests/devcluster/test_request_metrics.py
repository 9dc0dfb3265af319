"""The API server's request counter (`/metrics`, `apiserver_request_total`): verbs and
resources named as kube-apiserver names them, so `bench/scale.py` can tell what idle
ClusteredServers cost the control plane."""

from __future__ import annotations

import pytest
from gencluster_dev.apiserver.request_metrics import RequestCounter, client_name, request_labels

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    [
        ("GET", "/api/v1/namespaces/default/pods", {}, ("LIST", "pods")),
        ("GET", "/api/v1/namespaces/default/pods", {"watch": "true"}, ("WATCH", "pods")),
        ("GET", "/api/v1/pods", {"watch": "1"}, ("WATCH", "pods")),
        ("GET", "/api/v1/namespaces/default/pods/a", {}, ("GET", "pods")),
        ("PATCH", "/api/v1/namespaces/default/pods/a/status", {}, ("PATCH", "pods/status")),
        ("PUT", "/apis/coordination.k8s.io/v1/namespaces/default/leases/x", {},
         ("UPDATE", "leases")),
        ("POST", "/api/v1/namespaces/default/events", {}, ("CREATE", "events")),
        ("DELETE", "/api/v1/namespaces/default/pods", {}, ("DELETECOLLECTION", "pods")),
        ("DELETE", "/api/v1/namespaces/default/pods/a", {}, ("DELETE", "pods")),
        ("GET", "/api/v1/namespaces", {}, ("LIST", "namespaces")),
        ("GET", "/api/v1/namespaces/default", {}, ("GET", "namespaces")),
        ("GET", "/apis", {}, ("GET", "")),
        ("GET", "/metrics", {}, ("GET", "")),
    ],
)
def test_verbs_and_resources_as_kube_apiserver_names_them(
    method: str, path: str, query: dict[str, str], expected: tuple[str, str]
) -> None:
    assert request_labels(method, path, query) == expected


def test_client_is_the_user_agents_product() -> None:
    assert client_name("kubectl/v1.31.0 (linux/amd64) kubernetes/abc") == "kubectl"
    assert client_name("kopf/1.37.2") == "kopf"
    assert client_name(None) == ""


def test_render_is_prometheus_text_with_one_line_per_label_set() -> None:
    counter = RequestCounter()
    for _ in range(3):
        counter.count("PUT", "/apis/coordination.k8s.io/v1/namespaces/d/leases/x", {}, 200,
                      "system:serviceaccount:d:x", "gencluster/1")
    counter.count("GET", "/api/v1/pods", {}, 403, 'a"b', None)
    text = counter.render()
    assert "# TYPE apiserver_request_total counter" in text
    assert ('apiserver_request_total{verb="UPDATE",resource="leases",code="200",'
            'username="system:serviceaccount:d:x",client="gencluster"} 3') in text
    assert 'username="a\\"b",client=""} 1' in text
