"""A local Kubernetes control plane: API server, process kubelet, Service proxy, faults."""
