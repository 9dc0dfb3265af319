"""Pure decisions of the process kubelet: pod spec → process argv, environment, files, status.

Everything here is a function of plain dicts (the JSON of Kubernetes objects) so it can be
tested without a process, a socket or an API server; `kubelet.py` only does the I/O.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gencluster_dev.machinery.storage import volume_host_path as volume_host_path_of

#: Images whose entrypoint the dev kubelet knows, by repository (tag and digest ignored).
DEFAULT_IMAGE_ENTRYPOINTS: dict[str, list[str]] = {
    "ghcr.io/gencluster/gencluster": ["gencluster"],
}

#: Env var naming the host directory that stands for one volumeMount (see docs "Pods").
MOUNT_ENV_PREFIX = "GENCLUSTER_DEV_MOUNT_"
#: Env var holding a JSON object {mountPath: host path} of every mount of the container.
MOUNTS_ENV = "GENCLUSTER_DEV_MOUNTS"
#: Where Kubernetes mounts the ServiceAccount token; the dev kubelet maps it like a volume.
SERVICE_ACCOUNT_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN_FILE_MODE = 0o600
"""Mode of every ServiceAccount token file the kubelet writes for a pod."""

_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_LABEL_PATH = re.compile(r"^metadata\.(labels|annotations)\['(.*)'\]$")


class ContainerConfigError(Exception):
    """The container cannot be configured yet (missing Secret/ConfigMap/key, bad field).

    Like Kubernetes, the container stays Waiting with this reason and is retried.
    """

    reason = "CreateContainerConfigError"


class ImageError(Exception):
    """The image is not known to the dev kubelet and the container has no `command`."""

    reason = "ErrImageNeverPull"


def now_rfc3339() -> str:
    """The current time as Kubernetes writes timestamps (UTC, second precision)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod_key(pod: dict) -> str:
    """`namespace/name` of a pod, for messages."""
    meta = pod["metadata"]
    return f"{meta.get('namespace', 'default')}/{meta['name']}"


def pod_dir_name(pod: dict) -> str:
    """The pod's directory name under `pods/`, as the contract in docs/devcluster.md says."""
    meta = pod["metadata"]
    return f"{meta.get('namespace', 'default')}_{meta['name']}_{meta['uid']}"


# --------------------------------------------------------------------------------------------
# $(VAR) expansion


def expand(text: str, mapping: dict[str, str]) -> str:
    """Expand `$(VAR)` in `text` exactly like Kubernetes does for command, args and env.

    `$$` is an escaped `$`; a reference to an undefined variable, an unterminated `$(`, or a
    `$` followed by anything else is left as written.
    """
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        char = text[i]
        if char != "$" or i + 1 >= n:
            out.append(char)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "(":
            end = text.find(")", i + 2)
            if end < 0:
                out.append(text[i:])
                break
            name = text[i + 2 : end]
            out.append(mapping.get(name, f"$({name})"))
            i = end + 1
        else:
            out.append("$" + nxt)
            i += 2
    return "".join(out)


# --------------------------------------------------------------------------------------------
# argv


