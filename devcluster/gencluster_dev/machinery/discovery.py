"""Discovery documents, built from the resource registry by pure functions.

kubectl 1.32 asks for aggregated discovery (apidiscovery.k8s.io/v2) first; answering the plain
`APIGroupList` / `APIResourceList` as `application/json` makes it fall back to the legacy
per-group-version walk, which is all we serve. The OpenAPI v3 documents carry the CRD schemas
(for `kubectl explain`) and declare the `fieldValidation` parameter, which tells kubectl the
server validates fields itself (so it does not try to download OpenAPI v2 to validate).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from gencluster_dev.machinery.resources import (
    SUBRESOURCE_KINDS,
    SUBRESOURCE_VERBS,
    Registry,
    ResourceType,
)

KUBERNETES_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-gencluster-dev",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.23",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def version_info() -> dict[str, str]:
    return dict(KUBERNETES_VERSION)


def api_versions(server_address: str) -> dict[str, Any]:
    """`GET /api`."""
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                        "serverAddress": server_address}],
    }


def api_group(registry: Registry, group: str) -> dict[str, Any]:
    """One `APIGroup` entry (also the body of `GET /apis/GROUP`)."""
    versions = registry.versions_of(group)
    entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": entries,
        "preferredVersion": entries[0],
    }


def api_group_list(registry: Registry) -> dict[str, Any]:
    """`GET /apis`."""
    groups = []
    for group in registry.groups():
        if group == "":
            continue
        entry = api_group(registry, group)
        del entry["kind"], entry["apiVersion"]
        groups.append(entry)
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def _storage_version_hash(t: ResourceType) -> str:
    digest = hashlib.sha256(f"{t.group}/{t.storage_version}/{t.kind}".encode()).digest()
    return base64.b64encode(digest[:8]).decode()


def _resource_entry(t: ResourceType) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": t.plural,
        "singularName": t.singular,
        "namespaced": t.namespaced,
        "kind": t.kind,
        "verbs": list(t.verbs),
        "storageVersionHash": _storage_version_hash(t),
    }
    if t.short_names:
        entry["shortNames"] = list(t.short_names)
    if t.categories:
        entry["categories"] = list(t.categories)
    return entry


def _subresource_entry(t: ResourceType, sub: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": f"{t.plural}/{sub}",
        "singularName": "",
        "namespaced": t.namespaced,
        "kind": t.kind,
        "verbs": list(SUBRESOURCE_VERBS[sub]),
    }
    if sub in SUBRESOURCE_KINDS:
        group, version, kind = SUBRESOURCE_KINDS[sub]
        entry["kind"] = kind
        if group or sub == "scale":
            entry["group"] = group
            entry["version"] = version
    if sub == "log":
        entry["kind"] = "Pod"
    return entry


def api_resource_list(registry: Registry, group: str, version: str) -> dict[str, Any] | None:
    """`GET /api/v1` or `/apis/GROUP/VERSION`, or None when not served."""
    served = [t for t in registry.all() if t.group == group and t.version == version]
    if not served:
        return None
    resources: list[dict[str, Any]] = []
    for t in served:
        resources.append(_resource_entry(t))
        for sub in t.subresources:
            resources.append(_subresource_entry(t, sub))
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }


# -- OpenAPI v3 ------------------------------------------------------------------------------
OBJECT_META_REF = {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}


def _gv_path(group: str, version: str) -> str:
    return f"api/{version}" if not group else f"apis/{group}/{version}"


def openapi_v3_document(registry: Registry, group: str, version: str) -> dict[str, Any] | None:
    """The OpenAPI v3 document of one group/version: schemas plus the paths kubectl inspects."""
    served = [t for t in registry.all() if t.group == group and t.version == version]
    if not served:
        return None
    schemas: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    for t in served:
        gvk = {"group": t.group, "version": t.version, "kind": t.kind}
        name = _schema_name(t)
        schema: dict[str, Any]
        if t.raw_openapi_schema is not None:
            schema = json.loads(json.dumps(t.raw_openapi_schema))
            props = schema.setdefault("properties", {})
            props.setdefault("apiVersion", {
                "type": "string",
                "description": "APIVersion defines the versioned schema of this representation "
                               "of an object."})
            props.setdefault("kind", {
                "type": "string",
                "description": "Kind is a string value representing the REST resource this "
                               "object represents."})
            props["metadata"] = {"allOf": [OBJECT_META_REF],
                                 "description": "Standard object's metadata."}
        else:
            schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                      "properties": {"apiVersion": {"type": "string"},
                                     "kind": {"type": "string"},
                                     "metadata": {"allOf": [OBJECT_META_REF]}}}
        schema["x-kubernetes-group-version-kind"] = [gvk]
        schemas[name] = schema
        ref = {"$ref": f"#/components/schemas/{name}"}
        operation_params = [
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string"},
             "description": "fieldValidation instructs the server on how to handle objects in "
                            "the request containing unknown or duplicate fields."},
            {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
        ]
        base = "/" + _gv_path(group, version)
        collection = (f"{base}/namespaces/{{namespace}}/{t.plural}" if t.namespaced
                      else f"{base}/{t.plural}")
        body = {"content": {"application/json": {"schema": ref}}}
        response = {"200": {"description": "OK", "content": {"application/json": {"schema": ref}}}}
        paths[collection] = {
            "post": {"x-kubernetes-group-version-kind": gvk, "x-kubernetes-action": "post",
                     "parameters": operation_params, "requestBody": body,
                     "responses": response},
        }
        patch_body = {"content": {ct: {"schema": {"type": "object"}} for ct in (
            "application/json-patch+json", "application/merge-patch+json",
            "application/apply-patch+yaml")}}
        paths[f"{collection}/{{name}}"] = {
            "get": {"x-kubernetes-group-version-kind": gvk, "x-kubernetes-action": "get",
                    "responses": response},
            "put": {"x-kubernetes-group-version-kind": gvk, "x-kubernetes-action": "put",
                    "parameters": operation_params, "requestBody": body,
                    "responses": response},
            "patch": {"x-kubernetes-group-version-kind": gvk, "x-kubernetes-action": "patch",
                      "parameters": operation_params, "requestBody": patch_body,
                      "responses": response},
        }
    schemas["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"] = {
        "type": "object",
        "description": "ObjectMeta is metadata that all persisted resources must have.",
        "properties": {
            "name": {"type": "string"}, "namespace": {"type": "string"},
            "generateName": {"type": "string"}, "uid": {"type": "string"},
            "resourceVersion": {"type": "string"}, "generation": {"type": "integer"},
            "creationTimestamp": {"type": "string", "format": "date-time"},
            "deletionTimestamp": {"type": "string", "format": "date-time"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            "finalizers": {"type": "array", "items": {"type": "string"}},
            "ownerReferences": {"type": "array", "items": {"type": "object"}},
        },
    }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION["gitVersion"]},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def _schema_name(t: ResourceType) -> str:
    reversed_group = ".".join(reversed(t.group.split("."))) if t.group else "io.k8s.api.core"
    return f"{reversed_group}.{t.version}.{t.kind}"


def openapi_v3_index(registry: Registry, documents: Mapping[str, str]) -> dict[str, Any]:
    """`GET /openapi/v3`: the list of group/version documents with content hashes.

    `documents` maps each `api/v1` / `apis/G/V` path to its content hash.
    """
    return {
        "paths": {
            path: {"serverRelativeURL": f"/openapi/v3/{path}?hash={digest}"}
            for path, digest in documents.items()
        }
    }


def served_group_versions(registry: Registry) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    for t in registry.all():
        if (t.group, t.version) not in seen:
            seen.append((t.group, t.version))
    return seen


def openapi_path(group: str, version: str) -> str:
    return _gv_path(group, version)


# -- OpenAPI v2 ------------------------------------------------------------------------------
# What kube-apiserver answers (clients ask with "...spec.v2@v1.0+protobuf", which is not a
# valid media type to answer with).
OPENAPI_V2_CONTENT_TYPE = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"


def _protobuf_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _protobuf_field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2): strings and embedded messages."""
    return _protobuf_varint(number << 3 | 2) + _protobuf_varint(len(payload)) + payload


