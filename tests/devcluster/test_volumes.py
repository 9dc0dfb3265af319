"""Volumes on a real `gencluster dev up`: the default StorageClass, claims bound to local-path
volumes, pods that mount them across re-creation, protection finalizers and reclaim policies,
all driven through the real kubectl where a user would use it."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gencluster_testing.waiting import wait_for

from tests.devcluster.devplane import DevPlane, python_pod

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

CLAIMS = "/api/v1/namespaces/default/persistentvolumeclaims"
VOLUMES = "/api/v1/persistentvolumes"
CLASSES = "/apis/storage.k8s.io/v1/storageclasses"


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevPlane]:
    plane = DevPlane(tmp_path_factory.mktemp("volumes") / "dev").start()
    try:
        yield plane
    finally:
        plane.stop()


def _claim(name: str, size: str = "1Gi", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": size}}, **spec}}


def _apply(plane: DevPlane, tmp_path: Path, obj: dict[str, Any]) -> None:
    path = tmp_path / f"{obj['metadata']['name']}.json"
    path.write_text(json.dumps(obj))
    plane.kubectl("apply", "-f", str(path))


def _get(plane: DevPlane, path: str) -> dict[str, Any] | None:
    status, answer = plane.call("GET", path)
    return answer if status == 200 else None


def _bound(plane: DevPlane, name: str) -> dict[str, Any]:
    return wait_for(lambda: (c := _get(plane, f"{CLAIMS}/{name}")) and (
        c.get("status") or {}).get("phase") == "Bound" and c, 20,
        message=f"claim {name} bound")


def _volume_of(plane: DevPlane, claim: dict[str, Any]) -> dict[str, Any]:
    volume = _get(plane, f"{VOLUMES}/{claim['spec']['volumeName']}")
    assert volume is not None
    return volume


def _claim_pod(name: str, claim: str, script: str) -> dict[str, Any]:
    return python_pod(name, script, container={
        "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
        volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": claim}}])


APPEND = r"""
import json, os, time
data = os.environ["GENCLUSTER_DEV_MOUNT_DATA"]
path = os.path.join(data, "notes.txt")
before = open(path).read() if os.path.exists(path) else ""
with open(path, "a") as f:
    f.write(os.environ["HOSTNAME"] + "\n")
print(json.dumps({"uid": os.getuid(), "before": before, "data": data,
                  "mounts": json.loads(os.environ["GENCLUSTER_DEV_MOUNTS"])}), flush=True)