def image_repository(image: str) -> str:
    """`image` without its tag and digest: `ghcr.io/x/y:1.2@sha256:..` → `ghcr.io/x/y`."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name = name[:colon]
    return name


def container_argv(
    container: dict, env: dict[str, str], image_entrypoints: Mapping[str, list[str]]
) -> list[str]:
    """The process argv for a container: command + args, `$(VAR)` expanded with `env`.

    Without `command` the image's entrypoint comes from `image_entrypoints` (images are
    recorded, never pulled); an unknown image then raises `ImageError`.
    """
    command = container.get("command")
    args = container.get("args") or []
    if not command:
        image = container.get("image", "")
        entrypoint = image_entrypoints.get(image_repository(image))
        if entrypoint is None:
            raise ImageError(
                f"image {image!r} has no known entrypoint in the dev kubelet (images are not "
                f"pulled): set the container's command, or map the image to an entrypoint "
                f"(known: {', '.join(sorted(image_entrypoints)) or 'none'})"
            )
        command = entrypoint
    return [expand(str(part), env) for part in [*command, *args]]


# --------------------------------------------------------------------------------------------
# environment


def _decode_secret(secret: dict, key: str) -> str | None:
    data = secret.get("data") or {}
    if key in data:
        return base64.b64decode(data[key]).decode("utf-8", "replace")
    string_data = secret.get("stringData") or {}
    return string_data.get(key)


def _configmap_value(configmap: dict, key: str) -> str | None:
    data = configmap.get("data") or {}
    if key in data:
        return data[key]
    binary = configmap.get("binaryData") or {}
    if key in binary:
        return base64.b64decode(binary[key]).decode("utf-8", "replace")
    return None


def _source_items(obj: dict, kind: str) -> dict[str, str]:
    if kind == "Secret":
        keys = list((obj.get("data") or {}).keys()) + list((obj.get("stringData") or {}).keys())
        return {k: _decode_secret(obj, k) or "" for k in keys}
    keys = list((obj.get("data") or {}).keys()) + list((obj.get("binaryData") or {}).keys())
    return {k: _configmap_value(obj, k) or "" for k in keys}


def field_ref_value(pod: dict, field_path: str, *, pod_ip: str, host_ip: str) -> str:
    """The value of a downward-API `fieldRef` (the paths Kubernetes supports for env)."""
    meta = pod.get("metadata", {})
    spec = pod.get("spec", {})
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", "default"),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
    }
    if field_path in simple:
        return simple[field_path]
    match = _LABEL_PATH.match(field_path)
    if match:
        return (meta.get(match.group(1)) or {}).get(match.group(2), "")
    raise ContainerConfigError(f"unsupported fieldRef fieldPath {field_path!r}")


@dataclass
class EnvSources:
    """The objects the env of a pod may refer to, fetched by the kubelet beforehand.

    A missing object is absent from the dict (or None): the functions here decide whether that
    is an error (not `optional`) the way Kubernetes does.
    """

    secrets: dict[str, dict | None] = field(default_factory=dict)
    configmaps: dict[str, dict | None] = field(default_factory=dict)


def referenced_objects(pod: dict) -> tuple[set[str], set[str]]:
    """Names of the Secrets and ConfigMaps the pod's env, envFrom and volumes refer to."""
    secrets: set[str] = set()
    configmaps: set[str] = set()
    spec = pod.get("spec", {})
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        for source in container.get("envFrom") or []:
            if "secretRef" in source:
                secrets.add(source["secretRef"]["name"])
            if "configMapRef" in source:
                configmaps.add(source["configMapRef"]["name"])
        for var in container.get("env") or []:
            value_from = var.get("valueFrom") or {}
            if "secretKeyRef" in value_from:
                secrets.add(value_from["secretKeyRef"]["name"])
            if "configMapKeyRef" in value_from:
                configmaps.add(value_from["configMapKeyRef"]["name"])
    for volume in spec.get("volumes") or []:
        if "secret" in volume:
            secrets.add(volume["secret"]["secretName"])
        if "configMap" in volume:
            configmaps.add(volume["configMap"]["name"])
        for source in (volume.get("projected") or {}).get("sources") or []:
            if "secret" in source:
                secrets.add(source["secret"]["name"])
            if "configMap" in source:
                configmaps.add(source["configMap"]["name"])
    return secrets, configmaps


