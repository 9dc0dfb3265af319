"""Cluster names to DNS records: the pure half of the cluster DNS server.

It answers as CoreDNS's `kubernetes` plugin does with kind's configuration (`kubernetes
cluster.local in-addr.arpa ip6.arpa { pods insecure; fallthrough in-addr.arpa ip6.arpa; ttl 30 }`,
following the Kubernetes DNS specification, schema 1.1.0):

- `SVC.NS.svc.ZONE`: the Service's cluster IP; for a headless Service, the ready addresses of
  its Endpoints; for an ExternalName Service, a CNAME to the external name;
- `HOST.SVC.NS.svc.ZONE`: one endpoint of a headless Service, HOST being the address's
  `hostname` (StatefulSet pods) or its IP with dashes;
- `_PORT._PROTO.SVC.NS.svc.ZONE` SRV (and SRV of `SVC.NS.svc.ZONE`): the named ports;
- `A-B-C-D.NS.pod.ZONE`: the address A.B.C.D, in any existing namespace, without checking a pod
  has it ("pods insecure", kind's and kubeadm's default);
- PTR of a cluster IP or of an endpoint address; other reverse names are not the cluster's
  (the server forwards them, like CoreDNS's fallthrough);
- a name of the zone that does not exist: NXDOMAIN; one that exists without a record of the
  asked type (AAAA of a Service, `NS.svc.ZONE`, `svc.ZONE`): NOERROR with no answer; both with
  the zone's SOA in the authority section, as CoreDNS answers.

The decisions read a `ClusterRecords` snapshot of Namespaces, Services and Endpoints; the I/O
shell (`network.dns`) keeps it current from the API.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from gencluster_dev.network.dnswire import (
    NOERROR,
    NXDOMAIN,
    REFUSED,
    TYPE_A,
    TYPE_AXFR,
    TYPE_CNAME,
    TYPE_IXFR,
    TYPE_NS,
    TYPE_PTR,
    TYPE_SOA,
    TYPE_SRV,
    TYPE_TXT,
    Record,
    Response,
    a_record,
    cname_record,
    ns_record,
    ptr_record,
    soa_record,
    srv_record,
    txt_record,
)

#: The DNS schema version `dns-version.ZONE` TXT reports (the specification's).
SCHEMA_VERSION = "1.1.0"
#: The reverse zones the cluster DNS is asked about before it forwards.
REVERSE_ZONES = ("in-addr.arpa", "ip6.arpa")


@dataclass(frozen=True)
class DnsSettings:
    """The cluster domain, the TTL of every answer, and the server's own address (the zone's
    name server `ns.dns.ZONE`)."""

    zone: str = "cluster.local"
    ttl: int = 30
    server_ip: str = "127.0.0.1"


@dataclass(frozen=True)
class ClusterRecords:
    """What the answers come from: the names of the Namespaces, and the Services and Endpoints
    keyed by (namespace, name)."""

    namespaces: frozenset[str] = frozenset()
    services: Mapping[tuple[str, str], dict] = field(default_factory=dict)
    endpoints: Mapping[tuple[str, str], dict] = field(default_factory=dict)
    serial: int = 0
    """The SOA serial: when the records last changed (seconds)."""


@dataclass(frozen=True)
class _Target:
    """One thing a name stands for: an address (or an external name) and, for SRV, a port."""

    host: str
    """The owner name an SRV record points at (relative to the zone)."""
    address: str | None
    external: str | None = None
    port: int | None = None


def _strip(name: str) -> str:
    return name.rstrip(".").lower()


def in_zone(name: str, zone: str) -> bool:
    """Whether `name` is `zone` or below it (case-insensitive)."""
    name, zone = _strip(name), _strip(zone)
    return name == zone or name.endswith("." + zone)


def is_reverse(name: str) -> bool:
    return any(in_zone(name, zone) for zone in REVERSE_ZONES)


def endpoint_hostname(address: dict) -> str:
    """An endpoint's DNS label: its `hostname`, else its IP with dashes (CoreDNS's rule)."""
    if address.get("hostname"):
        return str(address["hostname"]).lower()
    ip = str(address.get("ip", ""))
    return ip.replace(".", "-") if "." in ip else ip.replace(":", "-")


def _port_matches(wanted: str, wanted_protocol: str, port: dict) -> bool:
    name = str(port.get("name", "")).lower()
    protocol = str(port.get("protocol", "TCP")).lower()
    return (not wanted or wanted == name) and (not wanted_protocol or wanted_protocol == protocol)


def _service_ips(service: dict) -> list[str]:
    spec = service.get("spec") or {}
    ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    return [str(ip) for ip in ips if ip and ip != "None"]


def _endpoint_addresses(endpoints: dict | None) -> list[tuple[dict, list[dict]]]:
    """(ready address, its subset's ports) of an Endpoints object; a subset without ports gets
    one port-less placeholder, so a headless Service without ports still has A records."""
    out = []
    for subset in (endpoints or {}).get("subsets") or []:
        ports = list(subset.get("ports") or []) or [{}]
        out += [(address, ports) for address in subset.get("addresses") or []]
    return out


def _service_targets(records: ClusterRecords, namespace: str, name: str, endpoint: str,
                     port: str, protocol: str) -> list[_Target] | None:
    """What `[endpoint.]name.namespace.svc` (or `_port._protocol.name...`) stands for; None
    when nothing does (NXDOMAIN)."""
    service = records.services.get((namespace, name))
    if service is None:
        return None
    spec = service.get("spec") or {}
    owner = f"{name}.{namespace}.svc"
    if spec.get("type") == "ExternalName":
        external = spec.get("externalName")
        if endpoint or not external:
            return None
        return [_Target(host=owner, address=None, external=str(external).rstrip("."))]
    targets: list[_Target] = []
    if spec.get("clusterIP") == "None" or endpoint:
        for address, ports in _endpoint_addresses(records.endpoints.get((namespace, name))):
            host = endpoint_hostname(address)
            if endpoint and endpoint != host:
                continue
            for entry in ports:
                if entry and not _port_matches(port, protocol, entry):
                    continue
                if not entry and (port or protocol):
                    continue
                number = int(entry["port"]) if entry.get("port") else None
                targets.append(_Target(host=f"{host}.{owner}", address=str(address["ip"]),
                                       port=number))
        return targets or None
    for entry in spec.get("ports") or []:
        if not _port_matches(port, protocol, entry):
            continue
        targets += [_Target(host=owner, address=ip, port=int(entry["port"]))
                    for ip in _service_ips(service)]
    return targets or None


def _pod_targets(label: str) -> list[_Target] | None:
    """`A-B-C-D` of `A-B-C-D.NS.pod.ZONE` ("pods insecure": any well-formed address)."""
    if label.count("-") == 3 and "--" not in label:
        text = label.replace("-", ".")
    else:
        text = label.replace("-", ":")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return [_Target(host=label, address=str(address))]


def lookup(records: ClusterRecords, relative: str) -> list[_Target] | None:
    """What a name of the zone (given relative to it, lowercase) stands for: a list (empty for
    a name that exists without records, NODATA) or None (no such name, NXDOMAIN). The labels
    are read right to left as CoreDNS's `parseRequest` does."""
    if relative in ("", "svc", "pod"):
        return []
    labels = relative.split(".")
    kind = labels.pop()
    if kind not in ("svc", "pod") or not labels:
        return None
    namespace = labels.pop()
    if namespace not in records.namespaces:
        return None
    if not labels:
        return []
    name = labels.pop()
    if kind == "pod":
        return _pod_targets(name) if not labels else None
    if len(labels) == 0:
        return _service_targets(records, namespace, name, "", "", "")
    if len(labels) == 1:
        return _service_targets(records, namespace, name, labels[0], "", "")
    if len(labels) == 2:
        port, protocol = (label.removeprefix("_") for label in labels)
        return _service_targets(records, namespace, name, "", port, protocol)
    return None


def _negative(settings: DnsSettings, records: ClusterRecords, rcode: int) -> Response:
    return Response(rcode=rcode, authoritative=True,
                    authority=(soa_record(settings.zone, serial=records.serial,
                                          ttl=settings.ttl),))


def _absolute(relative: str, settings: DnsSettings) -> str:
    return f"{relative}.{settings.zone}" if relative else settings.zone


def _address_records(qname: str, targets: list[_Target], records: ClusterRecords,
                     settings: DnsSettings, depth: int = 0) -> list[Record]:
    """A records of `qname` for `targets` (one per address), or the CNAME of an ExternalName
    Service followed by the target's own A records when the target is in the zone."""
    out: list[Record] = []
    seen: set[str] = set()
    for target in targets:
        if target.external is not None:
            out.append(cname_record(qname, target.external, settings.ttl))
            if depth < 8 and in_zone(target.external, settings.zone):
                relative = _relative(target.external, settings.zone)
                chased = lookup(records, relative) or []
                out += _address_records(target.external, chased, records, settings, depth + 1)
            continue
        if target.address is None or target.address in seen:
            continue
        if ipaddress.ip_address(target.address).version != 4:
            continue
        seen.add(target.address)
        out.append(a_record(qname, target.address, settings.ttl))
    return out


def _srv_records(qname: str, targets: list[_Target], settings: DnsSettings
                 ) -> tuple[list[Record], list[Record]]:
    """SRV records (priority 0, equal weights summing to about 100, as CoreDNS) and the A
    records of their targets for the additional section."""
    unique: dict[tuple[int, str], _Target] = {}
    for target in targets:
        if target.port is not None and target.address is not None:
            unique.setdefault((target.port, target.host), target)
    if not unique:
        return [], []
    weight = max(1, 100 // len(unique))
    answers, extra = [], []
    added: set[tuple[str, str]] = set()
    for (port, host), target in unique.items():
        owner = _absolute(host, settings)
        answers.append(srv_record(qname, priority=0, weight=weight, port=port, target=owner,
                                  ttl=settings.ttl))
        if target.address and (owner, target.address) not in added and \
                ipaddress.ip_address(target.address).version == 4:
            added.add((owner, target.address))
            extra.append(a_record(owner, target.address, settings.ttl))
    return answers, extra


def _relative(name: str, zone: str) -> str:
    name, zone = _strip(name), _strip(zone)
    return "" if name == zone else name[: -len(zone) - 1]


def answer(records: ClusterRecords, qname: str, qtype: int, settings: DnsSettings) -> Response:
    """The response to a question about a name of the cluster zone (`in_zone` is true)."""
    relative = _relative(qname, settings.zone)
    if qtype in (TYPE_AXFR, TYPE_IXFR):
        return Response(rcode=REFUSED)
    if relative == "":
        if qtype == TYPE_SOA:
            return Response(rcode=NOERROR, authoritative=True, answers=(
                soa_record(settings.zone, serial=records.serial, ttl=settings.ttl),))
        if qtype == TYPE_NS:
            ns_name = f"ns.dns.{settings.zone}"
            return Response(rcode=NOERROR, authoritative=True,
                            answers=(ns_record(qname, ns_name, settings.ttl),),
                            additional=(a_record(ns_name, settings.server_ip, settings.ttl),))
        return _negative(settings, records, NOERROR)
    if relative == "dns-version":
        if qtype == TYPE_TXT:
            return Response(rcode=NOERROR, authoritative=True,
                            answers=(txt_record(qname, SCHEMA_VERSION, 28800),))
        return _negative(settings, records, NOERROR)
    if relative == "ns.dns":
        if qtype == TYPE_A:
            return Response(rcode=NOERROR, authoritative=True,
                            answers=(a_record(qname, settings.server_ip, settings.ttl),))
        return _negative(settings, records, NOERROR)
    targets = lookup(records, relative)
    if targets is None:
        return _negative(settings, records, NXDOMAIN)
    found: list[Record] = []
    extra: list[Record] = []
    if qtype == TYPE_A:
        found = _address_records(qname, targets, records, settings)
    elif qtype == TYPE_SRV:
        found, extra = _srv_records(qname, targets, settings)
    elif qtype == TYPE_CNAME:
        found = [cname_record(qname, t.external, settings.ttl)
                 for t in targets if t.external is not None]
    if not found:
        return _negative(settings, records, NOERROR)
    return Response(rcode=NOERROR, authoritative=True, answers=tuple(found),
                    additional=tuple(extra))


def reverse_address(qname: str) -> str | None:
    """The IPv4 address of an `in-addr.arpa` name (None: not one with four octets)."""
    labels = _strip(qname).split(".")
    if labels[-2:] != ["in-addr", "arpa"] or len(labels) != 6:
        return None
    try:
        return str(ipaddress.IPv4Address(".".join(reversed(labels[:4]))))
    except ValueError:
        return None


def reverse_answer(records: ClusterRecords, qname: str, qtype: int,
                   settings: DnsSettings) -> Response | None:
    """PTR of a cluster IP (`SVC.NS.svc.ZONE`) or of an endpoint address
    (`HOST.SVC.NS.svc.ZONE`); None for an address that is not the cluster's (forwarded)."""
    address = reverse_address(qname)
    if address is None:
        return None
    names: list[str] = []
    for (namespace, name), service in sorted(records.services.items()):
        if address in _service_ips(service):
            names.append(f"{name}.{namespace}.svc.{settings.zone}")
    for (namespace, name), endpoints in sorted(records.endpoints.items()):
        for entry, _ in _endpoint_addresses(endpoints):
            if entry.get("ip") == address:
                names.append(f"{endpoint_hostname(entry)}.{name}.{namespace}.svc.{settings.zone}")
    if not names:
        return None
    if qtype != TYPE_PTR:
        return Response(rcode=NOERROR, authoritative=True)
    unique = list(dict.fromkeys(names))
    return Response(rcode=NOERROR, authoritative=True,
                    answers=tuple(ptr_record(qname, n, settings.ttl) for n in unique))


def records_from(namespaces: list[dict], services: list[dict], endpoints: list[dict],
                 serial: int) -> ClusterRecords:
    """A snapshot from the objects as the API serves them."""
    def key(obj: dict) -> tuple[str, str]:
        meta = obj.get("metadata") or {}
        return str(meta.get("namespace", "default")).lower(), str(meta.get("name", "")).lower()

    return ClusterRecords(
        namespaces=frozenset(str((n.get("metadata") or {}).get("name", "")).lower()
                             for n in namespaces),
        services={key(s): s for s in services},
        endpoints={key(e): e for e in endpoints},
        serial=serial,
    )
