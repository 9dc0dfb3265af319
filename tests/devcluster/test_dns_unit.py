"""The cluster DNS's pure parts: the wire format, cluster names to records (CoreDNS's answers),
and a pod's resolv.conf (the kubelet's dnsPolicy rules) with podman's flags for it."""

from __future__ import annotations

import struct

import pytest
from gencluster_dev.network.dns import upstream_servers
from gencluster_dev.network.dnsnames import (
    ClusterRecords,
    DnsSettings,
    answer,
    in_zone,
    records_from,
    reverse_answer,
)
from gencluster_dev.network.dnswire import (
    FORMERR,
    NOERROR,
    NXDOMAIN,
    REFUSED,
    TYPE_A,
    TYPE_AAAA,
    TYPE_AXFR,
    TYPE_CNAME,
    TYPE_NS,
    TYPE_PTR,
    TYPE_SOA,
    TYPE_SRV,
    TYPE_TXT,
    DnsFormatError,
    Response,
    a_record,
    encode_query,
    encode_response,
    error_response,
    parse_query,
    parse_response,
)
from gencluster_dev.node.podmanspec import dns_flags, run_argv
from gencluster_dev.node.resolvconf import (
    DnsConfigError,
    ResolvConf,
    parse_resolv_conf,
    pod_resolv_conf,
)

pytestmark = pytest.mark.unit

SETTINGS = DnsSettings(zone="cluster.local", ttl=30, server_ip="127.5.0.10")


def service(name: str, namespace: str = "default", *, cluster_ip: str = "127.5.128.7",
            ports: list[dict] | None = None, **spec: object) -> dict:
    body = {"clusterIP": cluster_ip, "clusterIPs": [cluster_ip] if cluster_ip != "None" else [],
            "ports": ports if ports is not None else [{"name": "grpc", "port": 50051,
                                                        "protocol": "TCP"}], **spec}
    return {"metadata": {"name": name, "namespace": namespace}, "spec": body}


def endpoints(name: str, addresses: list[dict], ports: list[dict] | None = None,
              namespace: str = "default", not_ready: list[dict] | None = None) -> dict:
    subset: dict = {"addresses": addresses}
    if ports is not None:
        subset["ports"] = ports
    if not_ready:
        subset["notReadyAddresses"] = not_ready
    return {"metadata": {"name": name, "namespace": namespace}, "subsets": [subset]}


RECORDS = records_from(
    [{"metadata": {"name": "default"}}, {"metadata": {"name": "apps"}}],
    [
        service("id-server"),
        service("id-server-peers", cluster_ip="None", ports=[
            {"name": "grpc", "port": 50051, "protocol": "TCP"},
            {"name": "metrics", "port": 9090, "protocol": "TCP"}]),
        service("bare", cluster_ip="None", ports=[]),
        service("db", "apps", cluster_ip="127.5.128.9"),
        {"metadata": {"name": "outside", "namespace": "apps"},
         "spec": {"type": "ExternalName", "externalName": "db.apps.svc.cluster.local"}},
        {"metadata": {"name": "far", "namespace": "apps"},
         "spec": {"type": "ExternalName", "externalName": "example.org."}},
    ],
    [
        endpoints("id-server-peers",
                  [{"ip": "127.5.64.2", "hostname": "id-server-0"}, {"ip": "127.5.64.3"}],
                  [{"name": "grpc", "port": 50051, "protocol": "TCP"},
                   {"name": "metrics", "port": 9090, "protocol": "TCP"}],
                  not_ready=[{"ip": "127.5.64.4", "hostname": "id-server-2"}]),
        endpoints("bare", [{"ip": "127.5.64.8"}]),
    ],
    serial=1234,
)


def ask(name: str, qtype: int = TYPE_A) -> Response:
    return answer(RECORDS, name, qtype, SETTINGS)


def addresses(response: Response) -> list[str]:
    return sorted(".".join(str(b) for b in r.rdata) for r in response.answers
                  if r.rtype == TYPE_A)


