"""What every component reads the same way off a Pod object: readiness and named ports.

The Service proxy, the Deployment controller and the kubelet each decide from these two facts
(which pods take traffic, which port a `targetPort` or probe names); one definition keeps them
agreeing, as `k8s.io/kubernetes/pkg/api/v1/pod` does for Kubernetes' own components.
"""

from __future__ import annotations


def pod_is_ready(pod: dict) -> bool:
    """Ready condition True, an IP, and not terminating (like EndpointSlice `ready`)."""
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return False
    status = pod.get("status") or {}
    if not status.get("podIP"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in status.get("conditions") or [])


def resolve_port(pod: dict, port: int | str, container: dict | None = None) -> int | None:
    """A port number, or a named port looked up in the container (or every container)."""
    if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
        return int(port)
    containers = [container] if container else (pod.get("spec", {}).get("containers") or [])
    for candidate in containers:
        for declared in candidate.get("ports") or []:
            if declared.get("name") == port:
                return int(declared["containerPort"])
    return None
