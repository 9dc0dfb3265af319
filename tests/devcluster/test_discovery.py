"""Discovery documents and how the real kubectl resolves names through them."""

from __future__ import annotations

import json

import pytest
from gencluster_dev.machinery.discovery import (
    aggregated_discovery,
    api_group_list,
    api_resource_list,
    wants_aggregated,
)
from gencluster_dev.machinery.resources import Registry, resource_types_from_crd

from tests.devcluster.conftest import RunningApiServer

pytestmark = pytest.mark.integration

CRD = {
    "metadata": {"name": "gadgets.example.com"},
    "spec": {
        "group": "example.com", "scope": "Cluster",
        "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget",
                  "shortNames": ["gdg"], "categories": ["toys"]},
        "versions": [
            {"name": "v1beta1", "served": True, "storage": False},
            {"name": "v1", "served": True, "storage": True,
             "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.n",
                                                      "statusReplicasPath": ".status.n"}}},
            {"name": "v0", "served": False, "storage": False},
        ],
    },
}


def test_crd_versions_become_resource_lists_with_subresources() -> None:
    registry = Registry()
    registry.set_custom("gadgets.example.com", resource_types_from_crd(CRD, lambda s: None))
    groups = {g["name"]: g for g in api_group_list(registry)["groups"]}
    assert groups["example.com"]["preferredVersion"]["version"] == "v1"
    assert [v["version"] for v in groups["example.com"]["versions"]] == ["v1", "v1beta1"]
    listing = api_resource_list(registry, "example.com", "v1")
    assert listing is not None
    by_name = {r["name"]: r for r in listing["resources"]}
    assert by_name["gadgets"]["shortNames"] == ["gdg"]
    assert by_name["gadgets"]["categories"] == ["toys"]
    assert by_name["gadgets"]["namespaced"] is False
    assert by_name["gadgets/scale"]["kind"] == "Scale"
    assert by_name["gadgets/scale"]["group"] == "autoscaling"
    assert set(by_name) == {"gadgets", "gadgets/status", "gadgets/scale"}
    assert api_resource_list(registry, "example.com", "v0") is None


def test_core_resource_list_has_pod_subresources() -> None:
    listing = api_resource_list(Registry(), "", "v1")
    assert listing is not None
    names = {r["name"] for r in listing["resources"]}
    assert {"pods", "pods/status", "pods/log", "pods/binding", "serviceaccounts/token",
            "namespaces", "nodes", "services", "endpoints", "configmaps", "secrets",
            "events"} <= names


def test_kubectl_resolves_short_names_and_categories(apiserver: RunningApiServer) -> None:
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", **CRD}
    status, body = apiserver.request(
        "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    assert status == 201, body
    assert {c["type"]: c["status"] for c in body["status"]["conditions"]} == {
        "NamesAccepted": "True", "Established": "True"}
    assert body["status"]["acceptedNames"]["kind"] == "Gadget"
    status, _ = apiserver.request("POST", "/apis/example.com/v1/gadgets", {
        "apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g1"}})
    assert status == 201
    assert apiserver.kubectl("get", "gdg", "-o", "name").stdout.split() == ["gadget.example.com/g1"]
    assert apiserver.kubectl("get", "toys", "-o", "name").stdout.split() == [
        "gadget.example.com/g1"]
    resources = apiserver.kubectl("api-resources", "--api-group=example.com").stdout
    assert "gadgets" in resources and "gdg" in resources
    # served at both versions, stored once
    status, old = apiserver.request("GET", "/apis/example.com/v1beta1/gadgets/g1")
    assert status == 200 and old["apiVersion"] == "example.com/v1beta1"
    # deleting the CRD deletes its objects and stops serving it
    apiserver.kubectl("delete", "crd", "gadgets.example.com", "--timeout=20s")
    assert apiserver.request("GET", "/apis/example.com/v1/gadgets")[0] == 404
    assert apiserver.server.store.list(("example.com", "gadgets")) == []


def test_version_and_openapi_v3(apiserver: RunningApiServer) -> None:
    version = apiserver.kubectl("version", "-o", "json").stdout
    assert '"minor": "32"' in version
    status, index = apiserver.request("GET", "/openapi/v3")
    assert status == 200 and "apis/apps/v1" in index["paths"]



def test_kubectl_applies_a_list_with_client_side_validation(apiserver: RunningApiServer) -> None:
    """kubectl validates a v1 List with /openapi/v2 (protobuf) before sending its items."""
    items = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "listed-a"}},
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "listed-b"}},
        ],
    }
    result = apiserver.kubectl("apply", "-f", "-", input=json.dumps(items))
    assert "configmap/listed-a created" in result.stdout
    assert "configmap/listed-b created" in result.stdout


def test_aggregated_discovery_lists_groups_resources_and_subresources() -> None:
    registry = Registry()
    registry.set_custom("gadgets.example.com", resource_types_from_crd(CRD, lambda s: None))
    assert wants_aggregated(
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
        "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,"
        "application/json")
    assert not wants_aggregated("application/json")
    core = aggregated_discovery(registry, legacy=True)
    assert [i["metadata"]["name"] for i in core["items"]] == [""]
    groups = {i["metadata"]["name"]: i for i in aggregated_discovery(registry, legacy=False)[
        "items"]}
    assert "" not in groups
    gadgets = next(r for r in groups["example.com"]["versions"][0]["resources"]
                   if r["resource"] == "gadgets")
    assert gadgets["scope"] == "Cluster" and gadgets["shortNames"] == ["gdg"]
    scale = next(s for s in gadgets["subresources"] if s["subresource"] == "scale")
    assert scale["responseKind"] == {"group": "autoscaling", "version": "v1", "kind": "Scale"}