# -- names to records -------------------------------------------------------------------------

def test_a_service_name_is_its_cluster_ip_authoritatively() -> None:
    response = ask("id-server.default.svc.cluster.local")
    assert response.rcode == NOERROR and response.authoritative
    assert addresses(response) == ["127.5.128.7"]
    assert response.answers[0].name == "id-server.default.svc.cluster.local"
    assert response.answers[0].ttl == 30
    # names are case-insensitive; the answer keeps the asker's spelling
    upper = ask("ID-Server.Default.SVC.cluster.local.")
    assert addresses(upper) == ["127.5.128.7"]
    assert upper.answers[0].name == "ID-Server.Default.SVC.cluster.local."


def test_a_headless_service_is_its_ready_endpoints_and_each_has_a_name() -> None:
    assert addresses(ask("id-server-peers.default.svc.cluster.local")) == [
        "127.5.64.2", "127.5.64.3"]  # not the not-ready one, one record per address
    assert addresses(ask("id-server-0.id-server-peers.default.svc.cluster.local")) == [
        "127.5.64.2"]
    assert addresses(ask("127-5-64-3.id-server-peers.default.svc.cluster.local")) == [
        "127.5.64.3"]
    assert ask("id-server-2.id-server-peers.default.svc.cluster.local").rcode == NXDOMAIN
    # a headless Service without ports still has its addresses
    assert addresses(ask("bare.default.svc.cluster.local")) == ["127.5.64.8"]


def test_a_pod_name_is_its_dashed_address_in_an_existing_namespace() -> None:
    assert addresses(ask("127-5-64-9.apps.pod.cluster.local")) == ["127.5.64.9"]
    assert ask("127-5-64-9.nowhere.pod.cluster.local").rcode == NXDOMAIN
    assert ask("not-an-ip.apps.pod.cluster.local").rcode == NXDOMAIN


@pytest.mark.parametrize("name", [
    "missing.default.svc.cluster.local",      # no such Service
    "id-server.nowhere.svc.cluster.local",    # no such namespace
    "nowhere.svc.cluster.local",              # no such namespace
    "id-server.default.svc.cluster.local.default.svc.cluster.local",  # a search-path miss
    "a.b.c.id-server.default.svc.cluster.local",  # too many labels
    "id-server.default.other.cluster.local",  # neither svc nor pod
    "x.id-server.default.svc.cluster.local",  # an endpoint of a Service with a cluster IP
])
def test_names_that_do_not_exist_are_nxdomain_with_the_zone_soa(name: str) -> None:
    response = ask(name)
    assert response.rcode == NXDOMAIN and response.authoritative
    assert not response.answers
    assert [r.rtype for r in response.authority] == [TYPE_SOA]
    assert response.authority[0].name == "cluster.local"


@pytest.mark.parametrize(("name", "qtype"), [
    ("id-server.default.svc.cluster.local", TYPE_AAAA),  # exists, no IPv6
    ("id-server.default.svc.cluster.local", TYPE_TXT),
    ("id-server.default.svc.cluster.local", TYPE_CNAME),
    ("default.svc.cluster.local", TYPE_A),  # a namespace: an empty non-terminal
    ("svc.cluster.local", TYPE_A),
    ("pod.cluster.local", TYPE_A),
    ("cluster.local", TYPE_A),
])
def test_names_that_exist_without_the_asked_type_are_noerror_and_empty(name: str,
                                                                         qtype: int) -> None:
    response = ask(name, qtype)
    assert response.rcode == NOERROR and not response.answers
    assert [r.rtype for r in response.authority] == [TYPE_SOA]


