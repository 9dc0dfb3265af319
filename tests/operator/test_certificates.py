"""The certificate decisions of a ClusteredServer (gencluster_operator.certificates) and the
identities the runtime reads back (gencluster.tls_identity)."""

from __future__ import annotations

import pytest
from gencluster import tls_identity
from gencluster.tls_identity import Caller, LocalIdentity
from gencluster_operator import certificates as certs
from gencluster_operator.certificates import CaState, CaStep, LeafVerdict

pytestmark = pytest.mark.unit

NOW = 1_800_000_000.0
DAY = 86400.0


def pod_request(pod: str = "id-0", ip: str | None = "10.1.2.3") -> certs.LeafRequest:
    return certs.pod_request("team", "id", pod, peer_service="id-peers", client_service="id",
                             pod_ip=ip, service_addresses=["10.96.0.9"])


@pytest.fixture(scope="module")
def ca() -> certs.KeyPair:
    return certs.new_ca("team", "id", NOW)


def test_a_pod_certificate_carries_its_identity_names_and_addresses(ca: certs.KeyPair) -> None:
    leaf = certs.issue(ca, pod_request(), NOW)
    facts = certs.facts(leaf.cert_pem)
    assert facts.uris == (tls_identity.pod_identity("team", "id", "id-0"),)
    assert "id-0.id-peers.team.svc" in facts.dns_names
    assert tls_identity.peer_server_name("id-peers", "team") in facts.dns_names
    assert tls_identity.client_server_name("id", "team") in facts.dns_names
    assert set(facts.ip_addresses) == {"10.1.2.3", "10.96.0.9"}
    assert not facts.is_ca
    assert certs.signed_by(leaf.cert_pem, ca.cert_pem)
    assert certs.facts(ca.cert_pem).is_ca


def test_a_leaf_never_outlives_its_ca() -> None:
    short_ca = certs.new_ca("team", "id", NOW, validity=10 * DAY)
    leaf = certs.issue(short_ca, pod_request(), NOW, validity=30 * DAY)
    assert certs.facts(leaf.cert_pem).not_after == certs.facts(short_ca.cert_pem).not_after


def test_another_clusters_ca_does_not_verify_a_leaf(ca: certs.KeyPair) -> None:
    other = certs.new_ca("team", "other", NOW)
    leaf = certs.issue(other, pod_request(), NOW)
    assert not certs.signed_by(leaf.cert_pem, ca.cert_pem)
    assert certs.leaf_verdict(leaf, ca.cert_pem, pod_request(), NOW) is LeafVerdict.OTHER_ISSUER


def test_leaf_verdicts(ca: certs.KeyPair) -> None:
    request = pod_request()
    leaf = certs.issue(ca, request, NOW, validity=30 * DAY)
    assert certs.leaf_verdict(None, ca.cert_pem, request, NOW) is LeafVerdict.MISSING
    garbage = certs.KeyPair(b"not a certificate", b"key")
    assert certs.leaf_verdict(garbage, ca.cert_pem, request, NOW) is LeafVerdict.UNREADABLE
    assert certs.leaf_verdict(leaf, ca.cert_pem, request, NOW) is LeafVerdict.KEEP
    # A pod IP that changed (a re-created pod) needs a new certificate.
    moved = pod_request(ip="10.1.2.4")
    assert certs.leaf_verdict(leaf, ca.cert_pem, moved, NOW) is LeafVerdict.NAMES_CHANGED
    # Renewed once two thirds of the lifetime passed (with the clock-skew allowance).
    lifetime = 30 * DAY + certs.CLOCK_SKEW_SECONDS
    start = NOW - certs.CLOCK_SKEW_SECONDS
    assert certs.leaf_verdict(leaf, ca.cert_pem, request, start + lifetime * 0.66) is \
        LeafVerdict.KEEP
    assert certs.leaf_verdict(leaf, ca.cert_pem, request, start + lifetime * 0.67) is \
        LeafVerdict.RENEWAL_DUE
    assert certs.leaf_verdict(leaf, ca.cert_pem, request, NOW + 31 * DAY) is \
        LeafVerdict.RENEWAL_DUE


def test_the_operator_certificate_is_a_client_certificate(ca: certs.KeyPair) -> None:
    leaf = certs.issue(ca, certs.operator_request("team", "id"), NOW)
    facts = certs.facts(leaf.cert_pem)
    assert facts.uris == (tls_identity.operator_identity("team", "id"),)
    assert facts.dns_names == ()


