"""The unmodified `kubernetes` Python client: Leases, optimistic concurrency, watch, 410."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from tests.devcluster.conftest import RunningApiServer

pytestmark = pytest.mark.integration


def lease_body(name: str, holder: str) -> client.V1Lease:
    return client.V1Lease(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1LeaseSpec(holder_identity=holder, lease_duration_seconds=15,
                                renew_time=datetime.now(UTC), lease_transitions=0),
    )


def test_lease_create_replace_and_stale_conflict(kube_client: Any, namespace: str) -> None:
    leases = client.CoordinationV1Api(kube_client)
    created = leases.create_namespaced_lease(namespace, lease_body("l", "a"))
    assert created.spec.holder_identity == "a"
    created.spec.holder_identity = "b"
    replaced = leases.replace_namespaced_lease("l", namespace, created)
    assert replaced.spec.holder_identity == "b"
    assert int(replaced.metadata.resource_version) > int(created.metadata.resource_version)
    created.spec.holder_identity = "c"  # still carries the old resourceVersion
    with pytest.raises(ApiException) as caught:
        leases.replace_namespaced_lease("l", namespace, created)
    assert caught.value.status == 409
    assert "the object has been modified" in caught.value.body
    with pytest.raises(ApiException) as caught:
        leases.create_namespaced_lease(namespace, lease_body("l", "z"))
    assert caught.value.status == 409
    assert leases.read_namespaced_lease("l", namespace).spec.holder_identity == "b"


def test_two_clients_racing_for_one_lease_have_exactly_one_winner(
    apiserver: RunningApiServer, namespace: str
) -> None:
    leases = []
    for _ in range(2):
        configuration = client.Configuration()
        configuration.host = apiserver.url
        configuration.api_key = {"authorization": "Bearer test-admin-token"}
        leases.append(client.CoordinationV1Api(client.ApiClient(configuration)))
    leases[0].create_namespaced_lease(namespace, lease_body("race", ""))
    for _round in range(5):
        seen = [api.read_namespaced_lease("race", namespace) for api in leases]
        assert seen[0].metadata.resource_version == seen[1].metadata.resource_version
        barrier = threading.Barrier(2)
        outcomes: list[str] = [""] * 2

        def take(i: int, seen: list[Any] = seen, barrier: threading.Barrier = barrier,
                 outcomes: list[str] = outcomes, round_: int = _round) -> None:
            record = seen[i]
            record.spec.holder_identity = f"candidate-{i}-{round_}"  # a real change
            barrier.wait()
            try:
                leases[i].replace_namespaced_lease("race", namespace, record)
                outcomes[i] = "won"
            except ApiException as error:
                outcomes[i] = f"lost:{error.status}"

        threads = [threading.Thread(target=take, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert sorted(outcomes) == ["lost:409", "won"]
        winner = outcomes.index("won")
        final = leases[0].read_namespaced_lease("race", namespace)
        assert final.spec.holder_identity == f"candidate-{winner}-{_round}"


def test_watch_resumes_from_a_resource_version(kube_client: Any, namespace: str) -> None:
    core = client.CoreV1Api(kube_client)
    first = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="a"), data={"n": "0"}))
    core.patch_namespaced_config_map("a", namespace, {"data": {"n": "1"}})
    core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="b")))
    core.delete_namespaced_config_map("a", namespace)
    stream = watch.Watch().stream(
        core.list_namespaced_config_map, namespace,
        resource_version=first.metadata.resource_version, timeout_seconds=1)
    events = [(e["type"], e["object"].metadata.name) for e in stream]
    assert events == [("MODIFIED", "a"), ("ADDED", "b"), ("DELETED", "a")]


def test_watch_from_a_compacted_version_raises_410(kube_client: Any, namespace: str) -> None:
    core = client.CoreV1Api(kube_client)
    first = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="a")))
    for i in range(210):  # the fixture keeps 200 events of history
        core.patch_namespaced_config_map("a", namespace, {"data": {"n": str(i)}})
    stream = watch.Watch().stream(
        core.list_namespaced_config_map, namespace,
        resource_version=first.metadata.resource_version, timeout_seconds=2)
    with pytest.raises(ApiException) as caught:
        list(stream)
    assert caught.value.status == 410
    assert "too old resource version" in str(caught.value.reason)


def test_list_resource_version_is_the_global_counter(
    kube_client: Any, apiserver: RunningApiServer, namespace: str
) -> None:
    core = client.CoreV1Api(kube_client)
    core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="a")))
    listing = core.list_namespaced_config_map(namespace)
    assert listing.metadata.resource_version == str(apiserver.server.store.resource_version)
