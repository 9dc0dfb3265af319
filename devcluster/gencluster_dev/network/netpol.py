"""NetworkPolicy enforcement between local pods, with nftables, the way a CNI enforces it.

Pods share the host's loopback, and every loopback connection leaves from 127.0.0.1 (see
docs/devcluster.md, "Faults"), so a source pod is recognised by the uid its processes run as
(`meta skuid`, output hook) and the destination pod by its address, as the fault injector does.
The decisions are `machinery.netpol.ingress_plan` (pure); `render_ruleset` (pure) turns them
into one nftables table of this instance, `inet gencluster_dev_<slot>_netpol`, replaced
atomically (`nft -f`) whenever the plan changes and deleted when no pod is isolated and when
the plane stops. It is a table apart from the fault injector's, so `dev fault heal` never lifts
a policy, and a fault's drop still applies to traffic a policy accepts (an accept only ends
its own table's chain).

Node traffic is allowed: whatever does not run under one of the instance's pod uids (the
kubelet's probes, the Service proxy, the API server's pods/proxy, an operator or test run as a
local process) is never matched, as CNIs let a node reach its own pods. Since the Service proxy
forwards as the node, a Service port whose backends are all isolated is gated at the Service
IP itself (`machinery.netpol.service_gates`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from gencluster_dev.client.apiclient import ApiClient
from gencluster_dev.client.reconcile_loop import ReconcileLoop
from gencluster_dev.machinery.netpol import (
    Allowance,
    EgressIsolatedPod,
    IsolatedPod,
    PortRange,
    ServiceGate,
    egress_plan,
    egress_service_targets,
    endpoints,
    ingress_plan,
    policy_problem,
    service_gates,
)

log = logging.getLogger(__name__)

CHAIN = "ingress"
EGRESS_CHAIN = "egress"
RESYNC_SECONDS = 2.0
"""A pass also runs this often without a change: the kubelet writes a pod's uid (state.json)
on its own schedule, not as an API event this controller could watch."""


class NetworkPolicyUnavailable(Exception):
    """NetworkPolicy cannot be enforced here; the message says why and what to do."""


def table_name(fault_table: str) -> str:
    """The policy table of the instance whose fault table is `fault_table`."""
    return f"{fault_table}_netpol"


def _ports_match(port: PortRange) -> str:
    proto = port.protocol.lower()
    if port.low is None:
        return f"meta l4proto {proto}"
    if port.high is None or port.high == port.low:
        return f"{proto} dport {port.low}"
    return f"{proto} dport {port.low}-{port.high}"


def _allowance_rules(ip: str, allowance: Allowance, comment: str) -> list[str]:
    source = ""
    if allowance.sources is not None:
        uids = ", ".join(str(u) for u in sorted(allowance.sources))
        source = f" meta skuid {{ {uids} }}"
    ports = [None] if allowance.ports is None else list(allowance.ports)
    return [f"ip daddr {ip}{source}{'' if p is None else ' ' + _ports_match(p)} accept "
            f'comment "{comment}"' for p in ports]


def pod_rules(isolated: IsolatedPod, pod_uids: tuple[int, int]) -> list[str]:
    """The rules of one isolated pod: its own traffic, each allowance, then a drop of what
    any other pod of the instance sends it."""
    target = isolated.endpoint
    comment = f"{target.namespace}/{target.name}"
    rules = []
    if target.run_as is not None:
        rules.append(f'ip daddr {target.ip} meta skuid {target.run_as} accept '
                     f'comment "{comment} self"')
    for allowance in isolated.allowances:
        rules += _allowance_rules(target.ip, allowance, comment)
    low, high = pod_uids
    rules.append(f'ip daddr {target.ip} meta skuid {low}-{high} drop comment "{comment}"')
    return rules


def gate_rules(gate: ServiceGate, pod_uids: tuple[int, int]) -> list[str]:
    """The rules of one Service port whose backends are all isolated: the sources they all
    admit may connect to the Service IP, other pods are dropped there."""
    comment = f"service {gate.namespace}/{gate.name}"
    match = f"ip daddr {gate.ip} {gate.protocol.lower()} dport {gate.port}"
    rules = []
    if gate.sources:
        uids = ", ".join(str(u) for u in sorted(gate.sources))
        rules.append(f'{match} meta skuid {{ {uids} }} accept comment "{comment}"')
    low, high = pod_uids
    rules.append(f'{match} meta skuid {low}-{high} drop comment "{comment}"')
    return rules


def egress_rules(isolated: EgressIsolatedPod,
                 service_targets: Iterable[tuple[str, str, int]]) -> list[str]:
    """The rules of one pod isolated for egress: what it sends to itself, each allowance (a
    block minus its exceptions, ports), the Service addresses whose backends it may reach,
    then a drop of everything else its uid sends (the API server and the node included, as a
    CNI drops them unless a rule allows them)."""
    source = isolated.endpoint
    if source.run_as is None:
        return []
    uid = source.run_as
    comment = f"egress {source.namespace}/{source.name}"
    rules = [f'meta skuid {uid} ip daddr {source.ip} accept comment "{comment} self"']
    for allowance in isolated.allowances:
        destinations = [None] if allowance.destinations is None else list(allowance.destinations)
        ports = [None] if allowance.ports is None else list(allowance.ports)
        for destination in destinations:
            for port in ports:
                match = f"meta skuid {uid}"
                if destination is not None:
                    match += f" ip daddr {destination.cidr}"
                    if destination.excepts:
                        match += f" ip daddr != {{ {', '.join(destination.excepts)} }}"
                if port is not None:
                    match += " " + _ports_match(port)
                rules.append(f'{match} accept comment "{comment}"')
    for ip, protocol, port_number in service_targets:
        rules.append(f"meta skuid {uid} ip daddr {ip} {protocol.lower()} dport {port_number} "
                     f'accept comment "{comment} service"')
    rules.append(f'meta skuid {uid} drop comment "{comment}"')
    return rules


def render_ruleset(table: str, plan: Iterable[IsolatedPod], pod_uids: tuple[int, int],
                   gates: Iterable[ServiceGate] = (),
                   egress: Iterable[list[str]] = ()) -> str:
    """The whole table for `nft -f`, replacing any earlier version in one transaction; "" when
    no pod is isolated (the table should then not exist).

    `ct state established,related accept` first: policies decide who may *open* a connection
    and the replies of an allowed one pass, as with a stateful CNI (a pod that connected from
    its own address gets the answers back although its own ingress is restricted)."""
    body = [rule for isolated in plan for rule in pod_rules(isolated, pod_uids)]
    body += [rule for gate in gates for rule in gate_rules(gate, pod_uids)]
    outgoing = [rule for rules in egress for rule in rules]
    if not body and not outgoing:
        return ""
    lines = [f"table inet {table}", f"delete table inet {table}", f"table inet {table} {{"]
    # two base chains: a packet must pass both (an accept ends only its own chain), so a
    # connection needs its source's egress and its destination's ingress to allow it
    for chain, rules in ((CHAIN, body), (EGRESS_CHAIN, outgoing)):
        if rules:
            lines += [
                f"  chain {chain} {{",
                "    type filter hook output priority 0; policy accept;",
                "    ct state established,related accept",
                *(f"    {rule}" for rule in rules),
                "  }",
            ]
    lines.append("}")
    return "\n".join(lines) + "\n"


def check_nft() -> None:
    """Raise NetworkPolicyUnavailable unless nftables can be driven from this process."""
    if os.geteuid() != 0:
        raise NetworkPolicyUnavailable(
            "NetworkPolicy enforcement needs root (nftables rules keyed on per-pod uids); run "
            "`gencluster dev up` as root")
    if shutil.which("nft") is None:
        raise NetworkPolicyUnavailable(
            "the `nft` command is missing, so NetworkPolicy cannot be enforced: install "
            "nftables (e.g. `apt-get install nftables`)")
    result = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
        raise NetworkPolicyUnavailable(
            f"nftables does not answer (`nft list tables`: {result.stderr.strip()}), so "
            "NetworkPolicy cannot be enforced")


def delete_table(table: str) -> None:
    """Remove the policy table; an absent table is not an error."""
    result = subprocess.run(["nft", "delete", "table", "inet", table], capture_output=True,
                            text=True, check=False)
    if result.returncode != 0 and "No such file" not in result.stderr:
        raise NetworkPolicyUnavailable(f"nft delete table inet {table}: "
                                       f"{result.stderr.strip()}")


def apply_ruleset(table: str, script: str) -> None:
    """Load `script` (render_ruleset) atomically, or delete the table when it is empty."""
    if not script:
        delete_table(table)
        return
    result = subprocess.run(["nft", "-f", "-"], input=script, capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
        raise NetworkPolicyUnavailable(f"nft -f failed: {result.stderr.strip()}")


def read_run_as(pods_dir: Path) -> dict[str, int | None]:
    """metadata.uid -> the uid the pod runs as, from the kubelet's state.json files."""
    out: dict[str, int | None] = {}
    for state_file in pods_dir.glob("*/state.json"):
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(state, dict) and state.get("uid"):
            out[str(state["uid"])] = state.get("runAsUser")
    return out


