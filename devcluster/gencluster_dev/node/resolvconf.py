"""A pod's resolver configuration (its `/etc/resolv.conf`), as the kubelet derives it.

The rules are the kubelet's (pkg/kubelet/network/dns): `dnsPolicy` picks the base and
`dnsConfig` is merged into it.

- `ClusterFirst` (the default): the cluster DNS server, the search path
  `NS.svc.ZONE svc.ZONE ZONE` followed by the node's own search domains, `ndots:5`. A pod with
  `hostNetwork: true` gets `Default` instead, unless its policy is `ClusterFirstWithHostNet`.
- `Default`: the node's resolv.conf (its nameservers, search domains and options).
- `None`: nothing but `dnsConfig`.

`dnsConfig.nameservers` and `searches` are appended (duplicates dropped), its `options`
override options of the same name. Like the kubelet, at most 3 nameservers and 32 search
domains are kept. The podman engine turns the result into `--dns`, `--dns-search` and
`--dns-option`; the process runtime cannot give a process a resolv.conf of its own (docs).
"""

from __future__ import annotations

from dataclasses import dataclass

from gencluster_dev.node.podspec import ContainerConfigError

#: The kubelet's limits (validation.MaxDNSNameservers, MaxDNSSearchPaths).
MAX_NAMESERVERS = 3
MAX_SEARCHES = 32


class DnsConfigError(ContainerConfigError):
    """A pod whose DNS settings cannot be honoured (an unknown `dnsPolicy`)."""


@dataclass(frozen=True)
class ResolvConf:
    """A resolv.conf: nameservers, search domains and options (`name` or `name:value`)."""

    nameservers: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()
    options: tuple[str, ...] = ()

    def render(self) -> str:
        lines = [f"nameserver {server}" for server in self.nameservers]
        if self.searches:
            lines.append("search " + " ".join(self.searches))
        if self.options:
            lines.append("options " + " ".join(self.options))
        return "\n".join(lines) + "\n"


def parse_resolv_conf(text: str) -> ResolvConf:
    """The nameservers, search domains (the last `search`/`domain` line wins, as in glibc) and
    options of a resolv.conf."""
    servers: list[str] = []
    searches: list[str] = []
    options: list[str] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        key, *values = line.split()
        if key == "nameserver" and values:
            servers.append(values[0])
        elif key in ("search", "domain"):
            searches = [v.rstrip(".") for v in values]
        elif key == "options":
            options += values
    return ResolvConf(tuple(servers), tuple(searches), tuple(options))


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _merge_options(base: list[str], extra: list[dict]) -> list[str]:
    merged: dict[str, str | None] = {}
    for option in base:
        name, sep, value = option.partition(":")
        merged[name] = value if sep else None
    for item in extra:
        key = str(item.get("name", ""))
        if not key:
            continue
        given = item.get("value")
        merged[key] = None if given is None else str(given)
    return [key if text is None else f"{key}:{text}" for key, text in merged.items()]


def pod_resolv_conf(pod: dict, *, cluster_dns: str | None, cluster_domain: str,
                    host: ResolvConf) -> ResolvConf:
    """The resolver configuration of `pod` on a node whose own is `host`.

    Without a cluster DNS server (`cluster_dns` None) the ClusterFirst policies fall back to
    `Default`, as the kubelet does when it has no `--cluster-dns`.
    """
    spec = pod.get("spec") or {}
    namespace = (pod.get("metadata") or {}).get("namespace", "default")
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    if policy not in ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"):
        raise DnsConfigError(f"unsupported dnsPolicy {policy!r}")
    if policy == "ClusterFirst" and spec.get("hostNetwork"):
        policy = "Default"
    if policy.startswith("ClusterFirst") and not cluster_dns:
        policy = "Default"
    servers: list[str]
    searches: list[str]
    options: list[str]
    if policy.startswith("ClusterFirst"):
        assert cluster_dns is not None
        servers = [cluster_dns]
        searches = [f"{namespace}.svc.{cluster_domain}", f"svc.{cluster_domain}",
                    cluster_domain, *host.searches]
        options = ["ndots:5"]
    elif policy == "Default":
        servers, searches, options = list(host.nameservers), list(host.searches), list(
            host.options)
    else:
        servers, searches, options = [], [], []
    config = spec.get("dnsConfig") or {}
    servers = _unique([*servers, *(str(s) for s in config.get("nameservers") or [])])
    searches = _unique([*searches, *(str(s).rstrip(".") for s in config.get("searches") or [])])
    options = _merge_options(options, list(config.get("options") or []))
    return ResolvConf(tuple(servers[:MAX_NAMESERVERS]), tuple(searches[:MAX_SEARCHES]),
                      tuple(options))
