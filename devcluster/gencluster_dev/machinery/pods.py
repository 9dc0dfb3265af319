"""What every component reads the same way off Pod objects: readiness, named ports, and the
pods a Service selects.

The Service proxy, the Endpoints and Deployment controllers and the kubelet each decide from
these facts (which pods take traffic, which port a `targetPort` or probe names); one definition
keeps them agreeing, as `k8s.io/kubernetes/pkg/api/v1/pod` does for Kubernetes' components.
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


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def service_pods(service: dict, pods: list[dict]) -> list[dict]:
    """Pods in the Service's namespace matched by its (non-empty) selector, by name."""
    selector = (service.get("spec") or {}).get("selector") or {}
    if not selector:
        return []
    namespace = service["metadata"].get("namespace", "default")
    chosen = [p for p in pods
              if p["metadata"].get("namespace", "default") == namespace
              and _matches(selector, p["metadata"].get("labels") or {})
              and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
    return sorted(chosen, key=lambda p: p["metadata"]["name"])