class NetworkPolicyEnforcer:
    """Keeps the instance's policy table equal to what the NetworkPolicies allow.

    `enforce=False` (a plane run without root): nothing is enforced, and each policy is
    reported once in the log as not enforced, so nobody mistakes it for protection."""

    def __init__(self, *, api_url: str, token: str, pods_dir: Path, table: str,
                 pod_uids: tuple[int, int], enforce: bool) -> None:
        self.pods_dir = pods_dir
        self.table = table
        self.pod_uids = pod_uids
        self.enforce = enforce
        self._loop = ReconcileLoop(ApiClient(api_url, token), self._reconcile,
                                   name="network policy", log=log,
                                   resync_seconds=RESYNC_SECONDS, reconcile_in_start=True)
        self.policies = self._loop.informer("/apis/networking.k8s.io/v1/networkpolicies")
        self.pods = self._loop.informer("/api/v1/pods")
        self.namespaces = self._loop.informer("/api/v1/namespaces")
        self.services = self._loop.informer("/api/v1/services")
        self._applied = ""
        self._reported: set[str] = set()

    async def start(self) -> None:
        if self.enforce:
            await asyncio.to_thread(delete_table, self.table)
        await self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()
        if self.enforce:
            await asyncio.to_thread(delete_table, self.table)
        self._applied = ""

    def _valid_policies(self) -> list[dict]:
        out = []
        for policy in self.policies.cache.values():
            meta = policy.get("metadata") or {}
            ref = f"{meta.get('namespace')}/{meta.get('name')}"
            problem = policy_problem(policy)
            if problem is not None:
                key = f"{ref}@{meta.get('resourceVersion')}"
                if key not in self._reported:
                    self._reported.add(key)
                    log.warning("NetworkPolicy %s is not enforced: %s", ref, problem)
                continue
            if not self.enforce:
                if ref not in self._reported:
                    self._reported.add(ref)
                    log.warning("NetworkPolicy %s is NOT enforced: the plane runs without root "
                                "(no nftables, no per-pod uids)", ref)
                continue
            out.append(policy)
        return out

    async def _reconcile(self) -> None:
        policies = self._valid_policies()
        if not self.enforce:
            return
        run_as = await asyncio.to_thread(read_run_as, self.pods_dir)
        pods = endpoints(self.pods.cache.values(), run_as)
        namespace_labels = {
            (n.get("metadata") or {}).get("name", ""): dict((n.get("metadata") or {})
                                                             .get("labels") or {})
            for n in self.namespaces.cache.values()
        }
        plan = ingress_plan(policies, pods, namespace_labels)
        gates = service_gates(self.services.cache.values(), plan, pods)
        egress = [egress_rules(isolated, egress_service_targets(
            self.services.cache.values(), isolated, pods))
            for isolated in egress_plan(policies, pods, namespace_labels)]
        script = render_ruleset(self.table, plan, self.pod_uids, gates, egress)
        if script == self._applied:
            return
        await asyncio.to_thread(apply_ruleset, self.table, script)
        self._applied = script
        log.info("network policy: %d isolated pod(s)", len(plan))