def build_env(
    pod: dict,
    container: dict,
    *,
    base: dict[str, str],
    sources: EnvSources,
    pod_ip: str,
    host_ip: str,
) -> dict[str, str]:
    """The environment of a container process, as Kubernetes composes it.

    `base` (PATH, HOME, KUBERNETES_SERVICE_*, KUBECONFIG, mount variables) plays the role of
    the image's env and the service env: it is overridden by `envFrom`, which is overridden by
    `env`; `env` values expand `$(VAR)` against what is defined before them.
    Raises `ContainerConfigError` for a missing non-optional reference.
    """
    namespace = pod.get("metadata", {}).get("namespace", "default")
    env = dict(base)
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        if "secretRef" in source:
            ref, kind, objs = source["secretRef"], "Secret", sources.secrets
        elif "configMapRef" in source:
            ref, kind, objs = source["configMapRef"], "ConfigMap", sources.configmaps
        else:
            continue
        obj = objs.get(ref["name"])
        if obj is None:
            if ref.get("optional"):
                continue
            raise ContainerConfigError(f'{kind.lower()} "{ref["name"]}" not found')
        for key, value in _source_items(obj, kind).items():
            name = prefix + key
            if _ENV_NAME.match(name):
                env[name] = value
    for var in container.get("env") or []:
        name = var["name"]
        if "valueFrom" not in var:
            env[name] = expand(str(var.get("value", "")), env)
            continue
        value_from = var["valueFrom"]
        if "fieldRef" in value_from:
            env[name] = field_ref_value(
                pod, value_from["fieldRef"]["fieldPath"], pod_ip=pod_ip, host_ip=host_ip
            )
        elif "secretKeyRef" in value_from or "configMapKeyRef" in value_from:
            is_secret = "secretKeyRef" in value_from
            ref = value_from["secretKeyRef" if is_secret else "configMapKeyRef"]
            kind = "Secret" if is_secret else "ConfigMap"
            obj = (sources.secrets if is_secret else sources.configmaps).get(ref["name"])
            if obj is None:
                if ref.get("optional"):
                    continue
                raise ContainerConfigError(f'{kind.lower()} "{ref["name"]}" not found')
            value = _decode_secret(obj, ref["key"]) if is_secret else _configmap_value(
                obj, ref["key"]
            )
            if value is None:
                if ref.get("optional"):
                    continue
                raise ContainerConfigError(
                    f"couldn't find key {ref['key']} in {kind} {namespace}/{ref['name']}"
                )
            env[name] = value
        elif "resourceFieldRef" in value_from:
            env[name] = resource_field_value(container, value_from["resourceFieldRef"])
        else:
            raise ContainerConfigError(f"env {name}: unsupported valueFrom {sorted(value_from)}")
    return env


_QUANTITY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")
_SUFFIX = {
    "": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
}


def parse_quantity(text: str | int | float) -> float:
    """A Kubernetes resource quantity ("500m", "2", "64Mi") as a number."""
    match = _QUANTITY.match(str(text))
    if not match or match.group(2) not in _SUFFIX:
        raise ContainerConfigError(f"invalid quantity {text!r}")
    return float(match.group(1)) * _SUFFIX[match.group(2)]


def resource_field_value(container: dict, ref: dict) -> str:
    """The downward-API value of `resourceFieldRef` (limits/requests cpu, memory, ...).

    As in Kubernetes, the result is rounded up to a whole number of `divisor`; an unset limit
    reports "0" here (the node's allocatable in Kubernetes; the dev node has no real limit).
    """
    kind, _, resource = ref["resource"].partition(".")
    quantity = ((container.get("resources") or {}).get(kind) or {}).get(resource)
    if quantity is None:
        return "0"
    divisor = parse_quantity(ref.get("divisor", "1"))
    value = parse_quantity(quantity) / divisor
    whole = int(value)
    return str(whole if whole == value else whole + 1)


# --------------------------------------------------------------------------------------------
# volumes and mounts


@dataclass(frozen=True)
class VolumeFile:
    """One file of a secret or configMap volume, relative to the volume directory."""

    path: str
    data: bytes
    mode: int


@dataclass(frozen=True)
class PodFacts:
    """What downward-API and token volume files are made of, besides the pod object."""

    pod: dict
    pod_ip: str = ""
    host_ip: str = ""
    token: str | None = None


