"""The shell that keeps a ClusteredServer's certificates issued (`certificates` decides).

Each pass that asks (`TlsIssuer.ensure`): read the CA Secret (create it with a fresh CA and the
operator's client certificate when missing), take the next step of the CA's rotation, renew the
operator's certificate when due, and make every pod's TLS Secret (`<pod>-tls`) hold a
certificate that `certificates.leaf_verdict` keeps and the current trust bundle. Every Secret is
owned by the ClusteredServer (garbage-collected with it). The result is what the operator's
Admin client needs to call the pods (`runtime_admin.AdminTls`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from gencluster.tls_identity import peer_server_name

from gencluster_operator import certificates, desired, names
from gencluster_operator.certificates import CaState, CaStep, KeyPair, LeafVerdict
from gencluster_operator.cluster_io import ApiError, KubernetesApi
from gencluster_operator.runtime_admin import AdminTls
from gencluster_operator.spec import cluster_spec

log = logging.getLogger("gencluster_operator.tls")


class NotOurs(Exception):
    """A Secret of the name we need exists and another object controls it."""


class TlsIssuer:
    """Issues and renews; stateless between calls (everything lives in the Secrets)."""

    def __init__(self, api: KubernetesApi) -> None:
        self.api = api

    def ensure(
        self, resource: Mapping[str, Any], pods: Iterable[str], pod_ips: Mapping[str, str],
        now: float,
    ) -> AdminTls:
        spec = cluster_spec(resource)
        state, operator = self._ca(resource, now)
        bundle = state.bundle()
        service_addresses = self._service_addresses(spec.namespace, spec.name)
        for pod in sorted(set(pods)):
            request = certificates.pod_request(
                spec.namespace, spec.name, pod,
                peer_service=names.peer_service_name(spec.name),
                client_service=names.client_service_name(spec.name),
                pod_ip=pod_ips.get(pod) or None, service_addresses=service_addresses,
            )
            self._pod_secret(resource, pod, request, state, bundle, now)
        return AdminTls(
            peer_port=names.tls_ports_for(spec.port)[0],
            server_name=peer_server_name(names.peer_service_name(spec.name), spec.namespace),
            root_certificates=bundle, certificate_chain=operator.cert_pem,
            private_key=operator.key_pem,
        )

    def _ca(self, resource: Mapping[str, Any], now: float) -> tuple[CaState, KeyPair]:
        spec = cluster_spec(resource)
        secret = self.api.read_secret(spec.namespace, names.ca_key_secret_name(spec.name))
        read = desired.ca_state_of(secret) if secret is not None else None
        if read is None:
            signing = certificates.new_ca(spec.namespace, spec.name, now)
            state = CaState(signing)
            operator = certificates.issue(
                signing, certificates.operator_request(spec.namespace, spec.name), now,
                spec.certificate_lifetime_seconds)
            self._write(resource, secret, state, operator)
            log.info("%s/%s: CA issued", spec.namespace, spec.name)
            return state, operator
        self._check_owned(secret or {}, resource)
        state, operator = read
        changed = False
        step = certificates.ca_step(state, now)
        if step is not CaStep.KEEP:
            fresh = (certificates.new_ca(spec.namespace, spec.name, now)
                     if step is CaStep.STAGE else None)
            state = certificates.apply_ca_step(state, step, now, fresh)
            log.info("%s/%s: CA rotation: %s", spec.namespace, spec.name, step.value)
            changed = True
        request = certificates.operator_request(spec.namespace, spec.name)
        if certificates.leaf_verdict(operator, state.signing.cert_pem, request, now) \
                is not LeafVerdict.KEEP:
            operator = certificates.issue(state.signing, request, now,
                                          spec.certificate_lifetime_seconds)
            changed = True
        if changed or self._public_stale(resource, state):
            self._write(resource, secret, state, operator)
        return state, operator

    def _write(self, resource: Mapping[str, Any], private_existing: Mapping[str, Any] | None,
               state: CaState, operator: KeyPair) -> None:
        """The CA key Secret first, then the public bundle (clients never see a CA the
        operator has not kept)."""
        spec = cluster_spec(resource)
        public, private = desired.ca_secrets(resource, state, operator)
        if private_existing is None:
            self.api.create(private)
        else:
            self._check_owned(private_existing, resource)
            self.api.patch(private_existing, {"data": private["data"]})
        existing = self.api.read_secret(spec.namespace, names.ca_secret_name(spec.name))
        if existing is None:
            self.api.create(public)
        else:
            self._check_owned(existing, resource)
            if (existing.get("data") or {}) != public["data"]:
                self.api.patch(existing, {"data": public["data"]})

    def _public_stale(self, resource: Mapping[str, Any], state: CaState) -> bool:
        spec = cluster_spec(resource)
        existing = self.api.read_secret(spec.namespace, names.ca_secret_name(spec.name))
        public, _ = desired.ca_secrets(resource, state, KeyPair(b"", b""))
        return existing is None or (existing.get("data") or {}) != public["data"]

    def _pod_secret(self, resource: Mapping[str, Any], pod: str,
                    request: certificates.LeafRequest, state: CaState, bundle: bytes,
                    now: float) -> None:
        namespace = cluster_spec(resource).namespace
        existing = self.api.read_secret(namespace, names.tls_secret_name(pod))
        leaf: KeyPair | None = None
        current_bundle = b""
        if existing is not None:
            self._check_owned(existing, resource)
            leaf, current_bundle = desired.pod_tls_of(existing)
        verdict = certificates.leaf_verdict(leaf, state.signing.cert_pem, request, now)
        if verdict is LeafVerdict.KEEP and current_bundle == bundle:
            return
        if verdict is not LeafVerdict.KEEP or leaf is None:
            leaf = certificates.issue(state.signing, request, now,
                                      cluster_spec(resource).certificate_lifetime_seconds)
            log.info("%s: certificate of pod %s issued (%s)", namespace, pod, verdict.value)
        wanted = desired.pod_tls_secret(resource, pod, leaf, bundle)
        if existing is None:
            self.api.create(wanted)
        else:
            self.api.patch(existing, {"data": wanted["data"]})

    def _service_addresses(self, namespace: str, cluster: str) -> list[str]:
        """The client Service's cluster IP and load-balancer addresses (SANs of every pod)."""
        try:
            service = self.api.read(
                f"/api/v1/namespaces/{namespace}/services/{names.client_service_name(cluster)}")
        except ApiError:
            return []
        if service is None:
            return []
        found = []
        cluster_ip = (service.get("spec") or {}).get("clusterIP")
        if cluster_ip and cluster_ip != "None":
            found.append(cluster_ip)
        for ingress in ((service.get("status") or {}).get("loadBalancer") or {}).get(
                "ingress") or []:
            if ingress.get("ip"):
                found.append(ingress["ip"])
        return found

    @staticmethod
    def _check_owned(secret: Mapping[str, Any], resource: Mapping[str, Any]) -> None:
        if not desired.controlled_by(secret, resource):
            name = (secret.get("metadata") or {}).get("name")
            raise NotOurs(f"Secret {name} exists and is not controlled by ClusteredServer "
                          f"{resource['metadata']['name']}; delete or rename it")
