"""gencluster: highly available, stateful Python servers on Kubernetes."""
