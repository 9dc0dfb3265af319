"""NetworkPolicy semantics as pure functions: who is isolated, what a rule allows, and that the
compiled plan (what becomes nftables rules) says the same as the direct evaluation."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from gencluster_dev.machinery.netpol import (
    PodEndpoint,
    allows,
    endpoints,
    ingress_plan,
    policy_problem,
    policy_types,
    service_gates,
)
from gencluster_dev.network.netpol import render_ruleset

pytestmark = pytest.mark.unit

UIDS = (209_216, 210_239)
NAMESPACES = {"a": {"kubernetes.io/metadata.name": "a", "team": "a"},
              "b": {"kubernetes.io/metadata.name": "b"},
              "mon": {"kubernetes.io/metadata.name": "mon", "purpose": "monitoring"}}


def endpoint(namespace: str, name: str, labels: dict[str, str], k: int) -> PodEndpoint:
    pod = {"spec": {"containers": [{"ports": [{"name": "grpc", "containerPort": 50051},
                                              {"name": "metrics", "containerPort": 9090}]}]}}
    return PodEndpoint(namespace, name, labels, f"127.9.64.{k}", UIDS[0] + k, pod)


A0 = endpoint("a", "a-0", {"cluster": "a"}, 1)
A1 = endpoint("a", "a-1", {"cluster": "a"}, 2)
A_OTHER = endpoint("a", "web", {"app": "web"}, 3)
B0 = endpoint("b", "b-0", {"cluster": "b"}, 4)
OPERATOR = endpoint("b", "operator", {"app.kubernetes.io/component": "operator"}, 5)
SCRAPER = endpoint("mon", "prom", {"app": "prometheus"}, 6)
PODS = [A0, A1, A_OTHER, B0, OPERATOR, SCRAPER]


def policy(namespace: str, spec: dict[str, Any], name: str = "p") -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"namespace": namespace, "name": name}, "spec": spec}


CLUSTER_A = policy("a", {
    "podSelector": {"matchLabels": {"cluster": "a"}},
    "policyTypes": ["Ingress"],
    "ingress": [
        {"ports": [{"port": "grpc"}]},
        {"from": [{"podSelector": {"matchLabels": {"cluster": "a"}}},
                  {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "b"}},
                   "podSelector": {"matchLabels": {"app.kubernetes.io/component": "operator"}}}],
         "ports": [{"port": "metrics"}, {"port": 7000, "endPort": 7002}]},
        {"from": [{"namespaceSelector": {"matchLabels": {"purpose": "monitoring"}}}],
         "ports": [{"protocol": "TCP", "port": 9090}]},
    ],
})


def can(source: PodEndpoint | None, target: PodEndpoint, port: int,
        policies: list[dict[str, Any]], protocol: str = "TCP") -> bool:
    return allows(policies, source, target, protocol, port, NAMESPACES)


def test_no_policy_allows_everything() -> None:
    assert can(B0, A0, 1234, [])
    other_namespace = policy("b", {"podSelector": {}, "ingress": []})
    assert can(B0, A0, 1234, [other_namespace])


def test_policy_types_default_like_the_api_server() -> None:
    assert policy_types(policy("a", {"podSelector": {}})) == ["Ingress"]
    assert policy_types(policy("a", {"podSelector": {}, "egress": [{}]})) == ["Ingress",
                                                                               "Egress"]
    egress_only = policy("a", {"podSelector": {}, "policyTypes": ["Egress"], "egress": []})
    assert can(B0, A0, 1, [egress_only])


def test_deny_all_isolates_but_a_pod_reaches_itself_and_the_node_reaches_all() -> None:
    deny = policy("a", {"podSelector": {}})
    assert not can(B0, A0, 50051, [deny])
    assert not can(A1, A0, 50051, [deny])
    assert can(A0, A0, 50051, [deny])
    assert can(None, A0, 50051, [deny])


def test_cluster_policy_ports_and_peers() -> None:
    policies = [CLUSTER_A]
    assert can(B0, A0, 50051, policies)          # client port: anyone
    assert not can(B0, A0, 9090, policies)       # metrics: not a foreign pod
    assert not can(B0, A0, 7001, policies)
    assert can(A1, A0, 9090, policies) and can(A1, A0, 7002, policies)
    assert not can(A1, A0, 7003, policies)
    assert not can(A_OTHER, A0, 9090, policies)  # same namespace, other labels
    assert can(OPERATOR, A0, 9090, policies)     # namespace AND pod selector
    assert can(SCRAPER, A0, 9090, policies)      # monitoring namespace
    assert not can(SCRAPER, A0, 7000, policies)
    assert not can(B0, A0, 50051, policies, protocol="UDP")
    assert can(B0, A_OTHER, 9090, policies)      # A_OTHER is not selected: default allow


def test_union_of_policies() -> None:
    extra = policy("a", {"podSelector": {"matchLabels": {"cluster": "a"}},
                         "ingress": [{"from": [{"podSelector": {}, "namespaceSelector": {}}],
                                      "ports": [{"port": 7000}]}]}, name="extra")
    assert not can(B0, A0, 7000, [CLUSTER_A])
    assert can(B0, A0, 7000, [CLUSTER_A, extra])
    assert can(B0, A0, 7000, [extra, CLUSTER_A])


def test_pod_selector_alone_stays_in_the_policy_namespace() -> None:
    same_labels_elsewhere = endpoint("b", "imposter", {"cluster": "a"}, 7)
    assert not can(same_labels_elsewhere, A0, 9090, [CLUSTER_A])
    everything = policy("a", {"podSelector": {},
                              "ingress": [{"from": [{"namespaceSelector": {}}]}]})
    assert can(same_labels_elsewhere, A0, 9090, [everything])


def test_ip_block_with_except() -> None:
    block = policy("a", {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {
        "cidr": "127.9.64.0/29", "except": ["127.9.64.4/32"]}}]}]})
    assert can(A1, A0, 1, [block])
    assert not can(B0, A0, 1, [block])       # 127.9.64.4 is excepted
    assert can(SCRAPER, A0, 1, [block])      # 127.9.64.6
    assert not can(endpoint("b", "far", {}, 9), A0, 1, [block])


def test_empty_ingress_rule_allows_all_and_named_port_missing_allows_nothing() -> None:
    open_all = policy("a", {"podSelector": {}, "ingress": [{}]})
    assert can(B0, A0, 4242, [open_all])
    unknown_name = policy("a", {"podSelector": {}, "ingress": [{"ports": [{"port": "nope"}]}]})
    assert not can(B0, A0, 50051, [unknown_name])
    all_tcp = policy("a", {"podSelector": {}, "ingress": [{"ports": [{"protocol": "TCP"}]}]})
    assert can(B0, A0, 4242, [all_tcp]) and not can(B0, A0, 53, [all_tcp], protocol="UDP")


def test_match_expressions() -> None:
    expr = policy("a", {"podSelector": {"matchExpressions": [
        {"key": "cluster", "operator": "In", "values": ["a"]}]},
        "ingress": [{"from": [{"podSelector": {"matchExpressions": [
            {"key": "app", "operator": "Exists"}]}}]}]})
    assert can(A_OTHER, A0, 1, [expr]) and not can(A1, A0, 1, [expr])


POLICY_SETS = [
    [],
    [CLUSTER_A],
    [policy("a", {"podSelector": {}})],
    [CLUSTER_A, policy("a", {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {
        "cidr": "127.9.64.0/30"}}], "ports": [{"port": 7000, "endPort": 7001}]}]}, "ip")],
    [policy("b", {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]})],
]


@pytest.mark.parametrize("policies", POLICY_SETS)
def test_compiled_plan_agrees_with_direct_evaluation(policies: list[dict[str, Any]]) -> None:
    """Interpret the plan the way the nftables rules do, and compare with `allows` for every
    pair of pods and a spread of ports."""
    plan = {(p.endpoint.namespace, p.endpoint.name): p
            for p in ingress_plan(policies, PODS, NAMESPACES)}
    for source, target, port in itertools.product(PODS, PODS, (50051, 9090, 7000, 7001, 7002)):
        expected = can(source, target, port, policies)
        isolated = plan.get((target.namespace, target.name))
        if isolated is None or source is target:
            compiled = True
        else:
            compiled = any(
                (a.sources is None or source.run_as in a.sources)
                and (a.ports is None or any(r.matches("TCP", port) for r in a.ports))
                for a in isolated.allowances)
        assert compiled == expected, (source.name, target.name, port)


def test_render_ruleset() -> None:
    plan = ingress_plan([CLUSTER_A], PODS, NAMESPACES)
    script = render_ruleset("gencluster_dev_9_netpol", plan, UIDS)
    lines = script.splitlines()
    assert lines[:3] == ["table inet gencluster_dev_9_netpol",
                         "delete table inet gencluster_dev_9_netpol",
                         "table inet gencluster_dev_9_netpol {"]
    assert "    ct state established,related accept" in lines
    a0 = [line.strip() for line in lines if "127.9.64.1 " in line]
    assert a0 == [
        f'ip daddr 127.9.64.1 meta skuid {UIDS[0] + 1} accept comment "a/a-0 self"',
        'ip daddr 127.9.64.1 tcp dport 50051 accept comment "a/a-0"',
        f'ip daddr 127.9.64.1 meta skuid {{ {UIDS[0] + 1}, {UIDS[0] + 2}, {UIDS[0] + 5} }} '
        'tcp dport 9090 accept comment "a/a-0"',
        f'ip daddr 127.9.64.1 meta skuid {{ {UIDS[0] + 1}, {UIDS[0] + 2}, {UIDS[0] + 5} }} '
        'tcp dport 7000-7002 accept comment "a/a-0"',
        f'ip daddr 127.9.64.1 meta skuid {{ {UIDS[0] + 6} }} tcp dport 9090 accept '
        'comment "a/a-0"',
        f'ip daddr 127.9.64.1 meta skuid {UIDS[0]}-{UIDS[1]} drop comment "a/a-0"',
    ]
    assert render_ruleset("t", ingress_plan([], PODS, NAMESPACES), UIDS) == ""


def test_endpoints_skip_finished_and_addressless_pods() -> None:
    pods = [
        {"metadata": {"namespace": "a", "name": "x", "uid": "u1", "labels": {"k": "v"}},
         "status": {"podIP": "127.9.64.1", "phase": "Running"}},
        {"metadata": {"namespace": "a", "name": "done", "uid": "u2"},
         "status": {"podIP": "127.9.64.2", "phase": "Succeeded"}},
        {"metadata": {"namespace": "a", "name": "pending", "uid": "u3"}, "status": {}},
    ]
    found = endpoints(pods, {"u1": 209_300})
    assert [(e.name, e.ip, e.run_as, dict(e.labels)) for e in found] == [
        ("x", "127.9.64.1", 209_300, {"k": "v"})]


def test_problems_name_the_field() -> None:
    assert policy_problem(CLUSTER_A) is None
    bad_cidr = policy("a", {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {
        "cidr": "300.1.1.1/8"}}]}]})
    assert policy_problem(bad_cidr) is not None
    bad_op = policy("a", {"podSelector": {"matchExpressions": [
        {"key": "k", "operator": "Near", "values": ["x"]}]}})
    assert "spec.podSelector" in (policy_problem(bad_op) or "")
    bad_protocol = policy("a", {"podSelector": {}, "ingress": [{"ports": [
        {"protocol": "ICMP", "port": 1}]}]})
    assert "ICMP" in (policy_problem(bad_protocol) or "")


def service(name: str, selector: dict[str, str], ip: str, ports: list[dict[str, Any]],
            namespace: str = "a") -> dict[str, Any]:
    return {"metadata": {"namespace": namespace, "name": name},
            "spec": {"clusterIP": ip, "selector": selector, "ports": ports}}


def live(endpoint_: PodEndpoint) -> PodEndpoint:
    """The endpoint with a Pod object service_pods can select (metadata and phase)."""
    pod = {**endpoint_.pod, "metadata": {"namespace": endpoint_.namespace,
                                          "name": endpoint_.name,
                                          "labels": dict(endpoint_.labels)},
           "status": {"phase": "Running", "podIP": endpoint_.ip}}
    return PodEndpoint(endpoint_.namespace, endpoint_.name, endpoint_.labels, endpoint_.ip,
                       endpoint_.run_as, pod)


def test_service_gates_follow_the_backends_policies() -> None:
    pods = [live(p) for p in PODS]
    plan = ingress_plan([CLUSTER_A], pods, NAMESPACES)
    services = [
        service("metrics", {"cluster": "a"}, "127.9.128.1",
                [{"port": 80, "targetPort": "metrics"}, {"port": 81, "targetPort": "grpc"}]),
        service("web", {"app": "web"}, "127.9.128.2", [{"port": 80, "targetPort": 9090}]),
        service("headless", {"cluster": "a"}, "None", [{"port": 80}]),
        service("nobody", {"cluster": "zzz"}, "127.9.128.3", [{"port": 80}]),
    ]
    gates = service_gates(services, plan, pods)
    # port 81 -> grpc is open to all: no gate; web's pod is not isolated; others have no IP
    # or no backend
    assert [(g.name, g.ip, g.protocol, g.port) for g in gates] == [
        ("metrics", "127.9.128.1", "TCP", 80)]
    assert gates[0].sources == frozenset(p.run_as for p in (A0, A1, OPERATOR, SCRAPER))
    script = render_ruleset("t", plan, UIDS, gates)
    assert (f'ip daddr 127.9.128.1 tcp dport 80 meta skuid {UIDS[0]}-{UIDS[1]} drop '
            'comment "service a/metrics"') in script


def test_service_gate_intersects_backends() -> None:
    only_a1 = policy("a", {"podSelector": {"matchLabels": {"cluster": "a"}}, "ingress": [
        {"from": [{"podSelector": {"matchLabels": {"cluster": "a"}}}]}]})
    extra_for_a0 = policy("a", {"podSelector": {"matchExpressions": [
        {"key": "cluster", "operator": "In", "values": ["a"]}]}, "ingress": []}, "x")
    pods = [live(p) for p in PODS]
    plan = ingress_plan([only_a1, extra_for_a0], pods, NAMESPACES)
    (gate,) = service_gates([service("s", {"cluster": "a"}, "127.9.128.1", [{"port": 7000}])],
                            plan, pods)
    assert gate.sources == frozenset({A0.run_as, A1.run_as})


API_IP = "127.9.0.1"
EGRESS_SETS = [
    [policy("a", {"podSelector": {"matchLabels": {"cluster": "a"}},
                  "policyTypes": ["Egress"]})],
    [policy("a", {"podSelector": {"matchLabels": {"cluster": "a"}}, "egress": [
        {"to": [{"podSelector": {"matchLabels": {"cluster": "a"}}}],
         "ports": [{"port": "metrics"}, {"port": 7000, "endPort": 7001}]},
        {"to": [{"ipBlock": {"cidr": "127.9.0.0/16", "except": ["127.9.64.0/18"]}}],
         "ports": [{"port": 6443}]},
        {"to": [{"namespaceSelector": {"matchLabels": {"purpose": "monitoring"}}}]},
    ]})],
    [policy("a", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [
        {"ports": [{"port": "grpc"}]}, {"to": [{"ipBlock": {"cidr": "127.9.64.0/29"}}]}]})],
    [policy("b", {"podSelector": {}, "egress": [{}]})],
]


@pytest.mark.parametrize("policies", EGRESS_SETS)
def test_egress_plan_agrees_with_direct_evaluation(policies: list[dict[str, Any]]) -> None:
    from gencluster_dev.machinery.netpol import allows_egress, egress_plan

    plan = {(p.endpoint.namespace, p.endpoint.name): p
            for p in egress_plan(policies, PODS, NAMESPACES)}
    destinations: list[tuple[str, PodEndpoint | None]] = [(p.ip, p) for p in PODS]
    destinations.append((API_IP, None))
    for source, (ip, target), port in itertools.product(
            PODS, destinations, (50051, 9090, 7000, 7001, 7002, 6443)):
        expected = allows_egress(policies, source, ip, target, "TCP", port, NAMESPACES)
        isolated = plan.get((source.namespace, source.name))
        compiled = isolated is None or isolated.allows(ip, "TCP", port)
        assert compiled == expected, (source.name, ip, port)


def test_egress_deny_all_and_rendering() -> None:
    from gencluster_dev.machinery.netpol import allows_egress, egress_plan
    from gencluster_dev.network.netpol import egress_rules

    deny, allow_api = EGRESS_SETS[0], EGRESS_SETS[1]
    assert not allows_egress(deny, A0, API_IP, None, "TCP", 6443, NAMESPACES)
    assert not allows_egress(deny, A0, A1.ip, A1, "TCP", 50051, NAMESPACES)
    assert allows_egress(deny, A0, A0.ip, A0, "TCP", 50051, NAMESPACES)
    assert allows_egress(deny, B0, A1.ip, A1, "TCP", 50051, NAMESPACES)
    assert allows_egress(allow_api, A0, API_IP, None, "TCP", 6443, NAMESPACES)
    assert not allows_egress(allow_api, A0, A_OTHER.ip, A_OTHER, "TCP", 6443, NAMESPACES)
    (a0, _a1) = egress_plan(allow_api, PODS, NAMESPACES)
    rules = egress_rules(a0, [("127.9.128.1", "TCP", 80)])
    uid = A0.run_as
    assert rules[0] == f'meta skuid {uid} ip daddr {A0.ip} accept comment "egress a/a-0 self"'
    assert (f"meta skuid {uid} ip daddr 127.9.0.0/16 ip daddr != {{ 127.9.64.0/18 }} "
            f'tcp dport 6443 accept comment "egress a/a-0"') in rules
    assert rules[-2:] == [
        f'meta skuid {uid} ip daddr 127.9.128.1 tcp dport 80 accept comment '
        '"egress a/a-0 service"',
        f'meta skuid {uid} drop comment "egress a/a-0"']
    script = render_ruleset("t", [], UIDS, (), [rules])
    assert "chain egress {" in script and "chain ingress {" not in script


def test_egress_service_targets_need_every_backend() -> None:
    from gencluster_dev.machinery.netpol import egress_plan, egress_service_targets

    pods = [live(p) for p in PODS]
    services = [
        service("a", {"cluster": "a"}, "127.9.128.1",
                [{"port": 80, "targetPort": "metrics"}, {"port": 81, "targetPort": "grpc"}]),
        service("mon", {"app": "prometheus"}, "127.9.128.2", [{"port": 90, "targetPort": 1}],
                namespace="mon"),
        service("web", {"app": "web"}, "127.9.128.3", [{"port": 80}]),
    ]
    a0 = egress_plan(EGRESS_SETS[1], pods, NAMESPACES)[0]
    assert a0.endpoint is pods[0]
    # 81 -> grpc: a-0 may reach itself but not a-1 there, so the Service port stays closed
    assert egress_service_targets(services, a0, pods) == [
        ("127.9.128.1", "TCP", 80), ("127.9.128.2", "TCP", 90)]
