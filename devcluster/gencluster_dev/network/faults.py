"""Real faults for pods of a running local control plane: signals and nftables drop rules.

Pods are found through the files the kubelet writes (`pods/*/state.json`) and the instance
through `instance.json`, so the injector works from any process (the CLI, a test) without the
API. Network faults drop packets by *socket owner uid* and destination address in the output
hook (see docs/devcluster.md, "Faults", for why source addresses cannot be used on loopback);
every rule lives in one table per instance, so `heal` removes exactly what was added.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

#: uids of pods: UID_BASE + slot * UIDS_PER_SLOT + k (docs/devcluster.md, "Address plan").
UID_BASE = 200_000
UIDS_PER_SLOT = 1024
CHAIN = "out"


class FaultError(Exception):
    """A fault cannot be injected; the message says why and what to do."""


@dataclass(frozen=True)
class PodProcesses:
    """One pod as the kubelet recorded it in state.json."""

    namespace: str
    name: str
    uid: str
    ip: str | None
    run_as: int | None
    pids: dict[str, int | None]

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


def parse_pod_ref(pod: str) -> tuple[str, str]:
    """`NAME` (namespace default) or `NAMESPACE/NAME`."""
    namespace, _, name = pod.rpartition("/")
    if not name or "/" in namespace:
        raise FaultError(f"bad pod reference {pod!r}: use NAME or NAMESPACE/NAME")
    return namespace or "default", name


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def drop_rule(run_as: int | str, daddr: str, comment: str, extra: str = "") -> str:
    """One nft rule (for `add rule inet T out ...`) dropping what uid(s) send to daddr."""
    match = f"meta skuid {run_as} {extra}".rstrip()
    return f'{match} ip daddr {daddr} drop comment "{comment}"'


def ip_ranges_excluding(network: str, excluded: str) -> list[str]:
    """The addresses of `network` minus one address, as nft range literals."""
    net = ipaddress.ip_network(network)
    hole = ipaddress.ip_address(excluded)
    first, last = net.network_address, net.broadcast_address
    spans = []
    if hole > first:
        spans.append((first, hole - 1))
    if hole < last:
        spans.append((hole + 1, last))
    return [str(a) if a == b else f"{a}-{b}" for a, b in spans]


class FaultInjector:
    """Faults on the pods of the instance that owns `dev_dir`."""

    def __init__(self, dev_dir: Path) -> None:
        self.dev_dir = Path(dev_dir)
        path = self.dev_dir / "instance.json"
        try:
            self.instance = json.loads(path.read_text())
        except PermissionError as exc:
            raise FaultError(f"cannot read {path}: {exc.strerror}; run as the user that runs "
                             f"`gencluster dev up` (or root)") from exc
        except (OSError, ValueError) as exc:
            raise FaultError(
                f"no running instance in {self.dev_dir} ({path.name}: {exc}); start one with "
                f"`gencluster dev up --dir {self.dev_dir}`"
            ) from exc
        self.table: str = self.instance["nftTable"]
        self.api_ip: str = urlparse(self.instance["server"]).hostname or ""
        self.pod_network: str = self.instance["podNetwork"]
        slot = int(self.instance["slot"])
        first = UID_BASE + slot * UIDS_PER_SLOT
        self.pod_uids = (first, first + UIDS_PER_SLOT - 1)

    # ---------------------------------------------------------------- pods

    def pods(self) -> list[PodProcesses]:
        """Every pod recorded under pods/ (live or not)."""
        out = []
        for state_file in sorted((self.dev_dir / "pods").glob("*/state.json")):
            try:
                state = json.loads(state_file.read_text())
            except (OSError, ValueError):
                continue
            out.append(PodProcesses(
                namespace=state["namespace"], name=state["name"], uid=state["uid"],
                ip=state.get("podIP"), run_as=state.get("runAsUser"),
                pids={name: c.get("pid") for name, c in (state.get("containers") or {}).items()},
            ))
        return out

    def pod(self, ref: str) -> PodProcesses:
        """The running pod named `ref`; FaultError when unknown or not running."""
        namespace, name = parse_pod_ref(ref)
        found = [p for p in self.pods() if (p.namespace, p.name) == (namespace, name)]
        if not found:
            raise FaultError(f"no pod {namespace}/{name} runs in {self.dev_dir}")
        live = [p for p in found if any(_alive(pid) for pid in p.pids.values())]
        if not live:
            raise FaultError(f"pod {namespace}/{name} is not running (no live container)")
        return live[-1]

    # ---------------------------------------------------------------- signals

    def _signal(self, ref: str, sig: signal.Signals) -> None:
        pod = self.pod(ref)
        for pid in pod.pids.values():
            if _alive(pid):
                try:
                    os.killpg(pid, sig)  # type: ignore[arg-type]
                except ProcessLookupError:
                    continue
                except PermissionError as exc:
                    raise FaultError(f"cannot signal pod {pod.ref}: {exc} (run as root or as "
                                     f"the user that runs `gencluster dev up`)") from exc

    def kill(self, pod: str) -> None:
        """SIGKILL every container process group: a crash; the kubelet restarts per policy."""
        self._signal(pod, signal.SIGKILL)

    def pause(self, pod: str) -> None:
        """SIGSTOP every container process group: a hung process, sockets stay open."""
        self._signal(pod, signal.SIGSTOP)

    def resume(self, pod: str) -> None:
        """SIGCONT after `pause`."""
        self._signal(pod, signal.SIGCONT)

    # ---------------------------------------------------------------- network

    def _network_pod(self, ref: str) -> PodProcesses:
        self._require_nft()
        pod = self.pod(ref)
        if pod.run_as is None or not pod.ip:
            raise FaultError(f"pod {pod.ref} does not run under a uid of its own (the control "
                             f"plane runs without root), so its traffic cannot be cut")
        return pod

    def _require_nft(self) -> None:
        if os.geteuid() != 0:
            raise FaultError("network faults need root (nftables rules and per-pod uids); "
                             "run `gencluster dev up` and this command as root")
        if shutil.which("nft") is None:
            raise FaultError("the `nft` command is missing: install nftables "
                             "(e.g. `apt-get install nftables`)")

    def _nft(self, script: str) -> str:
        result = subprocess.run(["nft", "-f", "-"], input=script, text=True,
                                capture_output=True, check=False)
        if result.returncode != 0:
            raise FaultError(f"nft failed: {result.stderr.strip()}")
        return result.stdout

    def _existing_comments(self) -> set[str]:
        result = subprocess.run(["nft", "-j", "list", "chain", "inet", self.table, CHAIN],
                                capture_output=True, text=True, check=False)
        if result.returncode != 0:
            return set()
        comments = set()
        for item in json.loads(result.stdout).get("nftables", []):
            rule = item.get("rule")
            if rule and rule.get("comment"):
                comments.add(rule["comment"])
        return comments

    def _add_rules(self, rules: list[tuple[str, str]]) -> None:
        """Add (comment, rule) pairs whose comment is not there yet: idempotent."""
        existing = self._existing_comments()
        lines = [
            f"add table inet {self.table}",
            f"add chain inet {self.table} {CHAIN} "
            "{ type filter hook output priority 0; policy accept; }",
        ]
        lines += [f"add rule inet {self.table} {CHAIN} {rule}"
                  for comment, rule in rules if comment not in existing]
        self._nft("\n".join(lines) + "\n")

    def partition(self, pod_a: str, pod_b: str) -> None:
        """Cut traffic between two pods, both ways (each pod's uid → the other's IP)."""
        a, b = self._network_pod(pod_a), self._network_pod(pod_b)
        if a.uid == b.uid:
            raise FaultError("cannot partition a pod from itself")
        rules = []
        for src, dst in ((a, b), (b, a)):
            comment = f"partition {src.run_as} {dst.ip}"
            rules.append((comment, drop_rule(src.run_as, dst.ip, comment)))  # type: ignore[arg-type]
        self._add_rules(rules)

    def cut_apiserver(self, pod: str) -> None:
        """The pod's requests to the API server time out; everything else still works."""
        p = self._network_pod(pod)
        comment = f"cut-apiserver {p.run_as}"
        self._add_rules([(comment, drop_rule(p.run_as, self.api_ip, comment))])  # type: ignore[arg-type]

    def isolate(self, pod: str) -> None:
        """Cut the pod from every other pod (also ones created later) and the API server."""
        p = self._network_pod(pod)
        assert p.run_as is not None and p.ip is not None
        rules = []
        for index, span in enumerate(ip_ranges_excluding(self.pod_network, p.ip)):
            comment = f"isolate-out {p.run_as} {index}"
            rules.append((comment, drop_rule(p.run_as, span, comment)))
        low, high = self.pod_uids
        comment = f"isolate-in {p.run_as}"
        rules.append((comment, drop_rule(f"{low}-{high}", p.ip, comment,
                                         extra=f"meta skuid != {p.run_as}")))
        comment = f"cut-apiserver {p.run_as}"
        rules.append((comment, drop_rule(p.run_as, self.api_ip, comment)))
        self._add_rules(rules)

    def cut_client(self, uid: int) -> None:
        """A client outside the pod network: what processes of `uid` send to any pod IP is
        dropped, while the API server and the Services' addresses stay reachable, as from a
        laptop that only reaches the cluster through its API server and load balancers."""
        self._require_nft()
        low, high = self.pod_uids
        if low <= uid <= high:
            raise FaultError(f"uid {uid} belongs to this instance's pods ({low}-{high}); "
                             "pick a client uid outside that range")
        comment = f"cut-client {uid}"
        self._add_rules([(comment, drop_rule(uid, self.pod_network, comment))])

    def cut_client_from_apiserver(self, uid: int) -> None:
        """What processes of `uid` (not a pod) send to the API server is dropped: for a
        controller run beside the control plane, e.g. an operator that must notice it can no
        longer renew its leader-election Lease."""
        self._require_nft()
        low, high = self.pod_uids
        if low <= uid <= high:
            raise FaultError(f"uid {uid} belongs to this instance's pods ({low}-{high}); "
                             "use cut-apiserver POD for a pod")
        comment = f"cut-client-apiserver {uid}"
        self._add_rules([(comment, drop_rule(uid, self.api_ip, comment))])

    def heal(self) -> None:
        """Remove every network fault of this instance (its whole table)."""
        self._require_nft()
        result = subprocess.run(["nft", "delete", "table", "inet", self.table],
                                capture_output=True, text=True, check=False)
        if result.returncode != 0 and "No such file" not in result.stderr:
            raise FaultError(f"nft failed: {result.stderr.strip()}")
