"""A local Kubernetes control plane: API server, process kubelet, Service proxy, faults.

Layers, each a sub-package; the arrow lists what a layer may import, nothing imports the
other way:

    machinery/    the API's rules as pure functions and data: objects and resourceVersions
                  (store), schemas, CEL, defaults, validation, patches, server-side apply,
                  selectors, Tables, discovery, CRDs, Status errors, protobuf bodies,
                  Pod facts (readiness, named ports, a Service's pods).
                  Imports no other layer.
    apiserver/    the kube-apiserver: HTTP surface, verbs (operations), authentication,
                  watch streams, SQLite persistence, the in-process garbage collector.
                  -> machinery
    client/       an ordinary asyncio REST client, informer and reconcile loop, as any
                  controller has.
                  Imports no other layer.
    node/         the process kubelet: pods, containers, probes, addresses.
                  -> machinery, client
    network/      the Service proxy, nftables faults.
                  -> machinery, client
    controllers/  the Deployment, Endpoints and volume controllers; supervised operators.
                  -> machinery, client

`up` (start and stop everything in order) and `cli` (`gencluster dev`, `python -m
gencluster_dev`) are the only modules that know every layer: they wire them.

The rule behind it: node, network and controllers reach the API server only over HTTP, with
the client, like the real kubelet, kube-proxy and controllers do, so they exercise the same
surface kubectl and kopf use; they share pure helpers from machinery, never each other's code.
"""