def test_srv_records_name_the_ports_and_carry_their_targets_addresses() -> None:
    response = ask("_grpc._tcp.id-server.default.svc.cluster.local", TYPE_SRV)
    assert response.rcode == NOERROR
    message = parse_response(encode_response(parse_query(encode_query(
        1, "_grpc._tcp.id-server.default.svc.cluster.local", TYPE_SRV)), response))
    assert [r.data for r in message.answers] == [
        (0, 100, 50051, "id-server.default.svc.cluster.local")]
    assert [(r.name, r.data) for r in message.additional] == [
        ("id-server.default.svc.cluster.local", "127.5.128.7")]
    headless = parse_response(encode_response(parse_query(encode_query(
        2, "_metrics._tcp.id-server-peers.default.svc.cluster.local", TYPE_SRV)),
        ask("_metrics._tcp.id-server-peers.default.svc.cluster.local", TYPE_SRV)))
    assert sorted(r.data for r in headless.answers) == [  # type: ignore[type-var]
        (0, 50, 9090, "127-5-64-3.id-server-peers.default.svc.cluster.local"),
        (0, 50, 9090, "id-server-0.id-server-peers.default.svc.cluster.local")]
    assert ask("_nope._tcp.id-server.default.svc.cluster.local", TYPE_SRV).rcode == NXDOMAIN
    assert ask("_grpc._udp.id-server.default.svc.cluster.local", TYPE_SRV).rcode == NXDOMAIN
    # SRV of the bare Service name: every port
    assert len(ask("id-server-peers.default.svc.cluster.local", TYPE_SRV).answers) == 4


def test_external_name_services_are_cnames_followed_inside_the_zone() -> None:
    inside = ask("outside.apps.svc.cluster.local")
    assert [r.rtype for r in inside.answers] == [TYPE_CNAME, TYPE_A]
    assert addresses(inside) == ["127.5.128.9"]
    far = ask("far.apps.svc.cluster.local")
    assert [r.rtype for r in far.answers] == [TYPE_CNAME]


def test_the_zone_apex_has_soa_and_ns_and_the_schema_version() -> None:
    soa = ask("cluster.local", TYPE_SOA)
    assert [r.rtype for r in soa.answers] == [TYPE_SOA]
    ns = parse_response(encode_response(parse_query(encode_query(3, "cluster.local", TYPE_NS)),
                                        ask("cluster.local", TYPE_NS)))
    assert [r.data for r in ns.answers] == ["ns.dns.cluster.local"]
    assert [r.data for r in ns.additional] == ["127.5.0.10"]
    version = parse_response(encode_response(parse_query(encode_query(
        4, "dns-version.cluster.local", TYPE_TXT)), ask("dns-version.cluster.local", TYPE_TXT)))
    assert [r.data for r in version.answers] == ["1.1.0"]
    assert ask("cluster.local", TYPE_AXFR).rcode == REFUSED


def test_reverse_names_of_cluster_addresses_are_answered_and_others_are_not() -> None:
    cluster_ip = reverse_answer(RECORDS, "7.128.5.127.in-addr.arpa", TYPE_PTR, SETTINGS)
    assert cluster_ip is not None
    names = parse_response(encode_response(parse_query(encode_query(
        5, "7.128.5.127.in-addr.arpa", TYPE_PTR)), cluster_ip))
    assert [r.data for r in names.answers] == ["id-server.default.svc.cluster.local"]
    endpoint = reverse_answer(RECORDS, "2.64.5.127.in-addr.arpa", TYPE_PTR, SETTINGS)
    assert endpoint is not None
    assert len(endpoint.answers) == 1
    assert reverse_answer(RECORDS, "1.1.168.192.in-addr.arpa", TYPE_PTR, SETTINGS) is None


def test_in_zone() -> None:
    assert in_zone("a.cluster.local.", "cluster.local")
    assert in_zone("CLUSTER.LOCAL", "cluster.local")
    assert not in_zone("notcluster.local", "cluster.local")
    assert not in_zone("pypi.org", "cluster.local")


def test_an_empty_cluster_answers_nxdomain() -> None:
    assert answer(ClusterRecords(), "a.default.svc.cluster.local", TYPE_A,
                  SETTINGS).rcode == NXDOMAIN


