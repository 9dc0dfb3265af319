"""The operator's identity in tests: the ServiceAccount, ClusterRole and ClusterRoleBinding the
Helm chart creates, rendered by Helm's engine from charts/gencluster and applied to a local
control plane that enforces RBAC, and a kubeconfig with that ServiceAccount's token.

So every test that runs the operator runs it with exactly the permissions `helm install`
grants: a verb missing from the chart fails the tests as a 403 would fail production. The
chart's ValidatingAdmissionPolicy and binding are applied with them, so the pods' own writes
(their role label) pass the admission a real cluster would run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from gencluster_testing.devcluster_process import DevClusterProcess

PROJECT = Path(__file__).resolve().parents[2]
CHART = PROJECT / "charts" / "gencluster"
RELEASE = "gencluster"
NAMESPACE = "gencluster-system"
RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
              "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
TOKEN_DURATION = "48h"


def chart_rbac_objects(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    import helm_python as helm

    chart = helm.Chart.load(str(CHART))
    try:
        rendered = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE,
                                is_install=True)
    finally:
        chart.close()
    return [doc for path, text in rendered.items() if not path.endswith("NOTES.txt")
            for doc in yaml.safe_load_all(text) if doc and doc.get("kind") in RBAC_KINDS]


def operator_kubeconfig(cluster: DevClusterProcess) -> Path:
    """A kubeconfig for `cluster` as the chart's operator ServiceAccount (made once per
    cluster: the RBAC objects are applied and a token requested the first time)."""
    path = cluster.dir.parent / f"{cluster.dir.name}-operator-kubeconfig"
    if path.exists():
        return path
    objects = chart_rbac_objects()
    cluster.kubectl("create", "namespace", NAMESPACE, check=False)
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))
    (account,) = [o for o in objects if o["kind"] == "ServiceAccount"]
    token = cluster.kubectl("create", "token", account["metadata"]["name"], "-n", NAMESPACE,
                            "--duration", TOKEN_DURATION).stdout.strip()
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    for user in config["users"]:
        user["user"] = {"token": token}
    partial = path.with_suffix(".partial")
    partial.write_text(yaml.safe_dump(config))
    partial.chmod(0o600)
    partial.replace(path)
    return path
