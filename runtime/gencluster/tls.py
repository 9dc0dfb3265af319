"""TLS for a runtime process: its server credentials and the channels it opens to its peers.

When `gencluster run` is given a TLS directory (GENCLUSTER_TLS_DIR, the pod's TLS Secret
mounted by the operator: `tls.crt`, `tls.key`, `ca.crt`), it serves three ports:

- the client port: TLS with the pod's certificate; with `GENCLUSTER_CLIENT_AUTH=MutualTLS`
  a client must present a certificate of the cluster's CA;
- the peer port: mutual TLS, the Peer and Admin services (who may call which method is the
  gate's decision, `gencluster.auth`, by certificate identity);
- the health port: plaintext grpc.health.v1 only, for the kubelet's gRPC probes (which cannot
  speak TLS), on a server of its own so that no other service is ever reachable without TLS.

Rotation: the files are read again at every handshake when they changed (the server's
credentials come from a fetcher gRPC calls per handshake; a channel to a peer is made with the
files of the moment), so a renewed certificate or trust bundle is used on the next connection
and open connections carry on.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from gencluster.tls_identity import CA_FILE, CERT_FILE, KEY_FILE

log = logging.getLogger("gencluster.tls")

CLIENT_AUTH_NONE = "None"
CLIENT_AUTH_MUTUAL = "MutualTLS"
CLIENT_AUTH_MODES = (CLIENT_AUTH_NONE, CLIENT_AUTH_MUTUAL)


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """The TLS part of a runtime's configuration (docs/runtime-config.md)."""

    directory: str
    peer_port: int
    health_port: int
    peer_server_name: str
    """The name every pod certificate of the cluster carries, verified on peer connections."""
    client_auth: str = CLIENT_AUTH_NONE


class TlsFiles:
    """The certificate, key and trust bundle in one directory, read again when they change.

    Thread-safe: gRPC calls the server's fetcher from its own threads."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._lock = threading.Lock()
        self._stamp: tuple[float, ...] | None = None
        self._contents: tuple[bytes, bytes, bytes] = (b"", b"", b"")

    def _paths(self) -> tuple[Path, Path, Path]:
        return (self.directory / CERT_FILE, self.directory / KEY_FILE,
                self.directory / CA_FILE)

    def read(self) -> tuple[bytes, bytes, bytes]:
        """(certificate chain, key, trust bundle); raises OSError when one is missing."""
        paths = self._paths()
        stamp = tuple(path.stat().st_mtime_ns for path in paths) + tuple(
            float(path.stat().st_ino) for path in paths)
        with self._lock:
            if stamp != self._stamp:
                contents = tuple(path.read_bytes() for path in paths)
                if not all(contents):
                    raise OSError(f"an empty file in {self.directory}")
                self._contents = (contents[0], contents[1], contents[2])
                self._stamp = stamp
            return self._contents

    def changed_since(self, stamp: tuple[bytes, bytes, bytes]) -> bool:
        return self.read() != stamp


def server_credentials(files: TlsFiles, *, require_client_cert: bool) -> grpc.ServerCredentials:
    """Credentials that present the current certificate at every handshake and, with
    `require_client_cert`, require and verify a client certificate against the current
    bundle. gRPC cannot ask for a certificate without requiring it, hence the separate ports."""
    cert, key, bundle = files.read()
    served = [cert]

    def configuration(cert: bytes, key: bytes, bundle: bytes) -> object:
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=bundle)

    def fetch() -> object | None:
        try:
            current, current_key, current_bundle = files.read()
        except OSError as error:
            log.warning("TLS files unreadable, serving the previous ones: %s", error)
            return None
        if current == served[0] and current_bundle == bundle_seen[0]:
            return None  # unchanged: gRPC keeps the configuration it has
        served[0], bundle_seen[0] = current, current_bundle
        log.info("TLS certificate or trust bundle changed in %s: serving the new one",
                 files.directory)
        return configuration(current, current_key, current_bundle)

    bundle_seen = [bundle]
    return grpc.dynamic_ssl_server_credentials(
        configuration(cert, key, bundle), fetch,
        require_client_authentication=require_client_cert,
    )


def channel_credentials(files: TlsFiles) -> grpc.ChannelCredentials:
    """Mutual TLS to a peer: the current certificate as the client's, the bundle as roots."""
    cert, key, bundle = files.read()
    return grpc.ssl_channel_credentials(root_certificates=bundle, private_key=key,
                                        certificate_chain=cert)


def tls_stamp(settings: TlsSettings | None) -> object:
    """What changes when the TLS files change (None without TLS), for callers that keep a
    channel and must make a new one after a renewal."""
    if settings is None:
        return None
    directory = Path(settings.directory)
    try:
        return tuple(
            (directory / name).stat().st_mtime_ns for name in (CERT_FILE, KEY_FILE, CA_FILE))
    except OSError:
        return None


def peer_target(address: str, peer_port: int) -> str:
    """`address` (a pod's `host:port`, its client port: what the Lease, Hellos and Demote
    requests carry) with the peer port instead. Every pod of a cluster serves the same ports,
    so a pod's client address names its peer address too."""
    host = address.rsplit(":", 1)[0] if ":" in address else address
    return f"{host}:{peer_port}"


def peer_channel(
    settings: TlsSettings | None, address: str, options: Sequence[tuple[str, object]] = (),
) -> grpc.aio.Channel:
    """A channel for Peer and Admin calls to the pod at `address`: mutual TLS to its peer
    port, verified against the cluster's name, when TLS is on; plaintext to `address`
    otherwise."""
    if settings is None:
        return grpc.aio.insecure_channel(address, options=list(options))
    return grpc.aio.secure_channel(
        peer_target(address, settings.peer_port),
        channel_credentials(TlsFiles(settings.directory)),
        options=[*options, ("grpc.ssl_target_name_override", settings.peer_server_name)],
    )
