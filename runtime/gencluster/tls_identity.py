"""Who is on the other end of a TLS connection: the certificate identities of gencluster.

The contract between the operator (which issues certificates) and the runtime (which checks
them in its one authentication gate, `gencluster.auth`). An identity is the URI
subject-alternative name of a certificate, in SPIFFE form, so that it cannot be confused with a
host name:

- a pod of a ClusteredServer: `spiffe://gencluster.io/ns/<namespace>/csrv/<cluster>/pod/<pod>`;
- the operator: `spiffe://gencluster.io/ns/<namespace>/csrv/<cluster>/operator` (the operator
  holds one client certificate per ClusteredServer, issued by that cluster's CA).

Each ClusteredServer has its own CA, and a pod trusts only it: a certificate of another
cluster fails the handshake before any identity is read; the identity check then tells the
cluster's pods (Peer service, read-only Admin) from the operator (every Admin method).

Pure: names and decisions, no sockets, no files.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

TRUST_DOMAIN = "gencluster.io"

CERT_FILE = "tls.crt"
"""PEM certificate chain of the pod (or the operator), the key usage of a kubernetes.io/tls
Secret."""

KEY_FILE = "tls.key"
"""PEM private key of that certificate."""

CA_FILE = "ca.crt"
"""PEM trust bundle: the cluster's CA (during a CA rotation, the old and the new one)."""

CA_KEY_FILE = "ca.key"
"""The CA's private key: only in the CA Secret, which only the operator reads."""


def cluster_prefix(namespace: str, cluster: str) -> str:
    return f"spiffe://{TRUST_DOMAIN}/ns/{namespace}/csrv/{cluster}"


def pod_identity(namespace: str, cluster: str, pod: str) -> str:
    """The identity of one pod of `cluster`."""
    return f"{cluster_prefix(namespace, cluster)}/pod/{pod}"


def operator_identity(namespace: str, cluster: str) -> str:
    """The identity the operator presents to the pods of `cluster`."""
    return f"{cluster_prefix(namespace, cluster)}/operator"


def client_identity(namespace: str, cluster: str, client: str) -> str:
    """The identity of a client certificate (`spec.clientAuth: MutualTLS`)."""
    return f"{cluster_prefix(namespace, cluster)}/client/{client}"


def peer_server_name(peer_service: str, namespace: str) -> str:
    """The DNS name every pod certificate of a cluster carries and peers (and the operator)
    verify: the headless peer Service's. Peers dial pod IPs, which a pod may not know when
    its certificate is issued; the name is fixed."""
    return f"{peer_service}.{namespace}.svc"


def client_server_name(client_service: str, namespace: str) -> str:
    """The DNS name clients verify: the client Service's, on every pod certificate (a
    failover moves the Service to another pod, so every pod must answer to it)."""
    return f"{client_service}.{namespace}.svc"


class Caller(enum.Enum):
    """What a connection proves about its caller."""

    PLAINTEXT = "plaintext"
    """No TLS at all."""

    ANONYMOUS = "anonymous"
    """TLS without a client certificate."""

    PEER = "peer"
    """A pod of this ClusteredServer."""

    OPERATOR = "operator"
    """The operator."""

    CLIENT = "client"
    """A client certificate issued for this ClusteredServer."""

    FOREIGN = "foreign"
    """A verified certificate with no identity of this ClusteredServer."""


@dataclass(frozen=True, slots=True)
class LocalIdentity:
    """What a pod knows about itself to judge callers."""

    namespace: str
    cluster: str

    def classify(self, uris: Sequence[str]) -> Caller:
        """The caller a verified certificate's URI SANs make."""
        prefix = cluster_prefix(self.namespace, self.cluster)
        for uri in uris:
            if uri == operator_identity(self.namespace, self.cluster):
                return Caller.OPERATOR
            if uri.startswith(prefix + "/pod/") and len(uri) > len(prefix) + 5:
                return Caller.PEER
            if uri.startswith(prefix + "/client/") and len(uri) > len(prefix) + 8:
                return Caller.CLIENT
        return Caller.FOREIGN


def caller_of(auth_context: Mapping[str, Sequence[bytes]], local: LocalIdentity) -> Caller:
    """Classify a call from gRPC's auth context (`ServicerContext.auth_context()`).

    gRPC fills `x509_subject_alternative_name` (and `peer_uri`) only for a certificate it
    verified against the server's trust bundle, so the URIs here are proven."""
    if b"ssl" not in auth_context.get("transport_security_type", ()):
        return Caller.PLAINTEXT
    if not auth_context.get("x509_pem_cert"):
        return Caller.ANONYMOUS
    uris = [
        value.decode(errors="replace")
        for key in ("peer_uri", "x509_subject_alternative_name")
        for value in auth_context.get(key, ())
        if value.startswith(b"spiffe://")
    ]
    return local.classify(uris)
