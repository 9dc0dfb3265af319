"""The monitoring pack (#15) against what runs: a ClusteredServer's PodMonitor, and every
query of the chart's alert rules and Grafana dashboard checked against the `/metrics` of a
running operator and running server pods (metric names, label matchers, `by` labels).

The PodMonitor CRD is a minimal stand-in for prometheus-operator's (group, kind and plural as
upstream, schema left open): what is tested is the operator's side (created, kept, deleted,
and a Warning while the API does not exist), not prometheus-operator. No Prometheus runs here,
so the PromQL itself is not evaluated: the checks are on names and labels."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml
from gencluster_testing.devcluster_process import DevClusterProcess
from gencluster_testing.operator_process import (
    ID_SERVER,
    OperatorProcess,
    create_namespace,
    events,
    get_json,
    kill_active_and_wait,
    pod_names,
    serving,
)
from gencluster_testing.waiting import wait_for
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "gencluster"
NAME = "id-server"
NAMESPACE = "monitoring-pack"
DEADLINE = 90.0
POD_MONITOR_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "podmonitors.monitoring.coreos.com"},
    "spec": {
        "group": "monitoring.coreos.com",
        "scope": "Namespaced",
        "names": {"kind": "PodMonitor", "listKind": "PodMonitorList", "plural": "podmonitors",
                  "singular": "podmonitor"},
        "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
            "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        }}],
    },
}
PROMETHEUS_TARGET_LABELS = {"namespace", "pod", "container", "endpoint", "instance", "job"}
"""Labels prometheus-operator gives every series it scrapes through a PodMonitor."""
PROMQL_WORDS = {"by", "without", "sum", "max", "min", "count", "rate", "increase",
                "histogram_quantile", "label_values", "on", "ignoring", "and", "or", "unless"}

Series = dict[str, set[str]]
"""Sample name (as Prometheus stores it: `_total`, `_bucket`...) → the label names it has."""


def scrape(url: str) -> Series:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    found: Series = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, set()).update(sample.labels)
    return found


def apply_id_server(dev_cluster: DevClusterProcess, **monitoring: Any) -> None:
    manifest = yaml.safe_load(ID_SERVER.read_text())
    manifest["spec"]["monitoring"] = {"podMonitor": monitoring}
    dev_cluster.kubectl("apply", "-n", NAMESPACE, "-f", "-", input=yaml.safe_dump(manifest))


def pod_monitor(dev_cluster: DevClusterProcess) -> dict[str, Any] | None:
    result = dev_cluster.kubectl("get", "podmonitors.monitoring.coreos.com", NAME, "-n",
                                 NAMESPACE, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


@pytest.fixture(scope="module")
def scraped(dev_cluster: DevClusterProcess, operator: OperatorProcess) -> Iterator[Series]:
    """A ClusteredServer with its PodMonitor, after one failover: the union of what the
    operator's `/metrics` and every pod's metrics port (as its PodMonitor names it) serve,
    with the labels the PodMonitor's relabeling adds."""
    create_namespace(dev_cluster, NAMESPACE)
    apply_id_server(dev_cluster, enabled=True)
    before = wait_for(lambda: serving(dev_cluster, NAMESPACE, NAME), DEADLINE,
                      message=lambda: f"id-server Ready\n{operator.output()[-3000:]}")
    # No PodMonitor API yet: one Warning, and the cluster serves regardless.
    (warning,) = wait_for(lambda: events(dev_cluster, NAMESPACE, "PodMonitorUnavailable"),
                          DEADLINE, message="a PodMonitorUnavailable Event")
    assert warning["type"] == "Warning" and "prometheus-operator" in warning["message"]

    dev_cluster.kubectl("apply", "-f", "-", input=json.dumps(POD_MONITOR_CRD))
    apply_id_server(dev_cluster, enabled=True, interval="15s")  # a new generation: rechecked
    monitor = wait_for(lambda: pod_monitor(dev_cluster), DEADLINE, message="the PodMonitor")
    kill_active_and_wait(dev_cluster, NAMESPACE, NAME, before["status"], DEADLINE,
                         "a failover, so that the failover series exist")
    wait_for(lambda: serving(dev_cluster, NAMESPACE, NAME), DEADLINE, message="serving again")

    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    added = PROMETHEUS_TARGET_LABELS | {r["targetLabel"] for r in endpoint["relabelings"]}
    found: Series = {}
    for name in pod_names(dev_cluster, NAMESPACE, NAME):
        pod = get_json(dev_cluster, "pod", name, "-n", NAMESPACE)
        labels = pod["metadata"]["labels"]
        assert all(labels.get(k) == v for k, v in monitor["spec"]["selector"]
                   ["matchLabels"].items()), f"the PodMonitor selects {name}"
        (port,) = [p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]
                   if p["name"] == endpoint["port"]]
        url = f"http://{pod['status']['podIP']}:{port}{endpoint['path']}"
        for sample, label_names in scrape(url).items():
            found.setdefault(sample, set()).update(label_names | added)
    for sample, label_names in scrape(f"http://127.0.0.1:{operator.metrics_port}/metrics").items():
        found.setdefault(sample, set()).update(label_names | {"instance", "job"})
    yield found


