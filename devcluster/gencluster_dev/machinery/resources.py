"""The resource registry: which kinds the API serves, under which group, version and plural.

The single source of truth for built-in resources (discovery, routing, Status messages and
patch strategies all read it) plus the resources each registered CustomResourceDefinition
serves, derived from the CRD object by `resource_types_from_crd`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

STANDARD_VERBS: tuple[str, ...] = (
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
)
SUBRESOURCE_VERBS: dict[str, tuple[str, ...]] = {
    "status": ("get", "patch", "update"),
    "scale": ("get", "patch", "update"),
    "log": ("get",),
    "binding": ("create",),
    "token": ("create",),
    "exec": ("create", "get"),
    "portforward": ("create", "get"),
    "proxy": ("create", "delete", "get", "patch", "update"),
}
SUBRESOURCE_KINDS: dict[str, tuple[str, str, str]] = {
    # subresource -> (group, version, kind) of its body when it differs from the parent
    "scale": ("autoscaling", "v1", "Scale"),
    "binding": ("", "v1", "Binding"),
    "token": ("authentication.k8s.io", "v1", "TokenRequest"),
    "exec": ("", "v1", "PodExecOptions"),
    "portforward": ("", "v1", "PodPortForwardOptions"),
    "proxy": ("", "v1", "PodProxyOptions"),
}


@dataclass(frozen=True)
class ScalePaths:
    """Where a resource keeps the replica counts the `/scale` subresource exposes."""

    spec_replicas: str = ".spec.replicas"
    status_replicas: str = ".status.replicas"
    label_selector: str | None = None


ResourceKey = tuple[str, str]  # (group, plural): storage identity, shared by all versions


@dataclass(frozen=True)
class ResourceType:
    """One resource as served at one group/version."""

    group: str
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = STANDARD_VERBS
    subresources: tuple[str, ...] = ()
    scale: ScalePaths | None = None
    builtin: bool = True
    storage_version: str = ""
    schema: Any = None  # schema.Schema of a CRD version, or None
    printer_columns: tuple[Mapping[str, Any], ...] | None = None
    raw_openapi_schema: Mapping[str, Any] | None = field(default=None, compare=False)
    shared_storage: ResourceKey | None = None  # stored with another group's objects

    @property
    def key(self) -> ResourceKey:
        return self.shared_storage or (self.group, self.plural)

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    @property
    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


def _builtin(
    group: str,
    version: str,
    kind: str,
    plural: str,
    *,
    namespaced: bool = True,
    short_names: Iterable[str] = (),
    categories: Iterable[str] = (),
    subresources: Iterable[str] = (),
    verbs: Iterable[str] = STANDARD_VERBS,
    scale: ScalePaths | None = None,
) -> ResourceType:
    return ResourceType(
        group=group,
        version=version,
        kind=kind,
        plural=plural,
        singular=kind.lower(),
        namespaced=namespaced,
        short_names=tuple(short_names),
        categories=tuple(categories),
        verbs=tuple(verbs),
        subresources=tuple(subresources),
        scale=scale,
        storage_version=version,
    )


BUILTINS: tuple[ResourceType, ...] = (
    _builtin("", "v1", "Namespace", "namespaces", namespaced=False, short_names=["ns"],
             subresources=["status"],
             verbs=("create", "delete", "get", "list", "patch", "update", "watch")),
    _builtin("", "v1", "Node", "nodes", namespaced=False, short_names=["no"],
             subresources=["status"]),
    _builtin("", "v1", "Pod", "pods", short_names=["po"], categories=["all"],
             subresources=["status", "log", "binding", "exec", "portforward", "proxy"]),
    _builtin("", "v1", "Service", "services", short_names=["svc"], categories=["all"],
             subresources=["status"],
             verbs=("create", "delete", "deletecollection", "get", "list", "patch", "update",
                    "watch")),
    _builtin("", "v1", "Endpoints", "endpoints", short_names=["ep"]),
    _builtin("", "v1", "ConfigMap", "configmaps", short_names=["cm"]),
    _builtin("", "v1", "Secret", "secrets"),
    _builtin("", "v1", "ServiceAccount", "serviceaccounts", short_names=["sa"],
             subresources=["token"]),
    _builtin("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", short_names=["pvc"],
             subresources=["status"]),
    _builtin("", "v1", "PersistentVolume", "persistentvolumes", namespaced=False,
             short_names=["pv"], subresources=["status"]),
    _builtin("", "v1", "Event", "events", short_names=["ev"]),
    replace(_builtin("events.k8s.io", "v1", "Event", "events", short_names=["ev"]),
            shared_storage=("", "events")),
    _builtin("coordination.k8s.io", "v1", "Lease", "leases"),
    _builtin("rbac.authorization.k8s.io", "v1", "Role", "roles"),
    _builtin("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings"),
    _builtin("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles",
             namespaced=False),
    _builtin("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings",
             namespaced=False),
    _builtin("authorization.k8s.io", "v1", "SelfSubjectAccessReview",
             "selfsubjectaccessreviews", namespaced=False, verbs=("create",)),
    _builtin("authorization.k8s.io", "v1", "SelfSubjectRulesReview", "selfsubjectrulesreviews",
             namespaced=False, verbs=("create",)),
    _builtin("authorization.k8s.io", "v1", "SubjectAccessReview", "subjectaccessreviews",
             namespaced=False, verbs=("create",)),
    _builtin("authorization.k8s.io", "v1", "LocalSubjectAccessReview",
             "localsubjectaccessreviews", verbs=("create",)),
    _builtin("storage.k8s.io", "v1", "StorageClass", "storageclasses", namespaced=False,
             short_names=["sc"]),
    _builtin("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies",
             short_names=["netpol"]),
    _builtin("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets",
             short_names=["pdb"], subresources=["status"]),
    _builtin("apps", "v1", "Deployment", "deployments", short_names=["deploy"],
             categories=["all"], subresources=["status", "scale"],
             scale=ScalePaths(".spec.replicas", ".status.replicas", ".status.selector")),
    _builtin("apps", "v1", "ReplicaSet", "replicasets", short_names=["rs"],
             categories=["all"], subresources=["status", "scale"],
             scale=ScalePaths(".spec.replicas", ".status.replicas", ".status.selector")),
    _builtin("apps", "v1", "StatefulSet", "statefulsets", short_names=["sts"],
             categories=["all"], subresources=["status", "scale"],
             scale=ScalePaths(".spec.replicas", ".status.replicas", ".status.selector")),
    _builtin("apps", "v1", "ControllerRevision", "controllerrevisions"),
    _builtin("apps", "v1", "DaemonSet", "daemonsets", short_names=["ds"],
             categories=["all"], subresources=["status"]),
    _builtin("batch", "v1", "Job", "jobs", categories=["all"], subresources=["status"]),
    _builtin("apiextensions.k8s.io", "v1", "CustomResourceDefinition",
             "customresourcedefinitions", namespaced=False, short_names=["crd", "crds"],
             categories=["api-extensions"], subresources=["status"]),
)

# Group preference order in discovery (the order kube-apiserver lists them, roughly).
GROUP_ORDER: tuple[str, ...] = (
    "",
    "apps",
    "events.k8s.io",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "autoscaling",
    "batch",
    "networking.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "storage.k8s.io",
    "coordination.k8s.io",
    "apiextensions.k8s.io",
)
CRD_KEY: ResourceKey = ("apiextensions.k8s.io", "customresourcedefinitions")
NAMESPACES_KEY: ResourceKey = ("", "namespaces")
PODS_KEY: ResourceKey = ("", "pods")
SERVICES_KEY: ResourceKey = ("", "services")
NETWORK_POLICIES_KEY: ResourceKey = ("networking.k8s.io", "networkpolicies")
SERVICEACCOUNTS_KEY: ResourceKey = ("", "serviceaccounts")
CLAIMS_KEY: ResourceKey = ("", "persistentvolumeclaims")
VOLUMES_KEY: ResourceKey = ("", "persistentvolumes")
STORAGE_CLASSES_KEY: ResourceKey = ("storage.k8s.io", "storageclasses")


def resource_types_from_crd(crd: Mapping[str, Any], schema_factory: Any) -> list[ResourceType]:
    """The resource types a CRD serves, one per served version.

    `schema_factory(openAPIV3Schema)` builds the validator (injected so this module stays
    independent of the schema engine); it may raise ValueError for an unusable schema.
    """
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group = spec.get("group", "")
    versions = spec.get("versions") or []
    storage = next((v["name"] for v in versions if v.get("storage")), "")
    types: list[ResourceType] = []
    for version in versions:
        if not version.get("served", True):
            continue
        subresources_spec = version.get("subresources") or {}
        subresources: list[str] = []
        scale: ScalePaths | None = None
        if "status" in subresources_spec:
            subresources.append("status")
        if "scale" in subresources_spec:
            subresources.append("scale")
            s = subresources_spec["scale"] or {}
            scale = ScalePaths(
                s.get("specReplicasPath", ".spec.replicas"),
                s.get("statusReplicasPath", ".status.replicas"),
                s.get("labelSelectorPath"),
            )
        openapi = (version.get("schema") or {}).get("openAPIV3Schema")
        schema = schema_factory(openapi) if openapi is not None else None
        columns = version.get("additionalPrinterColumns")
        types.append(
            ResourceType(
                group=group,
                version=version["name"],
                kind=names.get("kind", ""),
                plural=names.get("plural", ""),
                singular=names.get("singular") or names.get("kind", "").lower(),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                subresources=tuple(subresources),
                scale=scale,
                builtin=False,
                storage_version=storage,
                schema=schema,
                printer_columns=tuple(columns) if columns is not None else None,
                raw_openapi_schema=openapi,
            )
        )
    return types


class Registry:
    """Lookup of served resource types, built-ins plus those of established CRDs."""

    def __init__(self, builtins: Iterable[ResourceType] = BUILTINS) -> None:
        self._builtins = list(builtins)
        self._custom: dict[str, list[ResourceType]] = {}  # CRD name -> its types
        self._rebuild()

    def _rebuild(self) -> None:
        self._all = self._builtins + [t for ts in self._custom.values() for t in ts]
        self._by_path = {(t.group, t.version, t.plural): t for t in self._all}

    def set_custom(self, crd_name: str, types: list[ResourceType]) -> None:
        self._custom[crd_name] = types
        self._rebuild()

    def remove_custom(self, crd_name: str) -> None:
        self._custom.pop(crd_name, None)
        self._rebuild()

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._by_path.get((group, version, plural))

    def all(self) -> list[ResourceType]:
        return list(self._all)

    def versions_of(self, group: str) -> list[str]:
        """Served versions of a group, preferred first (the storage version of CRDs first)."""
        seen: list[str] = []
        for t in self._all:
            if t.group == group and t.version not in seen:
                seen.append(t.version)
        preferred = next(
            (t.storage_version for t in self._all if t.group == group and t.storage_version
             in seen),
            None,
        )
        if preferred:
            seen.remove(preferred)
            seen.insert(0, preferred)
        return seen

    def groups(self) -> list[str]:
        """Served groups in discovery order (built-in order, then CRD groups by name)."""
        present = {t.group for t in self._all}
        ordered = [g for g in GROUP_ORDER if g in present]
        return ordered + sorted(present - set(ordered))

    def for_key(self, key: ResourceKey) -> ResourceType | None:
        """The storage-version type of a stored resource."""
        candidates = [t for t in self._all if t.key == key]
        candidates.sort(key=lambda t: t.shared_storage is not None)  # the owning group first
        for t in candidates:
            if t.version == t.storage_version:
                return t
        return candidates[0] if candidates else None

    def by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        group, _, version = api_version.rpartition("/")
        for t in self._all:
            if t.group == group and t.version == version and t.kind == kind:
                return t
        return None
