"""The certificates of one ClusteredServer: what it needs, when to renew, and how to make them.

Pure: the time is an argument, nothing is read from files or the network (key generation draws
from the operating system's random source through `cryptography`, as any key must).

What a ClusteredServer gets (docs/security.md):

- a CA of its own (ECDSA P-256), kept with its key in the CA Secret that only the operator
  reads. Its pods trust only this CA, so a pod of another ClusteredServer cannot even complete
  a handshake with them;
- a certificate per pod, in the pod's TLS Secret with the trust bundle: its identity
  (`gencluster.tls_identity.pod_identity`, a URI SAN) and the DNS names and addresses clients
  and peers reach it by (the pod's DNS name, the peer and client Services' names, the pod IP
  and the Service addresses once known);
- a client certificate for the operator (`operator_identity`), kept in the CA Secret.

Rotation without an outage:

- a leaf (pod or operator certificate) is renewed once two thirds of its lifetime have passed
  (`RENEW_AT_FRACTION`), or at once when it is missing, unreadable, issued by a CA that is not
  the signing one, or lacks a name it must carry. The runtime reads its files at every
  handshake, so the new certificate is used on the next connection; open connections carry on;
- the CA is renewed in two steps so that no pod ever sees a certificate its bundle cannot
  verify: at two thirds of its life a new CA is *staged* (added to every trust bundle, not
  used to sign); after `CA_PROPAGATION_SECONDS` it is *promoted* (signs every new leaf, which
  is then reissued); the old CA stays in the bundle until it expires (`ca_step`).
"""

from __future__ import annotations

import datetime
import enum
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from gencluster.tls_identity import operator_identity, pod_identity

CA_VALIDITY_SECONDS = 365 * 24 * 3600
LEAF_VALIDITY_SECONDS = 30 * 24 * 3600
RENEW_AT_FRACTION = 2 / 3
"""A certificate is renewed once this fraction of its lifetime has passed: a third of it is
left to propagate the new one (the kubelet refreshes Secret volumes within about a minute)."""

CA_PROPAGATION_SECONDS = 300
"""Between staging a new CA (in every bundle) and signing with it: time for every pod to load
the new bundle."""

CLOCK_SKEW_SECONDS = 300
"""Certificates are valid from this long before their issuing (at most a tenth of their
lifetime), for clocks a little behind."""


def _backdate(validity: float) -> float:
    return min(CLOCK_SKEW_SECONDS, validity / 10)


