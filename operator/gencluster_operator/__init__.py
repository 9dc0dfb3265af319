"""The gencluster operator: reconciles ClusteredServers into pods, Services, RBAC and Leases."""