def volume_files(
    volume: dict, sources: EnvSources, facts: PodFacts | None = None
) -> list[VolumeFile] | None:
    """The files of a secret, configMap, downwardAPI or projected volume; None for volumes
    without files (emptyDir, hostPath, ...).

    Honours `items` (key → path, per-item mode), `defaultMode` (0644 by default) and
    `optional`; raises `ContainerConfigError` when a non-optional object or key is missing.
    A projected `serviceAccountToken` is the pod's own ServiceAccount token.
    """
    default_mode = int(next((volume[k] for k in ("secret", "configMap", "downwardAPI",
                                                  "projected") if k in volume), {}).get(
        "defaultMode", 0o644))
    if "secret" in volume:
        spec = volume["secret"]
        return _object_files(spec, "Secret", spec["secretName"], sources, default_mode,
                             volume["name"])
    if "configMap" in volume:
        spec = volume["configMap"]
        return _object_files(spec, "ConfigMap", spec["name"], sources, default_mode,
                             volume["name"])
    if "downwardAPI" in volume:
        return _downward_files(volume["downwardAPI"].get("items") or [], facts, default_mode)
    if "projected" in volume:
        files: list[VolumeFile] = []
        for source in volume["projected"].get("sources") or []:
            if "secret" in source:
                spec = source["secret"]
                files += _object_files(spec, "Secret", spec["name"], sources, default_mode,
                                       volume["name"])
            elif "configMap" in source:
                spec = source["configMap"]
                files += _object_files(spec, "ConfigMap", spec["name"], sources, default_mode,
                                       volume["name"])
            elif "downwardAPI" in source:
                files += _downward_files(source["downwardAPI"].get("items") or [], facts,
                                         default_mode)
            elif "serviceAccountToken" in source:
                if facts is None or not facts.token:
                    raise ContainerConfigError("no ServiceAccount token for a projected volume")
                # 0600 whatever defaultMode says, as the kubelet does when it knows the pod's
                # user (fsUser): pods here are processes sharing one host, so a token readable
                # by others would be readable by every other pod.
                files.append(VolumeFile(_safe_relpath(source["serviceAccountToken"]["path"]),
                                        facts.token.encode(), TOKEN_FILE_MODE))
        return files
    return None


def _object_files(spec: dict, kind: str, name: str, sources: EnvSources, default_mode: int,
                  volume_name: str) -> list[VolumeFile]:
    obj = (sources.secrets if kind == "Secret" else sources.configmaps).get(name)
    if obj is None:
        if spec.get("optional"):
            return []
        raise ContainerConfigError(f'{kind.lower()} "{name}" not found')

    def raw(key: str) -> bytes | None:
        if kind == "Secret":
            if key in (obj.get("data") or {}):
                return base64.b64decode(obj["data"][key])
            if key in (obj.get("stringData") or {}):
                return obj["stringData"][key].encode()
            return None
        if key in (obj.get("data") or {}):
            return obj["data"][key].encode()
        if key in (obj.get("binaryData") or {}):
            return base64.b64decode(obj["binaryData"][key])
        return None

    files: list[VolumeFile] = []
    items = spec.get("items")
    if items:
        for item in items:
            data = raw(item["key"])
            if data is None:
                if spec.get("optional"):
                    continue
                raise ContainerConfigError(
                    f"couldn't find key {item['key']} in {kind} {name} for volume {volume_name}"
                )
            files.append(VolumeFile(_safe_relpath(item["path"]), data,
                                    int(item.get("mode", default_mode))))
    else:
        keys = [*(obj.get("data") or {}), *(obj.get("stringData") or {}),
                *(obj.get("binaryData") or {})]
        for key in dict.fromkeys(keys):
            files.append(VolumeFile(_safe_relpath(key), raw(key) or b"", default_mode))
    return files


def _downward_files(items: list[dict], facts: PodFacts | None,
                    default_mode: int) -> list[VolumeFile]:
    if facts is None:
        raise ContainerConfigError("downwardAPI volume without pod facts")
    pod = facts.pod
    files = []
    for item in items:
        if "fieldRef" in item:
            path = item["fieldRef"]["fieldPath"]
            if path in ("metadata.labels", "metadata.annotations"):
                values = pod.get("metadata", {}).get(path.split(".")[1]) or {}
                text = "\n".join(f'{key}="{value}"' for key, value in sorted(values.items()))
            else:
                text = field_ref_value(pod, path, pod_ip=facts.pod_ip, host_ip=facts.host_ip)
        elif "resourceFieldRef" in item:
            ref = item["resourceFieldRef"]
            containers = pod.get("spec", {}).get("containers") or []
            container = next((c for c in containers if c["name"] == ref.get("containerName")),
                             containers[0] if containers else {})
            text = resource_field_value(container, ref)
        else:
            continue
        files.append(VolumeFile(_safe_relpath(item["path"]), text.encode(),
                                int(item.get("mode", default_mode))))
    return files


def _safe_relpath(path: str) -> str:
    parts = Path(path).parts
    if not parts or Path(path).is_absolute() or ".." in parts:
        raise ContainerConfigError(f"invalid volume item path {path!r}")
    return path


