"""The cluster DNS server of `gencluster dev up`, asked over real UDP and TCP sockets at the
address the plane announces: Service names, a StatefulSet's pods under its headless Service,
negative answers, and a name of the world forwarded to the node's own resolver."""

from __future__ import annotations

import itertools
import json
import os
import socket
import struct
from typing import Any

import pytest
from gencluster_dev.network.dnswire import (
    NOERROR,
    NXDOMAIN,
    TYPE_A,
    TYPE_AAAA,
    TYPE_SOA,
    TYPE_SRV,
    ParsedResponse,
    encode_query,
    parse_response,
)
from gencluster_testing.devcluster_process import DevClusterProcess
from gencluster_testing.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

SLEEP = ["python", "-c", "import time\nwhile True: time.sleep(1)"]
IDS = itertools.count(1)


def dns_address(cluster: DevClusterProcess) -> tuple[str, int]:
    host, _, port = cluster.instance["dns"].rpartition(":")
    return host, int(port)


def ask_udp(cluster: DevClusterProcess, name: str, qtype: int = TYPE_A) -> ParsedResponse:
    ident = next(IDS)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(10)
        sock.sendto(encode_query(ident, name, qtype), dns_address(cluster))
        reply = parse_response(sock.recv(65535))
    assert reply.id == ident
    return reply


def ask_tcp(cluster: DevClusterProcess, name: str, qtype: int = TYPE_A) -> ParsedResponse:
    ident = next(IDS)
    query = encode_query(ident, name, qtype)
    with socket.create_connection(dns_address(cluster), timeout=10) as sock:
        sock.sendall(struct.pack("!H", len(query)) + query)
        head = sock.recv(2, socket.MSG_WAITALL)
        (length,) = struct.unpack("!H", head)
        reply = parse_response(sock.recv(length, socket.MSG_WAITALL))
    assert reply.id == ident
    return reply


def a_records(reply: ParsedResponse) -> list[str]:
    return sorted(str(r.data) for r in reply.answers if r.rtype == TYPE_A)


def apply(cluster: DevClusterProcess, obj: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps(obj))


def cluster_ip(cluster: DevClusterProcess, name: str) -> str:
    return cluster.kubectl("get", "svc", name, "-o", "jsonpath={.spec.clusterIP}").stdout


def test_the_plane_announces_its_dns_server(dev_cluster: DevClusterProcess) -> None:
    host, port = dns_address(dev_cluster)
    slot = dev_cluster.instance["slot"]
    assert host == f"127.{slot}.0.10"
    assert port == (53 if os.geteuid() == 0 else 10053)  # port 53 needs root
    assert f"cluster DNS at {host}:{port}" in dev_cluster.output()


def test_a_service_name_is_its_cluster_ip_over_udp_and_tcp(
    dev_cluster: DevClusterProcess,
) -> None:
    apply(dev_cluster, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                        "spec": {"selector": {"app": "web"},
                                 "ports": [{"name": "http", "port": 80}]}})
    ip = cluster_ip(dev_cluster, "web")
    name = "web.default.svc.cluster.local"
    wait_for(lambda: a_records(ask_udp(dev_cluster, name)) == [ip], 30, 0.2,
             "the Service to resolve")
    for reply in (ask_udp(dev_cluster, name), ask_tcp(dev_cluster, name)):
        assert reply.rcode == NOERROR and reply.authoritative
        assert a_records(reply) == [ip]
    srv = ask_udp(dev_cluster, "_http._tcp." + name, TYPE_SRV)
    assert [r.data for r in srv.answers] == [(0, 100, 80, name)]
    # a name that exists without IPv6: NOERROR, empty, the zone's SOA
    empty = ask_udp(dev_cluster, name, TYPE_AAAA)
    assert (empty.rcode, empty.answers) == (NOERROR, ())
    assert [r.rtype for r in empty.authority] == [TYPE_SOA]
    # deleted: gone from DNS as soon as the watch says so
    dev_cluster.kubectl("delete", "svc", "web")
    wait_for(lambda: ask_udp(dev_cluster, name).rcode == NXDOMAIN, 30, 0.2,
             "the deleted Service to stop resolving")


@pytest.mark.parametrize("name", ["nothing.default.svc.cluster.local",
                                  "web.nowhere.svc.cluster.local",
                                  "kubernetes.default.svc.cluster.local.default.svc.cluster.local"])
def test_names_of_the_zone_that_do_not_exist_are_nxdomain(dev_cluster: DevClusterProcess,
                                                           name: str) -> None:
    reply = ask_udp(dev_cluster, name)
    assert reply.rcode == NXDOMAIN and reply.authoritative
    assert [r.rtype for r in reply.authority] == [TYPE_SOA]


def test_the_kubernetes_service_resolves(dev_cluster: DevClusterProcess) -> None:
    assert a_records(ask_tcp(dev_cluster, "kubernetes.default.svc.cluster.local")) == [
        cluster_ip(dev_cluster, "kubernetes")]


def test_a_statefulsets_pods_have_names_under_its_headless_service(
    dev_cluster: DevClusterProcess,
) -> None:
    apply(dev_cluster, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"},
                        "spec": {"clusterIP": "None", "selector": {"app": "db"},
                                 "ports": [{"name": "peer", "port": 7000}]}})
    apply(dev_cluster, {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
        "spec": {"replicas": 2, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                 "template": {"metadata": {"labels": {"app": "db"}}, "spec": {
                     "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "main", "image": "python:3", "command": SLEEP,
                                     "ports": [{"containerPort": 7000}]}]}}}})
    dev_cluster.kubectl("rollout", "status", "statefulset/db", "--timeout=120s", timeout=150)
    ips = {name: dev_cluster.kubectl("get", "pod", name, "-o",
                                     "jsonpath={.status.podIP}").stdout
           for name in ("db-0", "db-1")}
    wait_for(lambda: a_records(ask_udp(dev_cluster, "db.default.svc.cluster.local"))
             == sorted(ips.values()), 30, 0.2, "the headless Service to list both pods")
    for name, ip in ips.items():
        assert a_records(ask_udp(dev_cluster, f"{name}.db.default.svc.cluster.local")) == [ip]
        dashed = ip.replace(".", "-")
        assert a_records(ask_udp(dev_cluster, f"{dashed}.default.pod.cluster.local")) == [ip]
    srv = ask_tcp(dev_cluster, "_peer._tcp.db.default.svc.cluster.local", TYPE_SRV)
    assert sorted(str(r.data[3]) for r in srv.answers  # type: ignore[index]
                  ) == ["db-0.db.default.svc.cluster.local", "db-1.db.default.svc.cluster.local"]


def test_other_names_are_forwarded_to_the_nodes_resolver(
    dev_cluster: DevClusterProcess,
) -> None:
    name = "pypi.org"  # reachable from these machines (their package registry)
    try:
        expected = sorted(set(socket.gethostbyname_ex(name)[2]))
    except OSError:
        expected = []
    reply = ask_udp(dev_cluster, name)
    assert a_records(reply) == expected
    assert not reply.authoritative  # the node's resolver answered, not the cluster's zone