time.sleep(600)
"""


def _report(plane: DevPlane, pod: str) -> dict[str, Any]:
    line = wait_for(lambda: plane.log(pod).strip(), 20, message=f"{pod} reports")
    return json.loads(line.splitlines()[0])


def test_default_storage_class_and_discovery(plane: DevPlane) -> None:
    out = plane.kubectl("get", "storageclass").stdout
    header, row = out.splitlines()[:2]
    assert header.split() == ["NAME", "PROVISIONER", "RECLAIMPOLICY", "VOLUMEBINDINGMODE",
                              "ALLOWVOLUMEEXPANSION", "AGE"]
    assert row.split()[:6] == ["standard", "(default)", "gencluster.dev/local-path", "Delete",
                               "Immediate", "false"]
    resources = plane.kubectl("api-resources").stdout
    assert any(line.split()[:2] == ["persistentvolumeclaims", "pvc"]
               for line in resources.splitlines())
    assert any(line.split()[:2] == ["persistentvolumes", "pv"] for line in resources.splitlines())
    assert any(line.split()[:3] == ["storageclasses", "sc", "storage.k8s.io/v1"]
               for line in resources.splitlines())


def test_claim_without_class_is_provisioned_and_bound(plane: DevPlane, tmp_path: Path) -> None:
    _apply(plane, tmp_path, _claim("plain", "2Gi"))
    claim = _bound(plane, "plain")
    uid = claim["metadata"]["uid"]
    assert claim["spec"]["storageClassName"] == "standard"
    assert claim["spec"]["volumeMode"] == "Filesystem"
    assert claim["spec"]["volumeName"] == f"pvc-{uid}"
    assert claim["metadata"]["finalizers"] == ["kubernetes.io/pvc-protection"]
    assert claim["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"] == "yes"
    assert claim["metadata"]["annotations"]["pv.kubernetes.io/bound-by-controller"] == "yes"
    assert claim["status"]["capacity"] == {"storage": "2Gi"}
    assert claim["status"]["accessModes"] == ["ReadWriteOnce"]

    volume = wait_for(lambda: (v := _volume_of(plane, claim)) and (
        v.get("status") or {}).get("phase") == "Bound" and v, 20, message="volume bound")
    assert volume["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"] == \
        "gencluster.dev/local-path"
    assert volume["metadata"]["finalizers"] == ["kubernetes.io/pv-protection"]
    assert volume["spec"]["claimRef"]["uid"] == uid
    assert volume["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
    directory = Path(volume["spec"]["hostPath"]["path"])
    assert directory == plane.dev_dir.resolve() / "volumes" / f"pvc-{uid}"
    assert directory.is_dir()

    out = plane.kubectl("get", "pvc", "plain").stdout.splitlines()
    assert out[0].split() == ["NAME", "STATUS", "VOLUME", "CAPACITY", "ACCESS", "MODES",
                              "STORAGECLASS", "VOLUMEATTRIBUTESCLASS", "AGE"]
    assert out[1].split()[:7] == ["plain", "Bound", f"pvc-{uid}", "2Gi", "RWO", "standard",
                                  "<unset>"]
    out = plane.kubectl("get", "pv", f"pvc-{uid}").stdout.splitlines()
    assert out[0].split() == ["NAME", "CAPACITY", "ACCESS", "MODES", "RECLAIM", "POLICY",
                              "STATUS", "CLAIM", "STORAGECLASS", "VOLUMEATTRIBUTESCLASS",
                              "REASON", "AGE"]
    assert out[1].split()[:8] == [f"pvc-{uid}", "2Gi", "RWO", "Delete", "Bound",
                                  "default/plain", "standard", "<unset>"]
    both = plane.kubectl("get", "pvc,pv,storageclass").stdout
    assert "persistentvolumeclaim/plain" in both
    assert f"persistentvolume/pvc-{uid}" in both
    assert "storageclass.storage.k8s.io/standard (default)" in both
    events = [(e["reason"], e["message"]) for e in plane.events("plain")]
    assert ("ProvisioningSucceeded", f"Successfully provisioned volume pvc-{uid}") in events


def test_bound_claim_spec_is_immutable(plane: DevPlane, tmp_path: Path) -> None:
    status, answer = plane.call("POST", CLAIMS, {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "bad"},
        "spec": {"resources": {"requests": {"storage": "1Gi"}}}})
    assert status == 422, answer
    assert answer["details"]["causes"][0]["field"] == "spec.accessModes"

    _apply(plane, tmp_path, _claim("fixed"))
    _bound(plane, "fixed")
    for patch, field in (({"spec": {"accessModes": ["ReadWriteMany"]}}, "spec.accessModes"),
                         ({"spec": {"storageClassName": "other"}}, "spec.storageClassName"),
                         ({"spec": {"volumeName": "elsewhere"}}, "spec.volumeName")):
        status, answer = plane.call("PATCH", f"{CLAIMS}/fixed", patch,
                                    content_type="application/merge-patch+json")
        assert status == 422, answer
        assert answer["details"]["causes"][0]["field"] == "spec"
        assert field in answer["message"]
    status, answer = plane.call("PATCH", f"{CLAIMS}/fixed",
                                {"spec": {"resources": {"requests": {"storage": "512Mi"}}}},
                                content_type="application/merge-patch+json")
    assert status == 422, answer
    assert "spec.resources.requests.storage" in answer["message"]
    status, answer = plane.call("PATCH", f"{CLAIMS}/fixed",
                                {"spec": {"resources": {"requests": {"storage": "3Gi"}}}},
                                content_type="application/merge-patch+json")
    assert status == 403, answer
    assert answer["message"] == (
        'persistentvolumeclaims "fixed" is forbidden: only dynamically provisioned pvc can be '
        "resized and the storageclass that provisions the pvc must support resize")


def test_a_class_that_allows_expansion_lets_a_bound_claim_grow(
        plane: DevPlane, tmp_path: Path) -> None:
    _apply(plane, tmp_path, {
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "growable"}, "provisioner": "gencluster.dev/local-path",
        "allowVolumeExpansion": True})
    _apply(plane, tmp_path, _claim("growing", storageClassName="growable"))
    claim = _bound(plane, "growing")
    _apply(plane, tmp_path, _claim("growing", "3Gi", storageClassName="growable"))
    wait_for(lambda: ((_get(plane, f"{CLAIMS}/growing") or {}).get("status") or {}).get(
        "capacity") == {"storage": "3Gi"}, 20, message="claim grown")
    assert _volume_of(plane, claim)["spec"]["capacity"] == {"storage": "3Gi"}
    row = plane.kubectl("get", "pvc", "growing").stdout.splitlines()[1].split()
    assert row[3] == "3Gi"


def test_wait_for_first_consumer_binds_when_a_pod_uses_the_claim(
        plane: DevPlane, tmp_path: Path) -> None:
    _apply(plane, tmp_path, {
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "lazy"}, "provisioner": "gencluster.dev/local-path",
        "volumeBindingMode": "WaitForFirstConsumer"})
    _apply(plane, tmp_path, _claim("deferred", storageClassName="lazy"))
    wait_for(lambda: any(e["reason"] == "WaitForFirstConsumer"
                         for e in plane.events("deferred")), 20, message="waiting event")
    assert (_get(plane, f"{CLAIMS}/deferred") or {})["status"]["phase"] == "Pending"
    plane.create(_claim_pod("consumer", "deferred", APPEND))
    _bound(plane, "deferred")
    plane.wait_running("consumer")
    plane.delete_pod("consumer", grace=0)
    plane.wait_gone("consumer")


def test_the_kubernetes_client_reads_claims_volumes_and_classes(plane: DevPlane) -> None:
    from kubernetes import client, config

    api_client = config.new_client_from_config(str(plane.kubectl_config))
    try:
        classes = client.StorageV1Api(api_client).list_storage_class().items
        standard = next(c for c in classes if c.metadata.name == "standard")
        assert standard.provisioner == "gencluster.dev/local-path"
        assert standard.volume_binding_mode == "Immediate"
        core = client.CoreV1Api(api_client)
        claims = core.list_persistent_volume_claim_for_all_namespaces().items
        volumes = {v.metadata.name: v for v in core.list_persistent_volume().items}
        bound = [c for c in claims if c.status.phase == "Bound"]
        assert bound
        for claim in bound:
            volume = volumes[claim.spec.volume_name]
            assert volume.spec.claim_ref.uid == claim.metadata.uid
            assert volume.spec.host_path.path
    finally:
        api_client.close()


def test_files_survive_a_pod_recreated_with_another_uid(plane: DevPlane, tmp_path: Path) -> None:
    _apply(plane, tmp_path, _claim("notes"))
    claim = _bound(plane, "notes")
    directory = Path(_volume_of(plane, claim)["spec"]["hostPath"]["path"])
    plane.create(_claim_pod("writer", "notes", APPEND))
    first = _report(plane, "writer")
    assert first["before"] == ""
    assert first["data"] == str(directory)
    assert first["mounts"]["/data"] == str(directory)
    plane.delete_pod("writer", grace=0)
    plane.wait_gone("writer")

    plane.create(_claim_pod("reader", "notes", APPEND))
    second = _report(plane, "reader")
    assert second["before"] == "writer\n"
    assert (directory / "notes.txt").read_text() == "writer\nreader\n"
    if os.geteuid() == 0:
        assert second["uid"] != first["uid"]
        assert (directory / "notes.txt").stat().st_uid == second["uid"]
    plane.delete_pod("reader", grace=0)
    plane.wait_gone("reader")
    assert directory.is_dir()  # pods come and go; the volume stays with its claim


def test_claim_in_use_stays_terminating_until_its_pod_is_gone(
        plane: DevPlane, tmp_path: Path) -> None:
    _apply(plane, tmp_path, _claim("held"))
    claim = _bound(plane, "held")
    volume_name = claim["spec"]["volumeName"]
    directory = Path(_volume_of(plane, claim)["spec"]["hostPath"]["path"])
    plane.create(_claim_pod("holder", "held", APPEND))
    _report(plane, "holder")

    plane.kubectl("delete", "pvc", "held", "--wait=false")
    wait_for(lambda: ((_get(plane, f"{CLAIMS}/held") or {}).get("metadata") or {}).get(
        "deletionTimestamp"), 10, message="claim terminating")
    # The controller has had its turn once it binds a claim created after the deletion.
    _apply(plane, tmp_path, _claim("witness"))
    _bound(plane, "witness")
    held = _get(plane, f"{CLAIMS}/held")
    assert held is not None and held["metadata"]["finalizers"] == [
        "kubernetes.io/pvc-protection"]
    assert plane.kubectl("get", "pvc", "held").stdout.splitlines()[1].split()[1] == \
        "Terminating"
    assert directory.is_dir()

    plane.delete_pod("holder", grace=0)
    plane.wait_gone("holder")
    wait_for(lambda: _get(plane, f"{CLAIMS}/held") is None, 20, message="claim gone")
    wait_for(lambda: _get(plane, f"{VOLUMES}/{volume_name}") is None, 20,
             message="volume deleted by its reclaim policy")
    assert not directory.exists()


def test_retain_class_keeps_the_released_volume_and_its_files(
        plane: DevPlane, tmp_path: Path) -> None:
    _apply(plane, tmp_path, {
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": "keep"}, "provisioner": "gencluster.dev/local-path",
        "reclaimPolicy": "Retain"})
    sc = _get(plane, f"{CLASSES}/keep")
    assert sc is not None and sc["volumeBindingMode"] == "Immediate"
    _apply(plane, tmp_path, _claim("kept", storageClassName="keep"))
    claim = _bound(plane, "kept")
    volume = _volume_of(plane, claim)
    assert volume["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    directory = Path(volume["spec"]["hostPath"]["path"])
    (directory / "precious").write_text("data")

    plane.kubectl("delete", "pvc", "kept")
    wait_for(lambda: ((_get(plane, f"{VOLUMES}/{volume['metadata']['name']}") or {}).get(
        "status") or {}).get("phase") == "Released", 20, message="volume released")
    row = plane.kubectl("get", "pv", volume["metadata"]["name"]).stdout.splitlines()[1].split()
    assert row[3:7] == ["Retain", "Released", "default/kept", "keep"]
    assert (directory / "precious").read_text() == "data"


def test_static_volume_is_bound_to_a_matching_claim(plane: DevPlane, tmp_path: Path) -> None:
    host_dir = tmp_path / "static"
    plane.ok("POST", VOLUMES, {
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "manual"},
        "spec": {"capacity": {"storage": "5Gi"}, "accessModes": ["ReadWriteOnce"],
                 "storageClassName": "", "hostPath": {"path": str(host_dir),
                                                      "type": "DirectoryOrCreate"}}})
    volume = wait_for(lambda: (v := _get(plane, f"{VOLUMES}/manual")) and (
        v.get("status") or {}).get("phase") == "Available" and v, 20, message="available")
    assert volume["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    _apply(plane, tmp_path, _claim("static", storageClassName=""))
    claim = _bound(plane, "static")
    assert claim["spec"]["volumeName"] == "manual"
    assert claim["status"]["capacity"] == {"storage": "5Gi"}
    volume = wait_for(lambda: (v := _get(plane, f"{VOLUMES}/manual")) and (
        v.get("status") or {}).get("phase") == "Bound" and v, 20, message="bound")
    assert volume["spec"]["claimRef"]["name"] == "static"
    assert volume["metadata"]["annotations"]["pv.kubernetes.io/bound-by-controller"] == "yes"


def test_pod_with_a_missing_claim_waits_then_starts(plane: DevPlane, tmp_path: Path) -> None:
    plane.create(_claim_pod("patient", "later", APPEND))
    wait_for(lambda: any(
        e["reason"] == "FailedMount" and 'persistentvolumeclaim "later" not found'
        in e["message"] and e["type"] == "Warning" for e in plane.events("patient")), 20,
        message="FailedMount event")
    pod = plane.pod("patient") or {}
    assert pod["status"]["phase"] == "Pending"
    assert plane.container_status("patient")["state"]["waiting"]["reason"] == \
        "ContainerCreating"

    _apply(plane, tmp_path, _claim("later"))
    _bound(plane, "later")
    plane.wait_running("patient")
    assert _report(plane, "patient")["before"] == ""
    plane.delete_pod("patient", grace=0)
    plane.wait_gone("patient")