def mount_env_name(mount_path: str) -> str:
    """The env var carrying a mount's host path.

    `/etc/my-config` → `GENCLUSTER_DEV_MOUNT_ETC_MY_CONFIG`.
    """
    return MOUNT_ENV_PREFIX + re.sub(r"[^A-Z0-9]+", "_", mount_path.upper()).strip("_")


def volume_host_path(volume: dict, volumes_dir: Path,
                     claim_paths: Mapping[str, Path] | None = None) -> Path:
    """The host directory that backs a volume: hostPath as is, a persistentVolumeClaim's
    bound volume's directory (`claim_paths`, by volume name), others under the pod dir."""
    if "hostPath" in volume:
        return Path(volume["hostPath"]["path"])
    if "persistentVolumeClaim" in volume:
        path = (claim_paths or {}).get(volume["name"])
        if path is None:
            raise ContainerConfigError(
                f'volume {volume["name"]!r}: persistentvolumeclaim '
                f'"{volume["persistentVolumeClaim"].get("claimName", "")}" is not mounted')
        return path
    return volumes_dir / volume["name"]


def claim_host_path(claim_name: str, claim: dict | None, volume: dict | None) -> Path:
    """Where a pod's claim lives on this node, or why it cannot be mounted yet (raises
    `ContainerConfigError` with the scheduler's and kubelet's wording; the pod worker keeps
    retrying, so the pod starts once the claim is bound)."""
    if claim is None:
        raise ContainerConfigError(f'persistentvolumeclaim "{claim_name}" not found')
    if claim.get("metadata", {}).get("deletionTimestamp"):
        raise ContainerConfigError(f'persistentvolumeclaim "{claim_name}" is being deleted')
    volume_name = (claim.get("spec") or {}).get("volumeName")
    if not volume_name or (claim.get("status") or {}).get("phase") != "Bound":
        raise ContainerConfigError(
            f'pod has unbound immediate PersistentVolumeClaims: persistentvolumeclaim '
            f'"{claim_name}" is not bound')
    if volume is None:
        raise ContainerConfigError(
            f'persistentvolume "{volume_name}" of claim "{claim_name}" not found')
    path = volume_host_path_of(volume)
    if path is None:
        raise ContainerConfigError(
            f'persistentvolume "{volume_name}" has no hostPath or local path this node can '
            "mount")
    return Path(path)


def mount_env(
    container: dict, volumes: list[dict], volumes_dir: Path, service_account_dir: Path | None,
    claim_paths: Mapping[str, Path] | None = None,
) -> dict[str, str]:
    """Env vars telling the process where its mounts are on the host (processes share the
    host filesystem, so `/etc/config` cannot be made to point at the volume).

    One `GENCLUSTER_DEV_MOUNT_<MOUNTPATH>` per volumeMount (subPath appended), plus
    `GENCLUSTER_DEV_MOUNTS`, a JSON object {mountPath: host path} for generic translation.
    The ServiceAccount token directory is listed like a mount at its Kubernetes path.
    """
    by_name = {v["name"]: v for v in volumes}
    mounts: dict[str, str] = {}
    for mount in container.get("volumeMounts") or []:
        volume = by_name.get(mount["name"])
        if volume is None:
            raise ContainerConfigError(f"volumeMount {mount['name']!r}: no such volume")
        host = volume_host_path(volume, volumes_dir, claim_paths)
        if mount.get("subPath"):
            host = host / _safe_relpath(mount["subPath"])
        mounts[mount["mountPath"]] = str(host)
    if service_account_dir is not None:
        mounts.setdefault(SERVICE_ACCOUNT_MOUNT, str(service_account_dir))
    env = {mount_env_name(path): host for path, host in mounts.items()}
    env[MOUNTS_ENV] = json.dumps(mounts, sort_keys=True)
    return env


# --------------------------------------------------------------------------------------------
# service links


