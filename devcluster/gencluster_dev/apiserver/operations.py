"""The semantics of API verbs, independent of HTTP.

create / get / list / update / patch / delete with what Kubernetes guarantees around them:
server-set metadata (uid, creationTimestamp, generation, generateName), optimistic
concurrency, status carried over between the main resource and its `/status` subresource,
finalizers and deletionTimestamp, graceful pod deletion, CRD registration and admission of
custom objects, Service IP allocation, defaults kubectl and the kubelet rely on. The HTTP shell
(`apiserver`) only decodes requests and encodes answers.
"""

from __future__ import annotations

import base64
import copy
import ipaddress
import json
import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from gencluster_dev.apiserver.auth import Authenticator
from gencluster_dev.apiserver.authorization import check_escalation
from gencluster_dev.machinery import apply as server_side_apply
from gencluster_dev.machinery import patch as patching
from gencluster_dev.machinery import schema as schemas
from gencluster_dev.machinery.conversion import from_storage, to_storage
from gencluster_dev.machinery.crds import crd_status, validate_crd
from gencluster_dev.machinery.defaults import (
    default_claim,
    default_claim_spec,
    default_pod,
    default_service,
    default_storage_class,
    default_volume,
    default_volume_spec,
    fold_string_data,
    used_cluster_ips,
)
from gencluster_dev.machinery.errors import (
    ApiError,
    already_exists,
    bad_request,
    conflict,
    forbidden,
    invalid,
    not_found,
    unsupported_media_type,
)
from gencluster_dev.machinery.netpol import policy_problem
from gencluster_dev.machinery.resources import (
    CLAIMS_KEY,
    CRD_KEY,
    NAMESPACES_KEY,
    NETWORK_POLICIES_KEY,
    PODS_KEY,
    SERVICEACCOUNTS_KEY,
    SERVICES_KEY,
    STORAGE_CLASSES_KEY,
    VOLUMES_KEY,
    Registry,
    ResourceKey,
    ResourceType,
    resource_types_from_crd,
)
from gencluster_dev.machinery.selectors import (
    SelectorError,
    parse_field_selector,
    parse_label_selector,
)
from gencluster_dev.machinery.storage import default_class_name, resize_refusal
from gencluster_dev.machinery.store import Store
from gencluster_dev.machinery.validation import (
    claim_causes,
    claim_update_causes,
    drop_fields,
    metadata_causes,
    name_causes,
    shape_error,
    storage_class_causes,
    unknown_fields,
    volume_causes,
)
from gencluster_dev.machinery.workloads import WORKLOAD_KINDS, default_job, default_workload

Clock = Callable[[], datetime]
INITIAL_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"
NAMESPACE_FINALIZER = "kubernetes"
NODES_KEY: ResourceKey = ("", "nodes")
CRD_CLEANUP_FINALIZER = "customresourcecleanup.apiextensions.k8s.io"
GENERATE_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # k8s utilrand alphabet
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def get_path(obj: Any, dotted: str) -> Any:
    """Value at a `.spec.replicas`-style path, or None."""
    for part in [p for p in dotted.split(".") if p]:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(part)
    return obj


def set_path(obj: dict[str, Any], dotted: str, value: Any) -> None:
    parts = [p for p in dotted.split(".") if p]
    for part in parts[:-1]:
        obj = obj.setdefault(part, {})
    obj[parts[-1]] = value