def rendered_queries() -> list[tuple[str, str]]:
    """(where, PromQL) of every alert rule and every dashboard target and variable."""
    chart = helm.Chart.load(str(CHART))
    try:
        rendered = chart.render({"prometheusRule": {"enabled": True},
                                 "grafanaDashboard": {"enabled": True}},
                                name="gencluster", namespace="gencluster-system",
                                is_install=True)
    finally:
        chart.close()
    objects = [doc for path, text in rendered.items() if not path.endswith("NOTES.txt")
               for doc in yaml.safe_load_all(text) if doc]
    queries = []
    (rule,) = [o for o in objects if o["kind"] == "PrometheusRule"]
    for group in rule["spec"]["groups"]:
        queries += [(f"alert {r['alert']}", r["expr"]) for r in group["rules"]]
    (config_map,) = [o for o in objects if o["kind"] == "ConfigMap"
                     and o["metadata"]["name"].endswith("-dashboard")]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["gencluster.json"])
    for panel in dashboard["panels"]:
        queries += [(f"panel {panel['title']!r}", t["expr"]) for t in panel["targets"]]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            queries.append((f"variable {variable['name']}", variable["query"]))
    return queries


def metric_names(expression: str) -> set[str]:
    return set(re.findall(r"\b(gencluster_[a-z_]+)\b", expression))


def matcher_labels(expression: str) -> set[str]:
    """Labels named in `{...}` selectors."""
    labels = set()
    for selector in re.findall(r"\{([^}]*)\}", expression):
        labels.update(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", selector))
    return labels


def grouping_labels(expression: str) -> set[str]:
    """Labels of `by (...)` clauses and of label_values(metric, label)."""
    labels = set()
    for group in re.findall(r"\bby\s*\(([^)]*)\)", expression):
        labels.update(label.strip() for label in group.split(",") if label.strip())
    labels.update(re.findall(r"label_values\([^,]+,\s*(\w+)\)", expression))
    return labels - PROMQL_WORDS


def test_the_pod_monitor_follows_the_spec(dev_cluster: DevClusterProcess,
                                          scraped: Series) -> None:
    monitor = pod_monitor(dev_cluster)
    assert monitor is not None
    assert monitor["spec"]["podMetricsEndpoints"][0]["interval"] == "15s"
    apply_id_server(dev_cluster, enabled=False)
    wait_for(lambda: pod_monitor(dev_cluster) is None or None, DEADLINE,
             message="the PodMonitor deleted once disabled")


def test_every_rule_and_panel_names_metrics_and_labels_that_exist(scraped: Series) -> None:
    queries = rendered_queries()
    assert len(queries) >= 20, queries
    problems = []
    for where, expression in queries:
        names = metric_names(expression)
        if not names:
            problems.append(f"{where}: no gencluster metric in {expression!r}")
        missing = {name for name in names if name not in scraped}
        if missing:
            problems.append(f"{where}: {sorted(missing)} not served")
            continue
        available = set().union(*(scraped[name] for name in names))
        unknown = (matcher_labels(expression) | grouping_labels(expression)) - available
        if unknown:
            problems.append(f"{where}: labels {sorted(unknown)} not on {sorted(names)}")
    assert not problems, "\n".join(problems)


def test_the_rules_cover_what_the_issue_asks(scraped: Series) -> None:
    alerts = {where.removeprefix("alert ") for where, _ in rendered_queries()
              if where.startswith("alert ")}
    assert {"GenclusterNoActive", "GenclusterStateLost", "GenclusterSplitBrain",
            "GenclusterReplicationLag", "GenclusterFrequentFailovers",
            "GenclusterMergeFailed"} <= alerts