# -- wire format ------------------------------------------------------------------------------

def test_a_query_round_trips_and_the_response_echoes_id_question_and_flags() -> None:
    raw = encode_query(0xBEEF, "Id-Server.default.svc.cluster.local", TYPE_A)
    query = parse_query(raw)
    assert (query.id, query.name, query.qtype, query.recursion_desired) == (
        0xBEEF, "Id-Server.default.svc.cluster.local", TYPE_A, True)
    assert query.edns_payload is None and query.udp_limit() == 512
    reply = parse_response(encode_response(query, ask(query.name)))
    assert reply.id == 0xBEEF and reply.rcode == NOERROR and reply.authoritative
    assert reply.question == "Id-Server.default.svc.cluster.local"
    assert [r.data for r in reply.answers] == ["127.5.128.7"]


def test_an_edns_query_gets_an_opt_record_and_a_larger_udp_limit() -> None:
    raw = bytearray(encode_query(7, "x.cluster.local", TYPE_A))
    raw[11] = 1  # ARCOUNT = 1
    raw += b"\x00" + struct.pack("!HHIH", 41, 4096, 0, 0)
    query = parse_query(bytes(raw))
    assert query.edns_payload == 4096 and query.udp_limit() == 1232
    reply = encode_response(query, ask("x.cluster.local"))
    assert struct.unpack_from("!H", reply, 10)[0] == 1  # the OPT record


def test_a_response_too_long_for_udp_is_truncated_to_its_question() -> None:
    query = parse_query(encode_query(9, "many.default.svc.cluster.local", TYPE_A))
    records = tuple(a_record(query.name, f"127.5.64.{i}", 30) for i in range(1, 60))
    full = encode_response(query, Response(rcode=NOERROR, answers=records))
    assert len(full) > 512 and not parse_response(full).truncated
    cut = parse_response(encode_response(query, Response(rcode=NOERROR, answers=records),
                                         limit=512))
    assert cut.truncated and cut.answers == () and cut.question == query.name


@pytest.mark.parametrize("message", [
    b"", b"\x00\x01", b"\x00\x01\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00",
    encode_query(1, "a.b", TYPE_A)[:-3],
    b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01",  # pointer loop
    b"\x00\x01\x81\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x01",  # a response
])
def test_malformed_queries_are_refused_by_the_parser(message: bytes) -> None:
    with pytest.raises(DnsFormatError):
        parse_query(message)
    reply = error_response(message, FORMERR)
    if len(message) < 12:
        assert reply is None
    else:
        assert reply is not None and parse_response(reply).rcode == FORMERR


def test_upstreams_are_the_nodes_nameservers_but_never_this_server() -> None:
    text = "# comment\nnameserver 10.255.255.53\nnameserver 127.5.0.10\nsearch example\n"
    assert upstream_servers(text, "127.5.0.10") == ["10.255.255.53"]


# -- a pod's resolv.conf ----------------------------------------------------------------------

HOST = ResolvConf(("10.255.255.53",), ("corp.example",), ("edns0",))


def pod(namespace: str = "apps", **spec: object) -> dict:
    return {"metadata": {"name": "p", "namespace": namespace, "uid": "u"},
            "spec": {"containers": [{"name": "c", "image": "img"}], **spec}}


def resolv(p: dict, cluster_dns: str | None = "127.5.0.10") -> ResolvConf:
    return pod_resolv_conf(p, cluster_dns=cluster_dns, cluster_domain="cluster.local", host=HOST)


def test_cluster_first_pods_search_their_namespace_then_the_cluster_with_ndots_5() -> None:
    conf = resolv(pod())
    assert conf.nameservers == ("127.5.0.10",)
    assert conf.searches == ("apps.svc.cluster.local", "svc.cluster.local", "cluster.local",
                             "corp.example")
    assert conf.options == ("ndots:5",)
    assert conf.render() == (
        "nameserver 127.5.0.10\n"
        "search apps.svc.cluster.local svc.cluster.local cluster.local corp.example\n"
        "options ndots:5\n")