def spec_part(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Everything but metadata and status: what `generation` counts changes of."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


@dataclass
class DeleteOptions:
    propagation_policy: str | None = None
    grace_period_seconds: int | None = None
    precondition_uid: str | None = None
    precondition_resource_version: str | None = None
    dry_run: bool = False


@dataclass
class DeleteOutcome:
    object: dict[str, Any]
    deleted: bool  # False: still there (finalizers, graceful pod deletion)


class Operations:
    """Every API verb over the store, with Kubernetes semantics."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        authenticator: Authenticator,
        *,
        service_network: str,
        clock: Clock,
    ) -> None:
        self.store = store
        self.registry = registry
        self.authenticator = authenticator
        self.clock = clock
        self.service_network = ipaddress.ip_network(service_network, strict=False)
        self.warnings: list[str] = []

    # -- bootstrap ---------------------------------------------------------------------
    def bootstrap(self) -> None:
        for name in INITIAL_NAMESPACES:
            if self.store.get(NAMESPACES_KEY, "", name) is None:
                self.create(self._type(NAMESPACES_KEY), "",
                            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    def _type(self, key: ResourceKey) -> ResourceType:
        t = self.registry.for_key(key)
        assert t is not None, key
        return t

    # -- reads -------------------------------------------------------------------------
    def present(self, t: ResourceType, obj: Mapping[str, Any]) -> dict[str, Any]:
        """The stored object as served at `t`'s version (CRDs store one shape for all)."""
        out = copy.deepcopy(dict(obj))
        out["apiVersion"] = t.group_version
        out["kind"] = t.kind
        return from_storage(t.group, t.kind, out)

    def get(self, t: ResourceType, namespace: str, name: str) -> dict[str, Any]:
        obj = self.store.get(t.key, namespace, name)
        if obj is None:
            raise not_found(t.plural, t.group, name)
        return self.present(t, obj)

    def list(
        self,
        t: ResourceType,
        namespace: str | None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> dict[str, Any]:
        matches = self.matcher(t, label_selector, field_selector)
        items = [o for o in self.store.list(t.key, namespace) if matches(o)]
        list_rv = str(self.store.resource_version)
        meta: dict[str, Any] = {"resourceVersion": list_rv}
        if continue_token:
            try:
                after = json.loads(base64.urlsafe_b64decode(continue_token.encode()))
                start = (after["ns"], after["name"])
            except (ValueError, KeyError, TypeError):
                raise bad_request("continue key is not valid: illegal base64 data") from None
            items = [
                o for o in items
                if (o["metadata"].get("namespace", ""), o["metadata"]["name"]) > start
            ]
        if limit and limit > 0 and len(items) > limit:
            last = items[limit - 1]["metadata"]
            meta["continue"] = base64.urlsafe_b64encode(
                json.dumps({"ns": last.get("namespace", ""), "name": last["name"]}).encode()
            ).decode()
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        return {
            "apiVersion": t.group_version,
            "kind": t.list_kind,
            "metadata": meta,
            "items": [self.present(t, o) for o in items],
        }

    def matcher(
        self, t: ResourceType, label_selector: str | None, field_selector: str | None
    ) -> Callable[[Mapping[str, Any]], bool]:
        """A predicate for list and watch; 400 BadRequest for malformed selectors."""
        try:
            labels = parse_label_selector(label_selector) if label_selector else None
            fields = parse_field_selector(field_selector, t.kind) if field_selector else None
        except SelectorError as e:
            raise bad_request(str(e)) from None

        def matches(obj: Mapping[str, Any]) -> bool:
            if labels is not None and not labels.matches(
                (obj.get("metadata") or {}).get("labels") or {}
            ):
                return False
            return fields is None or fields.matches(obj)

        return matches

    # -- create ------------------------------------------------------------------------
    def create(
        self,
        t: ResourceType,
        namespace: str,
        body: Any,
        *,
        dry_run: bool = False,
        strict: bool = False,
    ) -> dict[str, Any]:
        obj = self._decode_body(t, body)
        self._check_unknown_fields(t, obj, strict)
        meta = obj["metadata"]
        if t.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise bad_request("the namespace of the provided object does not match the "
                                  "namespace sent on the request")
            meta["namespace"] = namespace
            self._require_namespace(namespace)
        else:
            meta.pop("namespace", None)
        causes = metadata_causes(meta)
        if causes:
            raise invalid(t.kind, t.group, meta.get("name", ""), causes)
        if not meta.get("name"):
            generate = meta.get("generateName")
            if not generate:
                raise invalid(t.kind, t.group, "", [(
                    "FieldValueRequired", "metadata.name",
                    "Required value: name or generateName is required")])
            meta["name"] = self._generated_name(t, namespace, generate)
        name = meta["name"]
        causes = name_causes(t.plural, name)
        if causes:
            raise invalid(t.kind, t.group, name, causes)
        now = self.clock()
        for server_owned in ("uid", "resourceVersion", "deletionTimestamp",
                             "deletionGracePeriodSeconds", "selfLink"):
            meta.pop(server_owned, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = rfc3339(now)
        meta["generation"] = 1
        if t.has_status and t.key != NODES_KEY:  # nodes register with their status
            obj.pop("status", None)
        obj = self._defaults_on_create(t, obj)
        obj = self._admit_custom(t, obj, None, strict=strict)
        self._validate_builtin(t, obj, None)
        if self.store.get(t.key, namespace if t.namespaced else "", name) is not None:
            raise already_exists(t.plural, t.group, name)
        if dry_run:
            return self.present(t, obj)
        stored = self.store.create(t.key, obj)
        self._after_write(t, stored, None)
        return self.present(t, stored)

    def _decode_body(self, t: ResourceType, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise bad_request(
                f"the object provided is unrecognized (must be of type {t.kind}): "
                "couldn't get version/kind; json parse error: expected an object")
        for field in ("apiVersion", "kind"):
            if body.get(field) is not None and not isinstance(body[field], str):
                raise bad_request(
                    f"the object provided is unrecognized: couldn't get version/kind; json "
                    f"parse error: json: cannot unmarshal {_json_type(body[field])} into Go "
                    f"struct field .{field} of type string")
        obj = copy.deepcopy(body)
        if t.builtin:
            obj = _without_nulls(obj)  # Go decodes null as the zero value: same as absent
        if obj.get("metadata") is None:
            obj["metadata"] = {}
        if not isinstance(obj["metadata"], dict):
            raise bad_request(
                f'{t.kind} in version "{t.version}" cannot be handled as a {t.kind}: json: '
                f"cannot unmarshal {type(obj['metadata']).__name__} into Go struct field "
                f"{t.kind}.metadata of type v1.ObjectMeta")
        problem = shape_error(t.kind, obj, builtin=t.builtin)
        if problem:
            raise bad_request(
                f'{t.kind} in version "{t.version}" cannot be handled as a {t.kind}: '
                f"{problem}")
        kind = obj.get("kind")
        api_version = obj.get("apiVersion")
        if kind is None and api_version is None:
            obj["kind"], obj["apiVersion"] = t.kind, t.group_version
            return to_storage(t.group, t.kind, obj)
        if kind != t.kind:
            raise bad_request(
                f'{kind} in version "{(api_version or "").rpartition("/")[2]}" cannot be '
                f"handled as a {t.kind}: no kind \"{kind}\" is registered for version "
                f'"{api_version}" in scheme'
                if kind else "Object 'Kind' is missing in the request body")
        if api_version != t.group_version:
            group = (api_version or "").rpartition("/")[0]
            if group != t.group or self.registry.lookup(
                t.group, (api_version or "").rpartition("/")[2], t.plural
            ) is None:
                raise bad_request(
                    f"the API version in the data ({api_version}) does not match the expected "
                    f"API version ({t.group_version})")
        obj["apiVersion"] = t.group_version
        return to_storage(t.group, t.kind, obj)

    def _check_unknown_fields(self, t: ResourceType, obj: dict[str, Any], strict: bool) -> None:
        """`fieldValidation=Strict` rejects unknown fields; otherwise they are dropped."""
        unknown = unknown_fields(t.kind, obj, t.builtin)
        if not unknown:
            return
        if strict:
            rendered = ", ".join(f'unknown field "{p}"' for p in unknown)
            raise bad_request(f"strict decoding error: {rendered}")
        self.warnings.extend(f'unknown field "{p}"' for p in unknown)
        drop_fields(obj, unknown)

    def _require_namespace(self, namespace: str) -> None:
        ns = self.store.get(NAMESPACES_KEY, "", namespace)
        if ns is None:
            raise not_found("namespaces", "", namespace)
        if ns["metadata"].get("deletionTimestamp"):
            raise ApiError(
                403, "Forbidden",
                f"unable to create new content in namespace {namespace} because it is being "
                "terminated",
                name=namespace, kind="namespaces",
            )

    def _generated_name(self, t: ResourceType, namespace: str, prefix: str) -> str:
        prefix = prefix[: 253 - 5]
        for _ in range(8):
            candidate = prefix + "".join(secrets.choice(GENERATE_NAME_ALPHABET) for _ in range(5))
            if self.store.get(t.key, namespace if t.namespaced else "", candidate) is None:
                return candidate
        raise ApiError(
            409, "AlreadyExists",
            f'{t.qualified} "{prefix}" already exists, the server was not able to generate a '
            "unique name for the object",
            name=prefix, group=t.group or None, kind=t.plural,
        )

    def _defaults_on_create(self, t: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        if t.key == PODS_KEY:
            default_pod(obj)
        elif t.builtin and t.kind in WORKLOAD_KINDS:
            default_workload(t.kind, obj)
            causes = default_job(obj) if t.kind == "Job" else []
            if causes:
                raise invalid(t.kind, t.group, obj["metadata"]["name"], causes)
        elif t.key == SERVICES_KEY:
            default_service(obj, self.service_network,
                            used_cluster_ips(self.store.list(SERVICES_KEY)))
        elif t.key == NAMESPACES_KEY:
            spec = obj.setdefault("spec", {})
            finalizers = spec.setdefault("finalizers", [])
            if NAMESPACE_FINALIZER not in finalizers:
                finalizers.append(NAMESPACE_FINALIZER)
            obj["status"] = {"phase": "Active"}
            labels = obj["metadata"].setdefault("labels", {})
            labels["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
        elif t.key == ("", "secrets"):
            obj.setdefault("type", "Opaque")
            fold_string_data(obj)
        elif t.key == CRD_KEY:
            obj["status"] = crd_status(obj, rfc3339(self.clock()))
            finalizers = obj["metadata"].setdefault("finalizers", [])
            if CRD_CLEANUP_FINALIZER not in finalizers:
                finalizers.append(CRD_CLEANUP_FINALIZER)
        elif t.key == CLAIMS_KEY:
            default_claim(obj, default_class_name(self.store.list(STORAGE_CLASSES_KEY)))
        elif t.key == VOLUMES_KEY:
            default_volume(obj, rfc3339(self.clock()))
        elif t.key == STORAGE_CLASSES_KEY:
            default_storage_class(obj)
        return obj

    @staticmethod
    def _defaults_on_update(t: ResourceType, obj: dict[str, Any]) -> None:
        """Defaults kube-apiserver applies at every decode, so leaving them out of a PUT is
        not a change (immutable fields would otherwise refuse it)."""
        if t.key == CLAIMS_KEY:
            default_claim_spec(obj)
        elif t.builtin and t.kind in WORKLOAD_KINDS:
            default_workload(t.kind, obj)
        elif t.key == VOLUMES_KEY:
            default_volume_spec(obj)
        elif t.key == STORAGE_CLASSES_KEY:
            default_storage_class(obj)

    def _validate_builtin(
        self, t: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None
    ) -> None:
        name = obj["metadata"]["name"]
        if t.key == CRD_KEY:
            validate_crd(obj)
        storage_causes = None
        if t.key == CLAIMS_KEY:
            storage_causes = claim_causes(obj) if old is None else claim_update_causes(old, obj)
        elif t.key == VOLUMES_KEY:
            storage_causes = volume_causes(obj)
        elif t.key == STORAGE_CLASSES_KEY:
            storage_causes = storage_class_causes(obj, old)
        if t.key == NETWORK_POLICIES_KEY:
            problem = policy_problem(obj)
            if problem is not None:
                storage_causes = [("FieldValueInvalid", "spec", f"Invalid value: {problem}")]
        if storage_causes:
            raise invalid(t.kind, t.group, name, storage_causes)
        if t.key == CLAIMS_KEY and old is not None:
            refusal = resize_refusal(old, obj, self.store.list(STORAGE_CLASSES_KEY))
            if refusal:
                raise forbidden(f'persistentvolumeclaims "{name}" is forbidden: {refusal}')
        if t.key == PODS_KEY and old is None:
            containers = (obj.get("spec") or {}).get("containers")
            if not isinstance(containers, list) or not containers:
                raise invalid("Pod", "", name, [("FieldValueRequired", "spec.containers",
                                                 "Required value")])
            causes = []
            for i, c in enumerate(containers):
                if not isinstance(c, dict) or not c.get("name"):
                    causes.append(("FieldValueRequired", f"spec.containers[{i}].name",
                                   "Required value"))
                elif not isinstance(c, dict) or not c.get("image"):
                    causes.append(("FieldValueRequired", f"spec.containers[{i}].image",
                                   "Required value"))
            if causes:
                raise invalid("Pod", "", name, causes)
        if t.key == PODS_KEY and old is not None:
            old_node = (old.get("spec") or {}).get("nodeName")
            new_node = (obj.get("spec") or {}).get("nodeName")
            if old_node and old_node != new_node:
                raise invalid("Pod", "", name, [(
                    "FieldValueForbidden", "spec",
                    "Forbidden: pod updates may not change fields other than "
                    "`spec.containers[*].image`,`spec.initContainers[*].image`,"
                    "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to "
                    "existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be "
                    "set to 1 if it was previously negative)")])
        check_escalation(t, obj, self.store)
        if t.key == SERVICES_KEY and old is not None:
            old_ip = (old.get("spec") or {}).get("clusterIP")
            spec = obj.setdefault("spec", {})
            if spec.get("clusterIP") in (None, ""):
                spec["clusterIP"] = old_ip
                spec["clusterIPs"] = (old.get("spec") or {}).get("clusterIPs")
            elif spec.get("clusterIP") != old_ip:
                raise invalid("Service", "", name, [(
                    "FieldValueInvalid", "spec.clusterIPs[0]",
                    f'Invalid value: []string{{"{spec.get("clusterIP")}"}}: may not change once '
                    "set")])

    # -- custom resources --------------------------------------------------------------
    def _admit_custom(
        self,
        t: ResourceType,
        obj: dict[str, Any],
        old: dict[str, Any] | None,
        *,
        strict: bool,
    ) -> dict[str, Any]:
        if t.builtin or t.schema is None:
            return obj
        admitted, errors = schemas.admit(t.schema, obj, old)
        admitted = dict(admitted)
        admitted["metadata"] = obj["metadata"]
        unknown = sorted(_pruned_paths(obj, admitted, ""))
        unknown = [p for p in unknown if not p.startswith("metadata")]
        if unknown:
            if strict:
                rendered = ", ".join(f'unknown field "{p}"' for p in unknown)
                raise bad_request(f"strict decoding error: {rendered}")
            self.warnings.extend(f'unknown field "{p}"' for p in unknown)
        if errors:
            raise invalid(
                t.kind, t.group, obj["metadata"].get("name", ""),
                [(e.reason, e.field, str(e)[len(e.field) + 2:] if str(e).startswith(
                    f"{e.field}: ") else str(e)) for e in errors],
            )
        return admitted

    # -- update ------------------------------------------------------------------------
    def update(
        self,
        t: ResourceType,
        namespace: str,
        name: str,
        body: Any,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
        strict: bool = False,
        check_resource_version: bool = True,
    ) -> dict[str, Any]:
        new = self._decode_body(t, body)
        self._check_unknown_fields(t, new, strict and subresource is None)
        meta = new.get("metadata")
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        if meta.get("name") is None:
            meta["name"] = name
        if meta["name"] != name:
            raise bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL "
                f"({name})")
        if t.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise bad_request("the namespace of the provided object does not match the "
                                  "namespace sent on the request")
            meta["namespace"] = namespace
        stored_old = self.store.get(t.key, namespace if t.namespaced else "", name)
        if stored_old is None:
            raise not_found(t.plural, t.group, name)
        old = copy.deepcopy(stored_old)
        expected_rv: int | None = None
        if check_resource_version and meta.get("resourceVersion"):
            try:
                expected_rv = int(meta["resourceVersion"])
            except (TypeError, ValueError):
                raise invalid(t.kind, t.group, name, [(
                    "FieldValueInvalid", "metadata.resourceVersion",
                    f'Invalid value: "{meta["resourceVersion"]}": must be a number')]) from None
        if meta.get("uid") and meta["uid"] != old["metadata"]["uid"]:
            raise conflict(
                t.plural, t.group, name,
                f"Precondition failed: UID in precondition: {meta['uid']}, UID in object meta: "
                f"{old['metadata']['uid']}")
        causes = metadata_causes(meta)
        if causes:
            raise invalid(t.kind, t.group, name, causes)
        if subresource == "finalize":
            merged = copy.deepcopy(old)
            merged.setdefault("spec", {})["finalizers"] = list(
                (new.get("spec") or {}).get("finalizers") or [])
            new = merged
        elif subresource == "status":
            merged = copy.deepcopy(old)
            if "status" in new:
                merged["status"] = new["status"]
            else:
                merged.pop("status", None)
            merged["apiVersion"] = new["apiVersion"]
            new = merged
        else:
            if t.has_status:
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
        new_meta = new["metadata"]
        for immutable in ("uid", "creationTimestamp", "deletionTimestamp",
                          "deletionGracePeriodSeconds", "namespace", "name"):
            if immutable in old["metadata"]:
                new_meta[immutable] = old["metadata"][immutable]
            else:
                new_meta.pop(immutable, None)
        new_meta.pop("resourceVersion", None)
        if "managedFields" not in new_meta and "managedFields" in old["metadata"]:
            new_meta["managedFields"] = old["metadata"]["managedFields"]
        if old["metadata"].get("deletionTimestamp"):
            added = [f for f in new_meta.get("finalizers") or []
                     if f not in (old["metadata"].get("finalizers") or [])]
            if added:
                raise invalid(t.kind, t.group, name, [(
                    "FieldValueForbidden", "metadata.finalizers",
                    "Forbidden: no new finalizers can be added if the object is being deleted, "
                    "found new finalizers []string{" + ", ".join(f'"{f}"' for f in added) + "}")])
        if t.key == ("", "secrets"):
            fold_string_data(new)
        if t.key == NAMESPACES_KEY and subresource is None:
            new.setdefault("spec", old.get("spec", {}))
        if subresource is None:
            self._defaults_on_update(t, new)
            new = self._admit_custom(t, new, old, strict=strict)
        elif not t.builtin and t.schema is not None:
            admitted = self._admit_custom(t, new, old, strict=False)
            new = admitted
        self._validate_builtin(t, new, old)
        generation = int(old["metadata"].get("generation") or 1)
        if t.has_status or t.key == CRD_KEY:
            changed = spec_part(old) != spec_part(new)
        else:
            changed = {k: v for k, v in old.items() if k != "metadata"} != {
                k: v for k, v in new.items() if k != "metadata"}
        new_meta["generation"] = generation + 1 if changed else generation
        if t.key == CRD_KEY and subresource is None:
            new["status"] = crd_status(new, rfc3339(self.clock()), old.get("status"))
        if dry_run:
            new_meta["resourceVersion"] = old["metadata"]["resourceVersion"]
            return self.present(t, new)
        if expected_rv is not None and expected_rv != int(old["metadata"]["resourceVersion"]):
            raise conflict(t.plural, t.group, name)
        if self._unchanged(old, new):
            return self.present(t, stored_old)  # no-op updates do not bump resourceVersion
        stored = self.store.update(t.key, new, expected_rv)
        self._after_write(t, stored, old)
        if stored["metadata"].get("deletionTimestamp") and not stored["metadata"].get(
            "finalizers"
        ) and not (t.key == PODS_KEY and int(
            stored["metadata"].get("deletionGracePeriodSeconds") or 0) > 0) and not (
            t.key == NAMESPACES_KEY and (stored.get("spec") or {}).get("finalizers")
        ):
            self.remove_object(t, stored)
        return self.present(t, stored)

    @staticmethod
    def _unchanged(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
        """True for a no-op write (it must not bump resourceVersion, as in Kubernetes)."""
        def without_rv(obj: Mapping[str, Any]) -> dict[str, Any]:
            meta = {k: v for k, v in obj["metadata"].items() if k != "resourceVersion"}
            return {**obj, "metadata": meta}

        return without_rv(old) == without_rv(new)

    # -- patch -------------------------------------------------------------------------
    def patch(
        self,
        t: ResourceType,
        namespace: str,
        name: str,
        content_type: str,
        patch_body: Any,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
        strict: bool = False,
        field_manager: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Apply a patch; returns (object, created) — apply patches may create."""
        stored = self.store.get(t.key, namespace if t.namespaced else "", name)
        if content_type == APPLY_PATCH:
            if not isinstance(patch_body, dict):
                raise bad_request("apply patch must be an object")
            if not field_manager:
                raise invalid("PatchOptions", "meta.k8s.io", "", [(
                    "FieldValueRequired", "fieldManager",
                    "Required value: is required for apply patch")])
            if not isinstance(patch_body.get("metadata", {}), dict):
                raise bad_request("metadata must be an object")
            applied_fields = server_side_apply.field_set(patch_body)
            if stored is None:
                body = copy.deepcopy(patch_body)
                body.setdefault("metadata", {})
                if body["metadata"].get("name") not in (None, name):
                    raise bad_request(
                        f"the name of the object ({body['metadata']['name']}) does not match "
                        f"the name on the URL ({name})")
                body["metadata"]["name"] = name
                server_side_apply.record_apply(body["metadata"], field_manager, t.group_version,
                                               applied_fields, rfc3339(self.clock()))
                return self.create(t, namespace, body, dry_run=dry_run, strict=strict), True
        if stored is None:
            raise not_found(t.plural, t.group, name)
        current = self.present(t, stored)
        try:
            if content_type == MERGE_PATCH:
                patched = patching.apply_merge_patch(current, patch_body)
            elif content_type == JSON_PATCH:
                patched = patching.apply_json_patch(current, patch_body)
            elif content_type == STRATEGIC_PATCH:
                if not t.builtin:
                    raise unsupported_media_type(
                        [JSON_PATCH, MERGE_PATCH, APPLY_PATCH])
                patched = patching.apply_strategic_merge_patch(current, patch_body, t.kind)
            elif content_type == APPLY_PATCH:
                assert field_manager is not None
                applied = copy.deepcopy(patch_body)
                applied.setdefault("metadata", {}).pop("resourceVersion", None)
                previous = server_side_apply.previous_fields(current["metadata"], field_manager)
                removed = server_side_apply.removal_patch(previous, applied_fields)
                current = patching.apply_merge_patch(current, removed)
                if t.builtin:
                    current = server_side_apply.prune_list_items(
                        current, applied, previous,
                        lambda path: patching.list_merge_key(t.kind, path))
                    patched = patching.apply_strategic_merge_patch(current, applied, t.kind)
                else:
                    patched = patching.apply_merge_patch(current, applied)
                server_side_apply.record_apply(patched["metadata"], field_manager,
                                               t.group_version, applied_fields,
                                               rfc3339(self.clock()))
            else:
                raise unsupported_media_type([JSON_PATCH, MERGE_PATCH, APPLY_PATCH])
        except patching.PatchError as e:
            if content_type == JSON_PATCH:
                raise ApiError(422, "Invalid", str(e)) from None
            raise bad_request(str(e)) from None
        if not isinstance(patched, dict):
            raise bad_request("the patched object is not a JSON object")
        patched_meta = patched.get("metadata") if isinstance(patched.get("metadata"), dict) \
            else None
        check_rv = bool(
            patched_meta is not None
            and patched_meta.get("resourceVersion") != current["metadata"]["resourceVersion"]
        ) or _mentions_resource_version(patch_body)
        if patched_meta is not None and not check_rv:
            patched_meta.pop("resourceVersion", None)
        result = self.update(
            t, namespace, name, patched, subresource=subresource, dry_run=dry_run,
            strict=strict, check_resource_version=check_rv,
        )
        return result, False

    # -- delete ------------------------------------------------------------------------
    def delete(
        self, t: ResourceType, namespace: str, name: str, options: DeleteOptions | None = None
    ) -> DeleteOutcome:
        options = options or DeleteOptions()
        ns = namespace if t.namespaced else ""
        stored = self.store.get(t.key, ns, name)
        if stored is None:
            raise not_found(t.plural, t.group, name)
        meta = stored["metadata"]
        if options.precondition_uid and options.precondition_uid != meta["uid"]:
            raise conflict(
                t.plural, t.group, name,
                f"Precondition failed: UID in precondition: {options.precondition_uid}, UID in "
                f"object meta: {meta['uid']}")
        if options.precondition_resource_version and (
            options.precondition_resource_version != meta["resourceVersion"]
        ):
            raise conflict(
                t.plural, t.group, name,
                "Precondition failed: ResourceVersion in precondition: "
                f"{options.precondition_resource_version}, ResourceVersion in object meta: "
                f"{meta['resourceVersion']}")
        if options.propagation_policy not in (None, "Background", "Foreground", "Orphan"):
            raise invalid("DeleteOptions", "", "", [(
                "FieldValueNotSupported", "propagationPolicy",
                f'Unsupported value: "{options.propagation_policy}": supported values: '
                '"Foreground", "Background", "Orphan", "nil"')])
        obj = copy.deepcopy(stored)
        meta = obj["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        already_deleting = bool(meta.get("deletionTimestamp"))
        now = self.clock()
        if t.key == NAMESPACES_KEY:
            return self._delete_namespace(t, obj, options)
        policy = options.propagation_policy
        if policy == "Foreground" and FOREGROUND not in finalizers and not already_deleting:
            finalizers.append(FOREGROUND)
        if policy == "Orphan" and ORPHAN not in finalizers and not already_deleting:
            finalizers.append(ORPHAN)
        grace = self._grace_period(t, obj, options)
        if options.dry_run:
            return DeleteOutcome(self.present(t, obj), False)
        if grace > 0 and already_deleting and int(
            meta.get("deletionGracePeriodSeconds") or 0) <= grace:
            return DeleteOutcome(self.present(t, stored), False)  # a grace period only shrinks
        if grace > 0:
            meta["deletionTimestamp"] = rfc3339(now + timedelta(seconds=grace))
            meta["deletionGracePeriodSeconds"] = grace
            meta["finalizers"] = finalizers
            stored = self.store.update(t.key, obj)
            return DeleteOutcome(self.present(t, stored), False)
        if finalizers:
            if already_deleting and finalizers == list(
                stored["metadata"].get("finalizers") or []
            ) and int(meta.get("deletionGracePeriodSeconds") or 0) == 0:
                return DeleteOutcome(self.present(t, stored), False)
            if not already_deleting or t.key == PODS_KEY:
                meta["deletionTimestamp"] = rfc3339(now)
            meta["deletionGracePeriodSeconds"] = 0
            meta["finalizers"] = finalizers
            stored = self.store.update(t.key, obj)
            return DeleteOutcome(self.present(t, stored), False)
        final = self.remove_object(t, stored)
        return DeleteOutcome(self.present(t, final), True)

    def _grace_period(
        self, t: ResourceType, obj: Mapping[str, Any], options: DeleteOptions
    ) -> int:
        """Seconds a pod gets to terminate: only bound, still-running pods get any."""
        if t.key != PODS_KEY:
            return 0
        spec = obj.get("spec") or {}
        if not spec.get("nodeName"):
            return 0
        if (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return 0
        if options.grace_period_seconds is not None:
            return max(0, options.grace_period_seconds)
        configured = spec.get("terminationGracePeriodSeconds")
        return int(configured) if configured is not None else 30

    def remove_object(self, t: ResourceType, stored: Mapping[str, Any]) -> dict[str, Any]:
        """Remove an object for good (its finalizers are done) and run the delete hooks."""
        meta = stored["metadata"]
        final = self.store.delete(t.key, meta.get("namespace", ""), meta["name"])
        self._after_delete(t, final)
        return final

    def _delete_namespace(
        self, t: ResourceType, obj: dict[str, Any], options: DeleteOptions
    ) -> DeleteOutcome:
        meta = obj["metadata"]
        if meta.get("deletionTimestamp"):
            return DeleteOutcome(self.present(t, obj), False)
        if options.dry_run:
            return DeleteOutcome(self.present(t, obj), False)
        meta["deletionTimestamp"] = rfc3339(self.clock())
        meta["deletionGracePeriodSeconds"] = 0
        obj.setdefault("status", {})["phase"] = "Terminating"
        stored = self.store.update(t.key, obj)
        return DeleteOutcome(self.present(t, stored), False)

    # -- subresources ------------------------------------------------------------------
    def get_scale(self, t: ResourceType, namespace: str, name: str) -> dict[str, Any]:
        obj = self.get(t, namespace, name)
        return self._scale_of(t, obj)

    def _scale_of(self, t: ResourceType, obj: Mapping[str, Any]) -> dict[str, Any]:
        assert t.scale is not None
        meta = obj["metadata"]
        scale: dict[str, Any] = {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                "name": meta["name"],
                "uid": meta["uid"],
                "resourceVersion": meta["resourceVersion"],
                "creationTimestamp": meta["creationTimestamp"],
            },
            "spec": {"replicas": int(get_path(obj, t.scale.spec_replicas) or 0)},
            "status": {"replicas": int(get_path(obj, t.scale.status_replicas) or 0)},
        }
        if t.namespaced:
            scale["metadata"]["namespace"] = meta.get("namespace", "")
        if t.scale.label_selector:
            selector = get_path(obj, t.scale.label_selector)
            if isinstance(selector, Mapping):
                selector = ",".join(
                    f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items()))
            if selector:
                scale["status"]["selector"] = selector
        return scale

    def update_scale(
        self, t: ResourceType, namespace: str, name: str, scale: Any,
        *, content_type: str | None = None, dry_run: bool = False,
    ) -> dict[str, Any]:
        assert t.scale is not None
        current_scale = self.get_scale(t, namespace, name)
        if content_type is not None:
            try:
                if content_type == JSON_PATCH:
                    scale = patching.apply_json_patch(current_scale, scale)
                elif content_type in (MERGE_PATCH, STRATEGIC_PATCH, APPLY_PATCH):
                    scale = patching.apply_merge_patch(current_scale, scale)
                else:
                    raise unsupported_media_type([JSON_PATCH, MERGE_PATCH, APPLY_PATCH])
            except patching.PatchError as e:
                raise bad_request(str(e)) from None
        if not isinstance(scale, dict) or not isinstance(scale.get("spec"), dict):
            raise bad_request("Scale body must be an object with spec.replicas")
        meta = scale.get("metadata")
        if meta is not None and not isinstance(meta, dict):
            raise bad_request(f"json: cannot unmarshal {_json_type(meta)} into Go struct field "
                              "Scale.metadata of type v1.ObjectMeta")
        if not isinstance((meta or {}).get("resourceVersion") or "", str):
            raise bad_request(f"json: cannot unmarshal {_json_type(meta['resourceVersion'])} "
                              "into Go struct field ObjectMeta.metadata.resourceVersion of "
                              "type string")
        replicas = scale["spec"].get("replicas", 0)
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise invalid("Scale", "autoscaling", name, [(
                "FieldValueInvalid", "spec.replicas",
                f"Invalid value: {replicas}: must be greater than or equal to 0")])
        obj = self.get(t, namespace, name)
        rv = (scale.get("metadata") or {}).get("resourceVersion")
        if rv:
            obj["metadata"]["resourceVersion"] = rv
        else:
            obj["metadata"].pop("resourceVersion", None)
        set_path(obj, t.scale.spec_replicas, replicas)
        updated = self.update(t, namespace, name, obj, dry_run=dry_run)
        return self._scale_of(t, updated)

    def bind(self, namespace: str, name: str, binding: Any) -> dict[str, Any]:
        pods = self._type(PODS_KEY)
        if not isinstance(binding, dict):
            raise bad_request("Binding body must be an object")
        target = binding.get("target") or {}
        node = target.get("name")
        if not node:
            raise invalid("Binding", "", name, [("FieldValueRequired", "target.name",
                                                  "Required value")])
        stored = self.store.get(PODS_KEY, namespace, name)
        if stored is None:
            raise not_found("pods", "", name)
        pod = copy.deepcopy(stored)
        if pod["metadata"].get("deletionTimestamp"):
            raise conflict("pods/binding", "", name, f"pod {name} is being deleted, cannot be "
                           "assigned to a host")
        if (pod.get("spec") or {}).get("nodeName"):
            raise conflict(
                "pods/binding", "", name,
                f'pod {name} is already assigned to node "{pod["spec"]["nodeName"]}"')
        pod.setdefault("spec", {})["nodeName"] = node
        conditions = pod.setdefault("status", {}).setdefault("conditions", [])
        conditions[:] = [c for c in conditions if c.get("type") != "PodScheduled"]
        conditions.append({"type": "PodScheduled", "status": "True",
                           "lastTransitionTime": rfc3339(self.clock()),
                           "lastProbeTime": None})
        stored = self.store.update(PODS_KEY, pod)
        self._after_write(pods, stored, None)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "code": 201}

    def request_token(self, namespace: str, name: str, body: Any) -> dict[str, Any]:
        sa = self.store.get(SERVICEACCOUNTS_KEY, namespace, name)
        if sa is None:
            raise not_found("serviceaccounts", "", name)
        spec = (body or {}).get("spec") or {} if isinstance(body, dict) else {}
        seconds = spec.get("expirationSeconds") or 3600
        if not isinstance(seconds, int) or seconds < 600:
            raise invalid("TokenRequest", "authentication.k8s.io", name, [(
                "FieldValueInvalid", "spec.expirationSeconds",
                f"Invalid value: {seconds}: may not specify a duration less than 10 minutes")])
        now = self.clock()
        token, expires = self.authenticator.issue(namespace, name, sa["metadata"]["uid"], now,
                                                  seconds)
        return {
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": name, "namespace": namespace,
                         "creationTimestamp": rfc3339(now)},
            "spec": {"audiences": spec.get("audiences") or ["https://kubernetes.default.svc"],
                     "expirationSeconds": seconds, "boundObjectRef": spec.get("boundObjectRef")},
            "status": {"token": token, "expirationTimestamp": rfc3339(expires)},
        }

    def service_account_uid(self, namespace: str, name: str) -> str | None:
        sa = self.store.get(SERVICEACCOUNTS_KEY, namespace, name)
        return sa["metadata"]["uid"] if sa else None

    # -- hooks (small built-in controllers run inline) ---------------------------------
    def _after_write(
        self, t: ResourceType, obj: Mapping[str, Any], old: Mapping[str, Any] | None
    ) -> None:
        if t.key == NAMESPACES_KEY and old is None:
            name = obj["metadata"]["name"]
            if self.store.get(SERVICEACCOUNTS_KEY, name, "default") is None:
                self.create(self._type(SERVICEACCOUNTS_KEY), name, {
                    "apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": {"name": "default"}})
        elif t.key == CRD_KEY:
            self.register_crd(obj)

    def _after_delete(self, t: ResourceType, obj: Mapping[str, Any]) -> None:
        if t.key == SERVICEACCOUNTS_KEY:
            self.authenticator.revoke_service_account(
                obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        elif t.key == CRD_KEY:
            self.unregister_crd(obj)

    def register_crd(self, crd: Mapping[str, Any]) -> None:
        if crd["metadata"].get("deletionTimestamp"):
            return
        self.registry.set_custom(crd["metadata"]["name"],
                                 resource_types_from_crd(crd, schemas.Schema))

    def unregister_crd(self, crd: Mapping[str, Any]) -> None:
        """Stop serving a deleted CRD's resource; its open watches end (clients relist: 404)."""
        self.registry.remove_custom(crd["metadata"]["name"])
        spec = crd.get("spec") or {}
        self.store.close_watches((spec.get("group", ""), (spec.get("names") or {}).get(
            "plural", "")))


def _pruned_paths(original: Any, pruned: Any, prefix: str) -> list[str]:
    """Paths present in `original` but dropped by pruning (unknown fields)."""
    if not isinstance(original, Mapping):
        return []
    if not isinstance(pruned, Mapping):
        return []
    out: list[str] = []
    for key, value in original.items():
        path = f"{prefix}.{key}" if prefix else key
        if key not in pruned:
            out.append(path)
        elif isinstance(value, Mapping):
            out.extend(_pruned_paths(value, pruned[key], path))
        elif isinstance(value, list) and isinstance(pruned[key], list):
            for i, (a, b) in enumerate(zip(value, pruned[key], strict=False)):
                out.extend(_pruned_paths(a, b, f"{path}[{i}]"))
    return out


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _mentions_resource_version(patch_body: Any) -> bool:
    if isinstance(patch_body, Mapping):
        meta = patch_body.get("metadata")
        return isinstance(meta, Mapping) and bool(meta.get("resourceVersion"))
    if isinstance(patch_body, list):
        return any(
            isinstance(op, Mapping) and str(op.get("path", "")).startswith(
                "/metadata/resourceVersion") and op.get("op") in ("replace", "add", "test")
            for op in patch_body
        )
    return False


def _json_type(value: Any) -> str:
    """The JSON type of a decoded value, in Go's error wording."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else type(value).__name__