def openapi_v2_document() -> bytes:
    """`GET /openapi/v2`: an empty Swagger 2.0 document in gnostic's protobuf encoding.

    kubectl validates a `v1` `List` on the client with OpenAPI v2 (its server-side field
    validation check does not cover List) and reads this document as protobuf only. Kinds
    missing from it are skipped by that validation, and every item still reaches the server
    with `fieldValidation=Strict`, so an empty document keeps `kubectl apply -f list.yaml`
    working without a second copy of the schemas `/openapi/v3` serves. Field numbers are
    those of gnostic's `openapi.v2.Document` (swagger 1, info 2, paths 8, definitions 9).
    """
    info = _protobuf_field(1, b"Kubernetes") + _protobuf_field(
        2, KUBERNETES_VERSION["gitVersion"].encode()
    )
    return (
        _protobuf_field(1, b"2.0")
        + _protobuf_field(2, info)
        + _protobuf_field(8, b"")
        + _protobuf_field(9, b"")
    )


# -- aggregated discovery (apidiscovery.k8s.io/v2) ----------------------------------------------
AGGREGATED_CONTENT_TYPE = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"


def wants_aggregated(accept: str) -> bool:
    """Whether a client asked for aggregated discovery v2 (kubectl and client-go do)."""
    for media_range in accept.replace(" ", "").split(","):
        params = set(media_range.split(";")[1:])
        if {"g=apidiscovery.k8s.io", "v=v2", "as=APIGroupDiscoveryList"} <= params:
            return True
    return False


def _discovery_resource(t: ResourceType) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": t.plural,
        "responseKind": {"group": t.group, "version": t.version, "kind": t.kind},
        "scope": "Namespaced" if t.namespaced else "Cluster",
        "singularResource": t.singular,
        "verbs": list(t.verbs),
    }
    if t.short_names:
        entry["shortNames"] = list(t.short_names)
    if t.categories:
        entry["categories"] = list(t.categories)
    subresources = []
    for sub in t.subresources:
        group, version, kind = SUBRESOURCE_KINDS.get(sub, (t.group, t.version, t.kind))
        subresources.append({
            "subresource": sub,
            "responseKind": {"group": group, "version": version, "kind": kind},
            "verbs": list(SUBRESOURCE_VERBS[sub]),
        })
    if subresources:
        entry["subresources"] = subresources
    return entry


def aggregated_discovery(registry: Registry, *, legacy: bool) -> dict[str, Any]:
    """`GET /api` (legacy=True: the core group) or `GET /apis` as APIGroupDiscoveryList."""
    items = []
    for group in registry.groups():
        if (group == "") != legacy:
            continue
        versions = []
        for version in registry.versions_of(group):
            served = [t for t in registry.all() if t.group == group and t.version == version]
            versions.append({
                "version": version,
                "resources": [_discovery_resource(t) for t in served],
                "freshness": "Current",
            })
        items.append({"metadata": {"name": group, "creationTimestamp": None},
                      "versions": versions})
    return {"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2",
            "metadata": {}, "items": items}