def test_host_network_default_and_none_policies() -> None:
    assert resolv(pod(hostNetwork=True)) == HOST
    assert resolv(pod(hostNetwork=True, dnsPolicy="ClusterFirstWithHostNet")).nameservers == (
        "127.5.0.10",)
    assert resolv(pod(dnsPolicy="Default")) == HOST
    assert resolv(pod(), cluster_dns=None) == HOST  # a kubelet without --cluster-dns
    none = resolv(pod(dnsPolicy="None", dnsConfig={"nameservers": ["1.2.3.4"],
                                                   "searches": ["a.example"],
                                                   "options": [{"name": "ndots", "value": "2"}]}))
    assert none == ResolvConf(("1.2.3.4",), ("a.example",), ("ndots:2",))
    with pytest.raises(DnsConfigError):
        resolv(pod(dnsPolicy="Sometimes"))


def test_dns_config_is_merged_into_the_policy() -> None:
    conf = resolv(pod(dnsConfig={
        "nameservers": ["127.5.0.10", "1.1.1.1", "2.2.2.2", "3.3.3.3"],
        "searches": ["svc.cluster.local", "extra.example"],
        "options": [{"name": "ndots", "value": "1"}, {"name": "single-request-reopen"}]}))
    assert conf.nameservers == ("127.5.0.10", "1.1.1.1", "2.2.2.2")  # at most three
    assert conf.searches[-1] == "extra.example" and conf.searches.count("svc.cluster.local") == 1
    assert conf.options == ("ndots:1", "single-request-reopen")


def test_parse_resolv_conf() -> None:
    text = ("nameserver 1.1.1.1 # x\ndomain old\nsearch a.example b.example.\n"
            "options ndots:2 rotate\n")
    assert parse_resolv_conf(text) == ResolvConf(("1.1.1.1",), ("a.example", "b.example"),
                                                 ("ndots:2", "rotate"))


def test_podman_gets_the_pods_resolv_conf_as_flags() -> None:
    conf = resolv(pod())
    assert dns_flags(conf) == [
        "--dns", "127.5.0.10", "--dns-search", "apps.svc.cluster.local",
        "--dns-search", "svc.cluster.local", "--dns-search", "cluster.local",
        "--dns-search", "corp.example", "--dns-option", "ndots:5"]
    assert dns_flags(None) == []
    p = pod()
    argv = run_argv(podman=["podman"], pod=p, container=p["spec"]["containers"][0], env={},
                    run_as=None, pidfile="/x", instance="i", ulimits=[], resolv=conf)
    image = argv.index("img")
    assert argv.index("--dns") < image and "ndots:5" in argv[:image]


def test_endpoints_name_a_pod_whose_subdomain_is_the_service() -> None:
    from gencluster_dev.controllers.endpoints import desired_endpoints

    svc = {"metadata": {"name": "peers", "namespace": "default"},
           "spec": {"clusterIP": "None", "selector": {"app": "x"},
                    "ports": [{"name": "grpc", "port": 50051}]}}

    def member(name: str, ip: str, subdomain: str) -> dict:
        return {"metadata": {"name": name, "namespace": "default", "uid": name,
                             "labels": {"app": "x"}},
                "spec": {"hostname": name, "subdomain": subdomain,
                         "containers": [{"name": "c"}]},
                "status": {"podIP": ip, "phase": "Running",
                           "conditions": [{"type": "Ready", "status": "True"}]}}

    result = desired_endpoints(svc, [member("x-0", "127.5.64.2", "peers"),
                                     member("x-1", "127.5.64.3", "other")])
    assert result is not None
    named = {a["ip"]: a.get("hostname") for a in result["subsets"][0]["addresses"]}
    assert named == {"127.5.64.2": "x-0", "127.5.64.3": None}