def test_ca_rotation_stages_promotes_and_prunes_so_every_leaf_stays_verifiable() -> None:
    old = certs.new_ca("team", "id", NOW, validity=90 * DAY)
    state = CaState(old)
    assert certs.ca_step(state, NOW + DAY) is CaStep.KEEP
    due = NOW + 61 * DAY
    assert certs.ca_step(state, due) is CaStep.STAGE
    new = certs.new_ca("team", "id", due, validity=90 * DAY)
    staged = certs.apply_ca_step(state, CaStep.STAGE, due, new)
    # Staged: trusted by every bundle, not signing yet.
    assert staged.signing == old
    assert certs.split_bundle(staged.bundle()) == [
        certs.split_bundle(old.cert_pem)[0], certs.split_bundle(new.cert_pem)[0]]
    assert certs.ca_step(staged, due + 10) is CaStep.KEEP
    later = due + certs.CA_PROPAGATION_SECONDS
    assert certs.ca_step(staged, later) is CaStep.PROMOTE
    promoted = certs.apply_ca_step(staged, CaStep.PROMOTE, later, None)
    assert promoted.signing == new and promoted.retired == (old.cert_pem,)
    # A leaf of the old CA is reissued, and still verifies meanwhile (the old CA is trusted).
    old_leaf = certs.issue(old, pod_request(), NOW)
    assert certs.leaf_verdict(old_leaf, promoted.signing.cert_pem, pod_request(), later) is \
        LeafVerdict.OTHER_ISSUER
    assert certs.split_bundle(old.cert_pem)[0] in certs.split_bundle(promoted.bundle())
    # Pruned once the old CA expired.
    expired = NOW + 91 * DAY
    assert certs.ca_step(promoted, expired) is CaStep.PRUNE
    pruned = certs.apply_ca_step(promoted, CaStep.PRUNE, expired, None)
    assert pruned.retired == () and pruned.signing == new
    with pytest.raises(ValueError):
        certs.apply_ca_step(state, CaStep.STAGE, due, None)


def test_the_longest_names_kubernetes_allows_make_valid_certificates() -> None:
    namespace, cluster, pod = "n" * 63, "c" * 63, "c" * 61 + "-9"
    ca = certs.new_ca(namespace, cluster, NOW)
    leaf = certs.issue(ca, certs.pod_request(namespace, cluster, pod, peer_service="p" * 63,
                                             client_service=cluster), NOW)
    assert certs.facts(leaf.cert_pem).uris == (tls_identity.pod_identity(namespace, cluster, pod),)
    assert certs.signed_by(leaf.cert_pem, ca.cert_pem)


def test_a_bad_ca_key_is_a_clear_error(ca: certs.KeyPair) -> None:
    with pytest.raises(certs.CertificateError):
        certs.issue(certs.KeyPair(ca.cert_pem, b"nope"), pod_request(), NOW)
    with pytest.raises(certs.CertificateError):
        certs.facts(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")


LOCAL = LocalIdentity("team", "id")


def context(*uris: str, cert: bool = True, ssl: bool = True) -> dict[str, list[bytes]]:
    found: dict[str, list[bytes]] = {}
    if ssl:
        found["transport_security_type"] = [b"ssl"]
    if cert:
        found["x509_pem_cert"] = [b"pem"]
        found["x509_subject_alternative_name"] = [uri.encode() for uri in uris]
    return found


@pytest.mark.parametrize(("auth", "caller"), [
    ({}, Caller.PLAINTEXT),
    (context(cert=False), Caller.ANONYMOUS),
    (context(tls_identity.pod_identity("team", "id", "id-1")), Caller.PEER),
    (context(tls_identity.operator_identity("team", "id")), Caller.OPERATOR),
    (context(tls_identity.client_identity("team", "id", "app")), Caller.CLIENT),
    # Another cluster's pod, another namespace's operator, a prefix trick, a bare prefix.
    (context(tls_identity.pod_identity("team", "other", "other-0")), Caller.FOREIGN),
    (context(tls_identity.operator_identity("other", "id")), Caller.FOREIGN),
    (context(tls_identity.pod_identity("team", "id-x", "id-x-0")), Caller.FOREIGN),
    (context(tls_identity.cluster_prefix("team", "id") + "/pod/"), Caller.FOREIGN),
    (context("DNS:id.team.svc"), Caller.FOREIGN),
])
def test_callers_are_classified_by_their_certificates_identity(
    auth: dict[str, list[bytes]], caller: Caller
) -> None:
    assert tls_identity.caller_of(auth, LOCAL) is caller


def test_a_short_lifetime_is_not_renewed_at_once(ca: certs.KeyPair) -> None:
    leaf = certs.issue(ca, pod_request(), NOW, validity=90)
    assert certs.leaf_verdict(leaf, ca.cert_pem, pod_request(), NOW) is LeafVerdict.KEEP
    assert certs.leaf_verdict(leaf, ca.cert_pem, pod_request(), NOW + 50) is LeafVerdict.KEEP
    assert certs.leaf_verdict(leaf, ca.cert_pem, pod_request(), NOW + 60) is \
        LeafVerdict.RENEWAL_DUE
