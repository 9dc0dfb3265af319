"""The API server's validating admission shell: ValidatingAdmissionPolicies on every create,
update (and subresource update) and delete made by a client, after the object's own
validation and before it is stored, as kube-apiserver's admission chain runs them.

The decisions are `machinery.admission_policy`'s (pure); this module reads the policies,
bindings and the request's namespace from the store, and knows who is asking
(`authorization.CURRENT`). Writes made by the control plane's own components (no identity)
are not admitted: they are part of the API server here, not clients of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gencluster_dev.apiserver.authorization import CURRENT
from gencluster_dev.machinery import admission_policy as policies
from gencluster_dev.machinery.errors import invalid
from gencluster_dev.machinery.resources import NAMESPACES_KEY, ResourceKey, ResourceType
from gencluster_dev.machinery.store import Store

POLICIES_KEY: ResourceKey = (policies.GROUP, policies.POLICIES)
BINDINGS_KEY: ResourceKey = (policies.GROUP, policies.BINDINGS)


def default_and_validate(t: ResourceType, obj: dict[str, Any]) -> None:
    """Defaults and 422 Invalid for the policy objects themselves (a policy whose expressions
    do not compile is refused, as kube-apiserver refuses it)."""
    name = obj["metadata"].get("name", "")
    if t.key == POLICIES_KEY:
        causes = policies.policy_causes(obj)
        if causes:
            raise invalid(t.kind, t.group, name, causes)
        policies.default_policy(obj)
    elif t.key == BINDINGS_KEY:
        causes = policies.binding_causes(obj)
        if causes:
            raise invalid(t.kind, t.group, name, causes)
        policies.default_binding(obj)


def applies(store: Store, t: ResourceType) -> bool:
    """Whether admission has anything to do for a write of `t` now (a client is asking, `t`
    is not a policy object, some binding exists): the caller skips building the objects
    otherwise."""
    return (CURRENT.get() is not None and t.group != policies.GROUP
            and bool(store.list(BINDINGS_KEY)))


def validate(store: Store, t: ResourceType, operation: str, namespace: str, name: str,
             obj: Mapping[str, Any] | None, old: Mapping[str, Any] | None, *,
             subresource: str | None = None, dry_run: bool = False) -> list[str]:
    """Run every bound policy over the request; raise its denial, else return the warnings
    (`validationActions: [Warn]`) for the response's Warning headers.

    The policy objects themselves are never subject to policies (kube-apiserver exempts
    admissionregistration resources, so that a bad policy cannot lock itself in)."""
    identity = CURRENT.get()
    if identity is None or t.group == policies.GROUP:
        return []
    bindings = store.list(BINDINGS_KEY)
    if not bindings:
        return []
    namespace_object = store.get(NAMESPACES_KEY, "", namespace) if namespace else None
    request = policies.Attributes(
        operation=operation, group=t.group, version=t.version, resource=t.plural,
        kind=t.kind, namespace=namespace if t.namespaced else "", name=name,
        user=policies.UserInfo(identity.username, tuple(identity.groups), identity.uid),
        subresource=subresource or "", object=obj, old_object=old,
        namespace_object=namespace_object, dry_run=dry_run)
    outcome = policies.admit(store.list(POLICIES_KEY), bindings, request)
    if outcome.denial is not None:
        raise outcome.denial
    return outcome.warnings