def service_env(services: list[dict], namespace: str) -> dict[str, str]:
    """The docker-links style variables Kubernetes gives pods for the Services of their
    namespace (`enableServiceLinks`), e.g. `WEB_SERVICE_HOST`, `WEB_SERVICE_PORT`,
    `WEB_PORT_80_TCP_ADDR`. Headless Services get none. The API server's own `kubernetes`
    Service is left out: KUBERNETES_SERVICE_HOST/PORT name the API server itself, so the
    pod's API traffic is its own (and `cut-apiserver` can cut it).
    """
    env: dict[str, str] = {}
    for service in sorted(services, key=lambda s: s["metadata"]["name"]):
        meta, spec = service["metadata"], service.get("spec") or {}
        ip = spec.get("clusterIP")
        ports = spec.get("ports") or []
        if (meta.get("namespace", "default") != namespace or not ip or ip == "None"
                or not ports or meta["name"] == "kubernetes"):
            continue
        prefix = re.sub(r"[^A-Z0-9]", "_", meta["name"].upper())
        env[f"{prefix}_SERVICE_HOST"] = ip
        env[f"{prefix}_SERVICE_PORT"] = str(ports[0]["port"])
        first = ports[0]
        env[f"{prefix}_PORT"] = (f"{first.get('protocol', 'TCP').lower()}://{ip}:"
                                 f"{first['port']}")
        for port in ports:
            number, protocol = str(port["port"]), port.get("protocol", "TCP")
            if port.get("name"):
                name = re.sub(r"[^A-Z0-9]", "_", port["name"].upper())
                env[f"{prefix}_SERVICE_PORT_{name}"] = number
            base = f"{prefix}_PORT_{number}_{protocol}"
            env[base] = f"{protocol.lower()}://{ip}:{number}"
            env[f"{base}_PROTO"] = protocol.lower()
            env[f"{base}_PORT"] = number
            env[f"{base}_ADDR"] = ip
    return env


# --------------------------------------------------------------------------------------------
# ServiceAccount kubeconfig


def pod_kubeconfig(
    *, server: str, token: str, namespace: str, account: str, ca_pem: bytes | None
) -> dict:
    """The kubeconfig a pod gets (env KUBECONFIG): its ServiceAccount's token, its namespace.

    With the API server's CA it points at the TLS endpoint, because kubectl (client-go) sends
    no bearer token over plain http; the Python clients accept either.
    """
    cluster: dict[str, Any] = {"server": server}
    if ca_pem:
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    user = f"system:serviceaccount:{namespace}:{account}"
    return {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "gencluster-dev", "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "gencluster-dev",
                      "context": {"cluster": "gencluster-dev", "namespace": namespace,
                                  "user": user}}],
        "current-context": "gencluster-dev",
    }


# --------------------------------------------------------------------------------------------
# ports


# --------------------------------------------------------------------------------------------
# status


@dataclass
class ContainerView:
    """What the kubelet knows about one container; `status()` renders containerStatuses[]."""

    name: str
    image: str
    state: str = "waiting"  # waiting | running | terminated
    reason: str | None = "ContainerCreating"
    message: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    restart_count: int = 0
    ready: bool = False
    started: bool = False
    container_id: str | None = None
    last_terminated: dict | None = None

    def terminated_dict(self) -> dict:
        """The `terminated` state of the last run (also what `lastState` records)."""
        out: dict[str, Any] = {
            "exitCode": self.exit_code,
            "reason": self.reason,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
        }
        if self.signal is not None:
            out["signal"] = self.signal
        if self.message:
            out["message"] = self.message
        if self.container_id:
            out["containerID"] = self.container_id
        return out

    def status(self) -> dict:
        """The containerStatuses[] entry."""
        if self.state == "running":
            state: dict[str, Any] = {"running": {"startedAt": self.started_at}}
        elif self.state == "terminated":
            state = {"terminated": self.terminated_dict()}
        else:
            waiting: dict[str, Any] = {}
            if self.reason:
                waiting["reason"] = self.reason
            if self.message:
                waiting["message"] = self.message
            state = {"waiting": waiting}
        out: dict[str, Any] = {
            "name": self.name,
            "image": self.image,
            "imageID": "",
            "ready": self.ready,
            "restartCount": self.restart_count,
            "started": self.started,
            "state": state,
            "lastState": {"terminated": self.last_terminated} if self.last_terminated else {},
        }
        if self.container_id:
            out["containerID"] = self.container_id
        return out


def exit_details(returncode: int) -> tuple[int, int | None, str]:
    """(exitCode, signal, reason) as Kubernetes reports a process's end.

    Killed by a signal → 128+signal with the signal recorded, like a container runtime does.
    """
    if returncode < 0:
        return 128 - returncode, -returncode, "Error"
    return returncode, None, "Completed" if returncode == 0 else "Error"


