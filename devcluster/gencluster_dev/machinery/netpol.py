"""What NetworkPolicies (networking.k8s.io/v1) allow, as pure functions of the cached objects.

The enforcer (`network/netpol.py`) compiles `ingress_plan` into nftables rules; `allows` answers
one question (may this source pod reach this pod on this port?) with the same semantics, so the
unit tests can check the compiled plan against the direct evaluation. Semantics follow the
Kubernetes API reference and what CNIs implement:

- a pod is *isolated for ingress* when at least one policy of its namespace selects it
  (`spec.podSelector`, `{}` = every pod) and lists `Ingress` in its `policyTypes` (defaulted to
  `["Ingress"]`, plus `"Egress"` when `spec.egress` is set); a pod no policy isolates accepts
  everything (default allow);
- an isolated pod accepts a connection when *any* ingress rule of *any* policy selecting it
  allows it (a union: policies only add allowances, order never matters);
- a rule allows a source when its `from` is empty/absent (every source) or one of its peers
  matches: `podSelector` alone (pods of the policy's namespace), `namespaceSelector` alone
  (every pod of the matching namespaces), both (those pods in those namespaces), `ipBlock`
  (sources whose address is in `cidr` and in no `except`), and a port when its `ports` is
  empty/absent or one entry matches (`protocol` default TCP, `port` a number or a name of the
  destination pod's container ports, `endPort` a range; no `port`: every port of the protocol);
- a pod may always reach itself, and traffic that does not come from a pod (the node: the
  kubelet's probes, the Service proxy, processes run on the host) is never matched here: the
  enforcer leaves it alone (docs/devcluster.md, "NetworkPolicy").

Egress mirrors ingress (`egress_plan`, `allows_egress`): a pod that a policy with `Egress` in
its `policyTypes` selects may open connections only where some egress rule allows (`to` peers
by selectors or `ipBlock`, matched against any address, the API server's included; `ports`),
besides itself.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gencluster_dev.machinery.pods import resolve_port, service_pods
from gencluster_dev.machinery.selectors import SelectorError, label_selector_from_object

PROTOCOLS = ("TCP", "UDP", "SCTP")


@dataclass(frozen=True)
class PodEndpoint:
    """One pod as policies see it: identity, labels, address and the uid its processes run as
    (None when the control plane runs without root: such a pod cannot be told apart)."""

    namespace: str
    name: str
    labels: Mapping[str, str]
    ip: str
    run_as: int | None
    pod: Mapping[str, Any]


@dataclass(frozen=True)
class PortRange:
    """`protocol` and an inclusive range of destination ports; `low` None means every port."""

    protocol: str
    low: int | None = None
    high: int | None = None

    def matches(self, protocol: str, port: int) -> bool:
        if protocol != self.protocol:
            return False
        if self.low is None:
            return True
        return self.low <= port <= (self.high if self.high is not None else self.low)


@dataclass(frozen=True)
class Allowance:
    """Sources that may reach a pod on some ports. `sources` None: every source; otherwise the
    uids of the allowed pods (possibly none). `ports` None: every port."""

    sources: frozenset[int] | None
    ports: tuple[PortRange, ...] | None


@dataclass(frozen=True)
class IsolatedPod:
    """A pod some policy isolates for ingress, with the union of what its policies allow."""

    endpoint: PodEndpoint
    allowances: tuple[Allowance, ...]


class PolicyError(ValueError):
    """A NetworkPolicy the API server should have refused (a bad selector or cidr)."""


def policy_types(policy: Mapping[str, Any]) -> list[str]:
    """`spec.policyTypes`, defaulted as kube-apiserver defaults it."""
    spec = policy.get("spec") or {}
    declared = spec.get("policyTypes")
    if declared:
        return [str(t) for t in declared]
    return ["Ingress", "Egress"] if spec.get("egress") else ["Ingress"]


def _selector(selector: Any, field: str) -> Any:
    try:
        return label_selector_from_object(selector)
    except SelectorError as exc:
        raise PolicyError(f"{field}: {exc}") from exc


def selects(policy: Mapping[str, Any], pod: PodEndpoint) -> bool:
    """Whether `policy` applies to `pod` (same namespace, `spec.podSelector` matches)."""
    meta = policy.get("metadata") or {}
    if (meta.get("namespace") or "default") != pod.namespace:
        return False
    selector = (policy.get("spec") or {}).get("podSelector")
    return bool(_selector(selector if selector is not None else {}, "spec.podSelector")
                .matches(pod.labels))


def _in_block(ip: str, block: Mapping[str, Any]) -> bool:
    try:
        address = ipaddress.ip_address(ip)
        if address not in ipaddress.ip_network(str(block.get("cidr")), strict=False):
            return False
        return not any(address in ipaddress.ip_network(str(hole), strict=False)
                       for hole in block.get("except") or [])
    except ValueError as exc:
        raise PolicyError(f"ipBlock: {exc}") from exc


def peer_matches(peer: Mapping[str, Any], policy_namespace: str, source: PodEndpoint,
                 namespace_labels: Mapping[str, Mapping[str, str]]) -> bool:
    """One `from` entry against a source pod."""
    if "ipBlock" in peer:
        return _in_block(source.ip, peer["ipBlock"] or {})
    pod_selector = peer.get("podSelector")
    namespace_selector = peer.get("namespaceSelector")
    if pod_selector is None and namespace_selector is None:
        return False
    if namespace_selector is None:
        in_namespace = source.namespace == policy_namespace
    else:
        in_namespace = _selector(namespace_selector, "namespaceSelector").matches(
            namespace_labels.get(source.namespace, {}))
    if not in_namespace:
        return False
    return pod_selector is None or _selector(pod_selector, "podSelector").matches(source.labels)


def port_ranges(rule: Mapping[str, Any], target: PodEndpoint) -> tuple[PortRange, ...] | None:
    """A rule's `ports` as ranges on `target` (named ports resolved against its containers; a
    name it does not declare matches nothing). None: the rule does not restrict ports."""
    ports = rule.get("ports")
    if not ports:
        return None
    out = []
    for entry in ports:
        protocol = str(entry.get("protocol") or "TCP")
        if protocol not in PROTOCOLS:
            raise PolicyError(f"ports.protocol: unsupported value {protocol!r}")
        port = entry.get("port")
        if port is None:
            out.append(PortRange(protocol))
            continue
        number = resolve_port(dict(target.pod), port)
        if number is None:
            continue
        end = entry.get("endPort")
        out.append(PortRange(protocol, number, int(end) if end is not None else number))
    return tuple(out)


def _namespace_of(policy: Mapping[str, Any]) -> str:
    return (policy.get("metadata") or {}).get("namespace") or "default"


def isolating_policies(policies: Iterable[Mapping[str, Any]],
                       pod: PodEndpoint) -> list[Mapping[str, Any]]:
    """The policies that select `pod` and isolate it for ingress."""
    return [p for p in policies if "Ingress" in policy_types(p) and selects(p, pod)]


def allows(policies: Iterable[Mapping[str, Any]], source: PodEndpoint | None,
           target: PodEndpoint, protocol: str, port: int,
           namespace_labels: Mapping[str, Mapping[str, str]]) -> bool:
    """May `source` (None: the node, not a pod) open a connection to `target` on `port`?"""
    chosen = isolating_policies(policies, target)
    if not chosen or source is None or (source.namespace, source.name) == (
            target.namespace, target.name):
        return True
    for policy in chosen:
        namespace = _namespace_of(policy)
        for rule in (policy.get("spec") or {}).get("ingress") or []:
            peers = rule.get("from")
            if peers and not any(peer_matches(peer, namespace, source, namespace_labels)
                                 for peer in peers):
                continue
            ranges = port_ranges(rule, target)
            if ranges is None or any(r.matches(protocol, port) for r in ranges):
                return True
    return False


def ingress_plan(policies: Iterable[Mapping[str, Any]], pods: Iterable[PodEndpoint],
                 namespace_labels: Mapping[str, Mapping[str, str]]) -> list[IsolatedPod]:
    """Every isolated pod with its allowances, sources resolved to the uids of the live pods.

    A rule's `from` becomes the uids of the pods its peers match right now; pods created later
    are covered on the next evaluation (the enforcer re-plans on every pod change)."""
    policy_list = list(policies)
    pod_list = list(pods)
    out = []
    for target in sorted(pod_list, key=lambda p: (p.namespace, p.name)):
        chosen = isolating_policies(policy_list, target)
        if not chosen:
            continue
        allowances = []
        for policy in chosen:
            namespace = _namespace_of(policy)
            for rule in (policy.get("spec") or {}).get("ingress") or []:
                peers = rule.get("from")
                sources: frozenset[int] | None = None
                if peers:
                    sources = frozenset(
                        s.run_as for s in pod_list
                        if s.run_as is not None and any(
                            peer_matches(peer, namespace, s, namespace_labels) for peer in peers))
                ranges = port_ranges(rule, target)
                if ranges == () or sources == frozenset():
                    continue  # named ports it does not declare, or no live source: nothing
                allowances.append(Allowance(sources, ranges))
        out.append(IsolatedPod(target, tuple(allowances)))
    return out


def endpoints(pods: Iterable[Mapping[str, Any]],
              run_as: Mapping[str, int | None]) -> list[PodEndpoint]:
    """Pods that take part in policy: with an IP, not finished. `run_as` maps a pod's
    metadata.uid to the uid its processes run as (the kubelet's state.json)."""
    out = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        status = pod.get("status") or {}
        if not status.get("podIP") or status.get("phase") in ("Succeeded", "Failed"):
            continue
        out.append(PodEndpoint(
            namespace=meta.get("namespace") or "default", name=meta.get("name", ""),
            labels=dict(meta.get("labels") or {}), ip=str(status["podIP"]),
            run_as=run_as.get(str(meta.get("uid"))), pod=pod,
        ))
    return out


def policy_problem(policy: Mapping[str, Any]) -> str | None:
    """Why a stored policy cannot be evaluated (a bad selector, cidr or protocol), else None.
    The enforcer skips such a policy (and says so) rather than guess what it meant."""
    spec = policy.get("spec") or {}
    try:
        _selector(spec.get("podSelector") or {}, "spec.podSelector")
        rules = [(f"spec.ingress[{i}]", r, "from") for i, r in enumerate(spec.get("ingress") or [])]
        rules += [(f"spec.egress[{i}]", r, "to") for i, r in enumerate(spec.get("egress") or [])]
        for where, rule, peers in rules:
            for peer in rule.get(peers) or []:
                if "ipBlock" in peer:
                    block = peer["ipBlock"] or {}
                    for cidr in [block.get("cidr"), *(block.get("except") or [])]:
                        ipaddress.ip_network(str(cidr), strict=False)
                for key in ("podSelector", "namespaceSelector"):
                    if peer.get(key) is not None:
                        _selector(peer[key], f"{where}.{peers}.{key}")
            for entry in rule.get("ports") or []:
                protocol = str(entry.get("protocol") or "TCP")
                if protocol not in PROTOCOLS:
                    raise PolicyError(f"{where}.ports.protocol: unsupported value {protocol!r}")
                if entry.get("endPort") is not None:
                    int(entry["endPort"])
    except (PolicyError, ValueError, TypeError) as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class ServiceGate:
    """Who may open connections to one Service port: the user-space Service proxy forwards as
    the node, so without this a pod would reach isolated pods through their Service IP (where
    kube-proxy, keeping the client's address, lets the backend's policy decide)."""

    namespace: str
    name: str
    ip: str
    protocol: str
    port: int
    sources: frozenset[int]


def service_gates(services: Iterable[Mapping[str, Any]], plan: Iterable[IsolatedPod],
                  pods: Iterable[PodEndpoint]) -> list[ServiceGate]:
    """For each Service port whose backends are all isolated, the pod uids every backend
    admits on its target port (the intersection: the proxy picks a backend per connection,
    so a source must be admitted by whichever it gets). A port with a backend that admits
    every source, or no backend at all, gets no gate."""
    isolated = {(p.endpoint.namespace, p.endpoint.name): p for p in plan}
    pod_list = list(pods)
    by_key = {(p.namespace, p.name): p for p in pod_list}
    out = []
    for service in services:
        meta, spec = service.get("metadata") or {}, service.get("spec") or {}
        cluster_ip = spec.get("clusterIP")
        if not cluster_ip or cluster_ip == "None" or not spec.get("selector"):
            continue
        backends = [by_key[key] for key in (
            ((p.get("metadata") or {}).get("namespace") or "default",
             (p.get("metadata") or {}).get("name", ""))
            for p in service_pods(dict(service), [dict(e.pod) for e in pod_list]))
            if key in by_key]
        for port in spec.get("ports") or []:
            protocol = str(port.get("protocol") or "TCP")
            target = port.get("targetPort", port.get("port"))
            sources: frozenset[int] | None = None
            for backend in backends:
                chosen = isolated.get((backend.namespace, backend.name))
                number = resolve_port(dict(backend.pod), target)
                if chosen is None or number is None:
                    sources = None
                    break
                admitted: set[int] | None = set()
                for allowance in chosen.allowances:
                    if allowance.ports is not None and not any(
                            r.matches(protocol, number) for r in allowance.ports):
                        continue
                    if allowance.sources is None:
                        admitted = None
                        break
                    assert admitted is not None
                    admitted |= allowance.sources
                if admitted is None:
                    sources = None
                    break
                sources = frozenset(admitted) if sources is None else sources & admitted
            else:
                if backends and sources is not None:
                    out.append(ServiceGate(meta.get("namespace") or "default",
                                           meta.get("name", ""), str(cluster_ip), protocol,
                                           int(port["port"]), sources))
    return out


# -- egress ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Destination:
    """An address block a pod may send to: `cidr` (a /32 for a pod) minus `excepts`."""

    cidr: str
    excepts: tuple[str, ...] = ()

    def contains(self, ip: str) -> bool:
        address = ipaddress.ip_address(ip)
        return address in ipaddress.ip_network(self.cidr, strict=False) and not any(
            address in ipaddress.ip_network(hole, strict=False) for hole in self.excepts)


@dataclass(frozen=True)
class EgressAllowance:
    """Destinations a pod may open connections to; `destinations` None: anywhere; `ports`
    None: every port."""

    destinations: tuple[Destination, ...] | None
    ports: tuple[PortRange, ...] | None

    def matches(self, ip: str, protocol: str, port: int) -> bool:
        return ((self.destinations is None or any(d.contains(ip) for d in self.destinations))
                and (self.ports is None or any(r.matches(protocol, port) for r in self.ports)))


@dataclass(frozen=True)
class EgressIsolatedPod:
    """A pod some policy isolates for egress, with the union of what its policies allow."""

    endpoint: PodEndpoint
    allowances: tuple[EgressAllowance, ...]

    def allows(self, ip: str, protocol: str, port: int) -> bool:
        return ip == self.endpoint.ip or any(a.matches(ip, protocol, port)
                                             for a in self.allowances)


def _egress_peer_pods(peer: Mapping[str, Any], namespace: str, pods: list[PodEndpoint],
                      namespace_labels: Mapping[str, Mapping[str, str]]) -> list[PodEndpoint]:
    return [p for p in pods if peer_matches(peer, namespace, p, namespace_labels)]


def _rule_allowances(rule: Mapping[str, Any], namespace: str, pods: list[PodEndpoint],
                     namespace_labels: Mapping[str, Mapping[str, str]]) -> list[EgressAllowance]:
    """One egress rule as allowances: numeric ports (or none) towards every destination the
    peers name (ipBlocks as blocks, selected pods by their IP); a named port per selected pod,
    resolved against that pod's containers (an ipBlock selects the pods whose IP it holds)."""
    peers = rule.get("to") or []
    entries = rule.get("ports") or []
    named = [e for e in entries if isinstance(e.get("port"), str) and not e["port"].isdigit()]
    numeric = [e for e in entries if e not in named]
    out = []
    destinations: tuple[Destination, ...] | None = None
    if peers:
        found: list[Destination] = []
        for peer in peers:
            if "ipBlock" in peer:
                block = peer["ipBlock"] or {}
                found.append(Destination(str(block.get("cidr")),
                                         tuple(str(h) for h in block.get("except") or [])))
            else:
                found += [Destination(f"{p.ip}/32")
                          for p in _egress_peer_pods(peer, namespace, pods, namespace_labels)]
        destinations = tuple(found)
    if numeric or not entries:
        ports = None if not entries else tuple(
            PortRange(str(e.get("protocol") or "TCP")) if e.get("port") is None else
            PortRange(str(e.get("protocol") or "TCP"), int(e["port"]),
                      int(e.get("endPort") or e["port"])) for e in numeric)
        if destinations != ():
            out.append(EgressAllowance(destinations, ports))
    for pod in pods:
        if destinations is not None and not any(d.contains(pod.ip) for d in destinations):
            continue
        resolved = []
        for entry in named:
            number = resolve_port(dict(pod.pod), entry["port"])
            if number is not None:
                resolved.append(PortRange(str(entry.get("protocol") or "TCP"), number, number))
        if resolved:
            out.append(EgressAllowance((Destination(f"{pod.ip}/32"),), tuple(resolved)))
    return out


def egress_plan(policies: Iterable[Mapping[str, Any]], pods: Iterable[PodEndpoint],
                namespace_labels: Mapping[str, Mapping[str, str]]) -> list[EgressIsolatedPod]:
    """Every pod isolated for egress (a policy selecting it lists `Egress` in `policyTypes`)
    with the union of its policies' egress rules. Destinations that are pods resolve to their
    current IPs; the enforcer re-plans on every pod change."""
    policy_list = list(policies)
    pod_list = list(pods)
    out = []
    for source in sorted(pod_list, key=lambda p: (p.namespace, p.name)):
        chosen = [p for p in policy_list if "Egress" in policy_types(p) and selects(p, source)]
        if not chosen:
            continue
        allowances: list[EgressAllowance] = []
        for policy in chosen:
            for rule in (policy.get("spec") or {}).get("egress") or []:
                allowances += _rule_allowances(rule, _namespace_of(policy), pod_list,
                                               namespace_labels)
        out.append(EgressIsolatedPod(source, tuple(allowances)))
    return out


def egress_service_targets(services: Iterable[Mapping[str, Any]], isolated: EgressIsolatedPod,
                           pods: Iterable[PodEndpoint]) -> list[tuple[str, str, int]]:
    """(Service IP, protocol, port) an egress-isolated pod may connect to: those whose every
    backend its policies let it reach on the target port (kube-proxy translates the Service
    address before the policy looks at the one backend it picked; the user-space proxy picks
    after the connection is made, so only a port every backend admits is opened: stricter
    than kube-proxy when the backends differ, never looser)."""
    pod_list = [dict(p.pod) for p in pods]
    out = []
    for service in services:
        spec = service.get("spec") or {}
        cluster_ip = spec.get("clusterIP")
        if not cluster_ip or cluster_ip == "None" or not spec.get("selector"):
            continue
        backends = [b for b in service_pods(dict(service), pod_list)
                    if (b.get("status") or {}).get("podIP")]
        for port in spec.get("ports") or []:
            protocol = str(port.get("protocol") or "TCP")
            target = port.get("targetPort", port.get("port"))
            numbers = [resolve_port(backend, target) for backend in backends]
            if backends and all(
                    number is not None and isolated.allows(backend["status"]["podIP"],
                                                           protocol, number)
                    for backend, number in zip(backends, numbers, strict=True)):
                out.append((str(cluster_ip), protocol, int(port["port"])))
    return out


def allows_egress(policies: Iterable[Mapping[str, Any]], source: PodEndpoint, ip: str,
                  target: PodEndpoint | None, protocol: str, port: int,
                  namespace_labels: Mapping[str, Mapping[str, str]]) -> bool:
    """May `source` open a connection to `ip` (the pod `target`, or None: not a pod) on
    `port`, as far as egress is concerned? The direct reading of the API reference, which the
    unit tests compare with `egress_plan`."""
    chosen = [p for p in policies if "Egress" in policy_types(p) and selects(p, source)]
    if not chosen or ip == source.ip:
        return True
    for policy in chosen:
        namespace = _namespace_of(policy)
        for rule in (policy.get("spec") or {}).get("egress") or []:
            peers = rule.get("to")
            if peers and not any(
                    _in_block(ip, peer["ipBlock"] or {}) if "ipBlock" in peer else (
                        target is not None
                        and peer_matches(peer, namespace, target, namespace_labels))
                    for peer in peers):
                continue
            entries = rule.get("ports")
            if not entries:
                return True
            for entry in entries:
                if str(entry.get("protocol") or "TCP") != protocol:
                    continue
                if entry.get("port") is None:
                    return True
                number = resolve_port(dict(target.pod), entry["port"]) if target else (
                    int(entry["port"]) if str(entry["port"]).isdigit() else None)
                if number is not None and number <= port <= int(entry.get("endPort") or number):
                    return True
    return False
