"""The gencluster operator: reconciles ClusteredServers into pods, Services, RBAC and Leases.

The pure core (no sockets, no clocks, no kopf):

- `names`: every label, annotation, child-object name and runtime variable name;
- `spec`: a typed view of a ClusteredServer's spec;
- `desired`: builders of every child object (the pod is the runtime contract,
  docs/runtime-config.md);
- `observed`: what the shell saw (pods, Lease, runtime reports) as frozen values, and parsers;
- `assessment`: the facts plan and status share (who is active, what is missing, outdated...);
- `actions` and `plan`: what to do next, at most one disruptive step per pass;
- `status`: the status subresource and the Events its transitions deserve;
- `events`: the fixed vocabulary of Event, failover and condition reasons.

The shell observes, calls these functions and performs their results:

- `handlers`: kopf wiring (which events reconcile which ClusteredServer) and kopf's settings;
- `reconciler`: one pass per cluster (observe, plan, act, status, Events) and the little the
  shell remembers between passes;
- `cluster_io`: the Kubernetes API calls; `runtime_admin`: the pods' Admin gRPC calls
  (status, switchover, demote, and the merge of partition recovery);
- `metrics`: Prometheus metrics; `main`: the command line (`gencluster operator`).
"""