class CertificateError(ValueError):
    """A PEM that is not a usable certificate or key."""


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A PEM certificate and its PEM private key."""

    cert_pem: bytes
    key_pem: bytes


@dataclass(frozen=True, slots=True)
class Facts:
    """What the decisions need to know about a certificate."""

    not_before: float
    not_after: float
    issuer: str
    subject: str
    fingerprint: str
    uris: tuple[str, ...]
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    is_ca: bool

    def renewal_due(self, now: float, fraction: float = RENEW_AT_FRACTION) -> bool:
        """Past `fraction` of the lifetime (or not yet valid, or expired)."""
        lifetime = self.not_after - self.not_before
        return not self.not_before <= now < self.not_before + fraction * lifetime


@dataclass(frozen=True, slots=True)
class LeafRequest:
    """A leaf certificate a ClusteredServer needs."""

    common_name: str
    uri: str
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    server: bool = True
    client: bool = True


def _time(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_certificates(pem: bytes) -> list[x509.Certificate]:
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError as error:
        raise CertificateError(f"not a PEM certificate: {error}") from None
    return certificates


def facts(cert_pem: bytes) -> Facts:
    """The facts of the first certificate of `cert_pem`."""
    certificate = load_certificates(cert_pem)[0]
    try:
        sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = tuple(sans.get_values_for_type(x509.UniformResourceIdentifier))
        dns = tuple(sans.get_values_for_type(x509.DNSName))
        ips = tuple(str(ip) for ip in sans.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        uris, dns, ips = (), (), ()
    try:
        is_ca = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    return Facts(
        not_before=certificate.not_valid_before_utc.timestamp(),
        not_after=certificate.not_valid_after_utc.timestamp(),
        issuer=certificate.issuer.rfc4514_string(),
        subject=certificate.subject.rfc4514_string(),
        fingerprint=certificate.fingerprint(hashes.SHA256()).hex(),
        uris=uris,
        dns_names=dns,
        ip_addresses=ips,
        is_ca=is_ca,
    )


def new_ca(namespace: str, cluster: str, now: float,
           validity: float = CA_VALIDITY_SECONDS) -> KeyPair:
    """A fresh CA for `cluster`; its name carries the moment, so that a renewed CA is told
    from the old one by name too."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "gencluster"),
        # X.509 bounds each attribute to 64 characters; names up to 63 (namespace) and 253
        # (cluster) are cut, the moment kept (it tells a renewed CA from the old one).
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, namespace[:64]),
        x509.NameAttribute(NameOID.COMMON_NAME, f"{cluster[:48]} CA {int(now)}"[:64]),
    ])
    public = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_time(now - _backdate(validity)))
        .not_valid_after(_time(now + validity))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(certificate.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def issue(ca: KeyPair, request: LeafRequest, now: float,
          validity: float = LEAF_VALIDITY_SECONDS) -> KeyPair:
    """A leaf certificate for `request`, signed by `ca`, never outliving it."""
    try:
        ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    except (ValueError, TypeError) as error:
        raise CertificateError(f"the CA key is not usable: {error}") from None
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise CertificateError("the CA key must be an ECDSA key")
    ca_certificate = load_certificates(ca.cert_pem)[0]
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(request.uri)]
    names += [x509.DNSName(name) for name in dict.fromkeys(request.dns_names)]
    names += [x509.IPAddress(ipaddress.ip_address(ip))
              for ip in dict.fromkeys(request.ip_addresses)]
    usages = []
    if request.server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if request.client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    not_after = min(now + validity, ca_certificate.not_valid_after_utc.timestamp())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "gencluster"),
            x509.NameAttribute(NameOID.COMMON_NAME, request.common_name[:64]),
        ]))
        .issuer_name(ca_certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_time(now - _backdate(validity)))
        .not_valid_after(_time(not_after))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            ca_certificate.public_key()), critical=False)  # type: ignore[arg-type]
        .sign(ca_key, hashes.SHA256())
    )
    return KeyPair(certificate.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def signed_by(cert_pem: bytes, ca_pem: bytes) -> bool:
    """Whether the first certificate of `cert_pem` verifies against the first of `ca_pem`."""
    try:
        certificate = load_certificates(cert_pem)[0]
        authority = load_certificates(ca_pem)[0]
        certificate.verify_directly_issued_by(authority)
    except (CertificateError, ValueError, TypeError, IndexError):
        return False
    except Exception:  # cryptography's InvalidSignature
        return False
    return True


class LeafVerdict(enum.Enum):
    """Why a leaf must be (re)issued, or KEEP."""

    KEEP = "keep"
    MISSING = "missing"
    UNREADABLE = "unreadable"
    OTHER_ISSUER = "other-issuer"
    NAMES_CHANGED = "names-changed"
    RENEWAL_DUE = "renewal-due"


def leaf_verdict(existing: KeyPair | None, signing_ca_pem: bytes, request: LeafRequest,
                 now: float) -> LeafVerdict:
    """Whether the leaf in place serves `request` now; if not, why."""
    if existing is None or not existing.cert_pem or not existing.key_pem:
        return LeafVerdict.MISSING
    try:
        found = facts(existing.cert_pem)
    except CertificateError:
        return LeafVerdict.UNREADABLE
    if not signed_by(existing.cert_pem, signing_ca_pem):
        return LeafVerdict.OTHER_ISSUER
    if (request.uri not in found.uris
            or not set(request.dns_names) <= set(found.dns_names)
            or not {str(ipaddress.ip_address(ip)) for ip in request.ip_addresses}
            <= set(found.ip_addresses)):
        return LeafVerdict.NAMES_CHANGED
    if found.renewal_due(now):
        return LeafVerdict.RENEWAL_DUE
    return LeafVerdict.KEEP


# -- the CA and its rotation -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CaState:
    """The CA Secret's content as the decisions see it.

    `signing` signs every leaf; `staged` is a newer CA already in the bundle but not yet
    signing (since `staged_at`); `retired` are older CAs kept in the bundle until they
    expire (leaves they signed are still in use until reissued)."""

    signing: KeyPair
    staged: KeyPair | None = None
    staged_at: float = 0.0
    retired: tuple[bytes, ...] = ()

    def bundle(self) -> bytes:
        """The trust bundle every pod gets: signing, staged, retired."""
        parts = [self.signing.cert_pem]
        if self.staged is not None:
            parts.append(self.staged.cert_pem)
        parts.extend(self.retired)
        return b"".join(part if part.endswith(b"\n") else part + b"\n" for part in parts)


class CaStep(enum.Enum):
    KEEP = "keep"
    STAGE = "stage"
    PROMOTE = "promote"
    PRUNE = "prune"


def ca_step(state: CaState, now: float,
            propagation: float = CA_PROPAGATION_SECONDS) -> CaStep:
    """The next step of the CA's rotation (see the module docstring)."""
    expired = [pem for pem in state.retired if facts(pem).not_after <= now]
    if expired:
        return CaStep.PRUNE
    if state.staged is not None:
        return CaStep.PROMOTE if now >= state.staged_at + propagation else CaStep.KEEP
    if facts(state.signing.cert_pem).renewal_due(now):
        return CaStep.STAGE
    return CaStep.KEEP


def apply_ca_step(state: CaState, step: CaStep, now: float, fresh: KeyPair | None) -> CaState:
    """The state after `step`; STAGE needs `fresh`, the new CA."""
    if step is CaStep.STAGE:
        if fresh is None:
            raise ValueError("staging a CA needs the new CA")
        return CaState(state.signing, fresh, now, state.retired)
    if step is CaStep.PROMOTE and state.staged is not None:
        return CaState(state.staged, None, 0.0, (state.signing.cert_pem, *state.retired))
    if step is CaStep.PRUNE:
        kept = tuple(pem for pem in state.retired if facts(pem).not_after > now)
        return CaState(state.signing, state.staged, state.staged_at, kept)
    return state


def split_bundle(pem: bytes) -> list[bytes]:
    """Each certificate of a PEM bundle, as its own PEM."""
    return [certificate.public_bytes(serialization.Encoding.PEM)
            for certificate in load_certificates(pem)] if pem.strip() else []


# -- what a ClusteredServer's pods need ------------------------------------------------------


def pod_request(namespace: str, cluster: str, pod: str, *, peer_service: str,
                client_service: str, pod_ip: str | None = None,
                service_addresses: Iterable[str] = ()) -> LeafRequest:
    """The certificate of one pod: its identity, its DNS names (own, peer Service, client
    Service, short and fully qualified) and its addresses when known."""
    dns: list[str] = []
    for base in (f"{pod}.{peer_service}", peer_service, client_service):
        dns += [f"{base}.{namespace}.svc", f"{base}.{namespace}.svc.cluster.local"]
    dns += [client_service, f"{client_service}.{namespace}"]
    ips: Sequence[str] = [*([pod_ip] if pod_ip else []), *service_addresses]
    return LeafRequest(
        common_name=pod, uri=pod_identity(namespace, cluster, pod),
        dns_names=tuple(dns), ip_addresses=tuple(dict.fromkeys(ips)),
    )


def operator_request(namespace: str, cluster: str) -> LeafRequest:
    """The operator's client certificate for `cluster`."""
    return LeafRequest(common_name="gencluster-operator",
                       uri=operator_identity(namespace, cluster), server=False)
