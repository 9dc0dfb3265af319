"""The limits a user may override (docs/limits.md): `spec.runtime.maxMessageBytes` and
`spec.runtime.replyTableMaxBytes` travel from the CRD through the operator's pod builder to
`gencluster run`, with the same ranges at every step; unset, nothing about existing pods
changes (no rolling update after an operator upgrade)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from gencluster import limits
from gencluster.codec import DEFAULT_MAX_BYTES
from gencluster.replies import DEFAULT_MAX_REPLY_BYTES
from gencluster.run import ConfigError, build_config
from gencluster_operator import desired
from gencluster_operator.names import RuntimeEnv

from tests.operator.test_plan import resource

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
LIMITS_DOC = ROOT / "docs" / "limits.md"


def runtime_schema() -> dict[str, Any]:
    crd = yaml.safe_load(next((ROOT / "crds").glob("*.yaml")).read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    properties: dict[str, Any] = spec["properties"]["runtime"]["properties"]
    return properties


def env(pod: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"] if "value" in e}


def test_the_crd_ranges_are_the_runtimes() -> None:
    schema = runtime_schema()
    message = schema["maxMessageBytes"]
    table = schema["replyTableMaxBytes"]
    assert (message["minimum"], message["maximum"]) == (
        limits.MIN_MESSAGE_BYTES, limits.MAX_MESSAGE_BYTES
    )
    assert (table["minimum"], table["maximum"]) == (
        limits.MIN_REPLY_TABLE_BYTES, limits.MAX_REPLY_TABLE_BYTES
    )
    # One record at the largest message must fit every message that carries records.
    assert 2 * limits.MAX_MESSAGE_BYTES <= limits.MAX_RECORD_MESSAGE_BYTES


def test_set_limits_reach_every_pod_and_roll_them() -> None:
    plain = resource()
    tuned = resource(runtime={"deduplicationWindowSeconds": 300,
                              "maxMessageBytes": 8 * 1024 * 1024,
                              "replyTableMaxBytes": 256 * 1024 * 1024})
    values = env(desired.pod(tuned, 2))
    assert values[RuntimeEnv.MAX_MESSAGE_BYTES] == str(8 * 1024 * 1024)
    assert values[RuntimeEnv.REPLY_TABLE_MAX_BYTES] == str(256 * 1024 * 1024)
    assert desired.template_hash(tuned) != desired.template_hash(plain)


def test_unset_limits_change_nothing_about_existing_pods() -> None:
    plain = resource()
    explicit_window = resource(runtime={"deduplicationWindowSeconds": 300})
    values = env(desired.pod(plain, 0))
    assert RuntimeEnv.MAX_MESSAGE_BYTES not in values
    assert RuntimeEnv.REPLY_TABLE_MAX_BYTES not in values
    assert desired.template_hash(plain) == desired.template_hash(explicit_window)


VALID = {
    "POD_NAME": "ids-0",
    "POD_NAMESPACE": "default",
    "POD_IP": "127.0.0.1",
    "GENCLUSTER_SERVER": "gencluster_examples.id_server:IdServer",
    "GENCLUSTER_CLUSTER": "ids",
    "GENCLUSTER_LEASE_NAME": "ids",
    "GENCLUSTER_PEER_TOKEN": "t" * 32,
    "GENCLUSTER_LEASE_DURATION_SECONDS": "3",
    "GENCLUSTER_RENEW_DEADLINE_SECONDS": "2",
    "GENCLUSTER_RETRY_PERIOD_SECONDS": "1",
    "GENCLUSTER_PORT": "50051",
    "GENCLUSTER_METRICS_PORT": "9090",
    "GENCLUSTER_ARGS": "{}",
    "GENCLUSTER_REPLICATION_MODE": "Sync",
    "GENCLUSTER_MIN_SYNC_STANDBYS": "1",
    "GENCLUSTER_PARTITION_POLICY": "Fenced",
    "GENCLUSTER_DEDUPLICATION_WINDOW_SECONDS": "300",
    "GENCLUSTER_MAX_MESSAGE_BYTES": str(DEFAULT_MAX_BYTES),
    "GENCLUSTER_REPLY_TABLE_MAX_BYTES": str(DEFAULT_MAX_REPLY_BYTES),
}


def test_gencluster_run_takes_the_limits_within_their_ranges() -> None:
    config = build_config({**VALID, "GENCLUSTER_MAX_MESSAGE_BYTES": "1048576",
                           "GENCLUSTER_REPLY_TABLE_MAX_BYTES": "2097152"})
    assert (config.max_message_bytes, config.reply_table_max_bytes) == (1048576, 2097152)
    defaults = build_config(VALID)
    assert (defaults.max_message_bytes, defaults.reply_table_max_bytes) == (
        DEFAULT_MAX_BYTES, DEFAULT_MAX_REPLY_BYTES
    )
    for name, value in (("GENCLUSTER_MAX_MESSAGE_BYTES", str(64 * 1024 * 1024)),
                        ("GENCLUSTER_MAX_MESSAGE_BYTES", "1"),
                        ("GENCLUSTER_REPLY_TABLE_MAX_BYTES", "1000")):
        with pytest.raises(ConfigError, match=name):
            build_config({**VALID, name: value})


def test_docs_limits_lists_every_limit_and_how_to_override_it() -> None:
    doc = LIMITS_DOC.read_text()
    for name in ("MAX_REQUEST_ID_BYTES", "MAX_TOPIC_BYTES", "MAX_BATCH_BYTES",
                 "MAX_RECORD_MESSAGE_BYTES", "MAX_ERROR_MESSAGE_BYTES", "MAX_PAUSE_SECONDS",
                 "MAX_IDENTITY_BYTES", "MAX_ADDRESS_BYTES", "MAX_ORIGIN_FIELD_BYTES",
                 "MAX_ENTRY_BYTES", "MERGE_REPLY_BYTES"):
        assert f"{int(getattr(limits, name)):,}" in doc, name
    for field in ("spec.runtime.maxMessageBytes", "spec.runtime.replyTableMaxBytes",
                  "spec.runtime.deduplicationWindowSeconds", RuntimeEnv.MAX_MESSAGE_BYTES,
                  RuntimeEnv.REPLY_TABLE_MAX_BYTES):
        assert field in doc, field