def log_tail(data: bytes, lines: int = 80, limit: int = 2048) -> str:
    """What Kubernetes puts in a failed container's message under FallbackToLogsOnError:
    the last `lines` lines of its log, at most `limit` bytes."""
    tail = b"\n".join(data.rstrip(b"\n").split(b"\n")[-lines:])
    return tail[-limit:].decode("utf-8", "replace")


def restart_delay(restart_count: int, base: float, maximum: float) -> float:
    """Back-off before restart number `restart_count + 1`: 0, base, 2·base, ... ≤ maximum.

    Like the kubelet, the first restart is immediate and later ones double from `base`.
    """
    if restart_count <= 0:
        return 0.0
    return min(base * 2 ** (restart_count - 1), maximum)


def relist_delay(now: float, period: float) -> float:
    """How long after an exit at `now` (monotonic seconds) the node notices it.

    A real kubelet learns that a container died from its PLEG, which relists the runtime's
    containers every `period` (1 s in Kubernetes) on its own clock; the death shows up in the
    pod's status at the next relist, 0 to `period` seconds later. The dev kubelet hears of an
    exit at once (`period` 0), which makes failovers that wait for the status look faster
    than a real node allows; a positive period puts that wait back.
    """
    if period <= 0:
        return 0.0
    return period - (now % period)


def should_restart(restart_policy: str, exit_code: int) -> bool:
    """Whether a container that ended with `exit_code` is started again."""
    if restart_policy == "Never":
        return False
    if restart_policy == "OnFailure":
        return exit_code != 0
    return True


def pod_phase(
    restart_policy: str,
    containers: list[ContainerView],
    init_containers: list[ContainerView] | None = None,
    init_done: bool = True,
) -> str:
    """The pod phase from its containers, following the kubelet's getPhase."""
    if not init_done:
        for init in init_containers or []:
            if (init.state == "terminated" and init.exit_code != 0
                    and restart_policy == "Never"):
                return "Failed"
        return "Pending"
    running = waiting = stopped = succeeded = 0
    for view in containers:
        if view.state == "running":
            running += 1
        elif view.state == "terminated":
            stopped += 1
            if view.exit_code == 0:
                succeeded += 1
        elif view.last_terminated is not None:
            stopped += 1
        else:
            waiting += 1
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if not stopped:
        return "Pending"
    if restart_policy == "Always":
        return "Running"
    if stopped == succeeded:
        return "Succeeded"
    if restart_policy == "Never":
        return "Failed"
    return "Running"


def pod_conditions(
    previous: list[dict] | None,
    *,
    scheduled: bool,
    initialized: bool,
    containers: list[ContainerView],
    terminal: bool,
) -> list[dict]:
    """PodScheduled, Initialized, ContainersReady and Ready; lastTransitionTime only moves when
    a condition's status changes (so watchers can tell a flip from a heartbeat)."""
    not_ready = [c.name for c in containers if not c.ready]
    ready = bool(containers) and not not_ready and not terminal
    if terminal:
        reason, message = "PodCompleted", None
    elif not_ready:
        reason = "ContainersNotReady"
        message = f"containers with unready status: [{' '.join(not_ready)}]"
    else:
        reason, message = None, None
    wanted = [
        ("PodScheduled", scheduled, None, None),
        ("Initialized", initialized, None if initialized else "ContainersNotInitialized", None),
        ("ContainersReady", ready, reason if not ready else None, message if not ready else None),
        ("Ready", ready, reason if not ready else None, message if not ready else None),
    ]
    before = {c.get("type"): c for c in previous or []}
    now = now_rfc3339()
    out: list[dict] = []
    for kind, status, why, text in wanted:
        status_text = "True" if status else "False"
        old = before.get(kind)
        transition = (old.get("lastTransitionTime")
                      if old and old.get("status") == status_text else None) or now
        condition: dict[str, Any] = {"type": kind, "status": status_text,
                                     "lastProbeTime": None, "lastTransitionTime": transition}
        if why:
            condition["reason"] = why
        if text:
            condition["message"] = text
        out.append(condition)
    return out
