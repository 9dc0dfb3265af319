"""``meta.k8s.io/v1`` Table responses, which is what ``kubectl get`` prints.

kubectl asks the server for ``Accept: application/json;as=Table;g=meta.k8s.io;v=v1`` and prints
the cells it gets back, so the columns and cell texts here are the ones kube-apiserver's
printers produce (``pkg/printers/internalversion``) for built-in kinds, and the ones
apiextensions-apiserver's table convertor produces from a CRD's ``additionalPrinterColumns``.
The current time is passed in, so ages are reproducible in tests.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from gencluster_dev.machinery.selectors import SelectorError, label_selector_from_object
from gencluster_dev.machinery.storage import (
    access_modes_text,
    claim_class,
    is_default_class,
    volume_class,
)

__all__ = ["JsonPathError", "evaluate_jsonpath", "human_duration", "table_for"]

NAME_DESCRIPTION = (
    "Name must be unique within a namespace. Is required when creating resources, although some "
    "resources may allow a client to request the generation of an appropriate name "
    "automatically. Name is primarily intended for creation idempotence and configuration "
    "definition. Cannot be updated. More info: "
    "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"
)
CREATION_TIMESTAMP_DESCRIPTION = (
    "CreationTimestamp is a timestamp representing the server time when this object was "
    "created. It is not guaranteed to be set in happens-before order across separate "
    "operations. Clients may not set this value. It is represented in RFC3339 form and is in "
    "UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"
)


# --- durations and timestamps ----------------------------------------------------------------


def human_duration(delta: timedelta) -> str:
    """duration.HumanDuration: the compact age kubectl prints ("5m3s", "3d", "2y45d")."""
    seconds = int(delta.total_seconds())
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 60 * 2:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        remainder = seconds % 60
        return f"{minutes}m" if remainder == 0 else f"{minutes}m{remainder}s"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = seconds // 3600
    if hours < 8:
        remainder = minutes % 60
        return f"{hours}h" if remainder == 0 else f"{hours}h{remainder}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        remainder = hours % 24
        return f"{hours // 24}d" if remainder == 0 else f"{hours // 24}d{remainder}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        years = hours // 24 // 365
        return f"{years}y" if days == 0 else f"{years}y{days}d"
    return f"{hours // 24 // 365}y"


def _parse_timestamp(text: Any) -> datetime | None:
    """An RFC 3339 timestamp (metav1.Time or MicroTime), or None if absent or malformed."""
    if not isinstance(text, str) or not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _since(timestamp: Any, now: datetime) -> str:
    """translateTimestampSince: "<unknown>" for a missing timestamp, else the human age."""
    parsed = _parse_timestamp(timestamp)
    if parsed is None:
        return "<unknown>"
    return human_duration(_aware(now) - parsed)


# --- JSONPath --------------------------------------------------------------------------------


class JsonPathError(ValueError):
    """A JSONPath expression outside the supported subset, or malformed."""


_FILTER = re.compile(
    r"""^\s*@((?:\.[^.\s=!<>]+)*)\s*(?:(==|!=|<=|>=|<|>)\s*(.+?))?\s*$"""
)


def _split_steps(path: str) -> list[tuple[str, str]]:
    """Tokenise ``.a.b[0][*]..c[?(@.x=="y")]`` into (kind, argument) steps."""
    text = path.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    if text.startswith("$"):
        text = text[1:]
    steps: list[tuple[str, str]] = []
    position = 0
    while position < len(text):
        if text.startswith("..", position):
            steps.append(("recurse", ""))
            position += 2
            if position < len(text) and text[position] not in ".[":
                name, position = _read_name(text, position)
                steps.append(("field", name))
            continue
        character = text[position]
        if character == "[":
            end = _matching_bracket(text, position)
            steps.append(("bracket", text[position + 1:end].strip()))
            position = end + 1
            continue
        if character == ".":
            position += 1
            if position < len(text) and text[position] not in ".[":
                name, position = _read_name(text, position)
                steps.append(("field", name))
            continue
        if position == 0:
            name, position = _read_name(text, position)
            steps.append(("field", name))
            continue
        raise JsonPathError(f"unrecognized character in action: {text[position:]!r}")
    return steps


def _read_name(text: str, position: int) -> tuple[str, int]:
    name: list[str] = []
    while position < len(text) and text[position] not in ".[":
        if text[position] == "\\" and position + 1 < len(text):
            name.append(text[position + 1])
            position += 2
            continue
        name.append(text[position])
        position += 1
    return "".join(name), position


def _matching_bracket(text: str, start: int) -> int:
    depth = 0
    quote: str | None = None
    for index in range(start, len(text)):
        character = text[index]
        if quote:
            if character == quote:
                quote = None
        elif character in "'\"":
            quote = character
        elif character == "[":
            depth += 1
        elif character == "]":
            depth -= 1
            if depth == 0:
                return index
    raise JsonPathError(f"unclosed array expect ]: {text[start:]!r}")


def _children(value: Any) -> list[Any]:
    if isinstance(value, Mapping):
        return [value[key] for key in sorted(value)]
    if isinstance(value, list):
        return list(value)
    return []


def _descendants(value: Any) -> list[Any]:
    found = [value]
    for child in _children(value):
        found.extend(_descendants(child))
    return found


def _literal(text: str) -> Any:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if text in ("true", "false"):
        return text == "true"
    try:
        return json.loads(text)
    except ValueError:
        return text


def _compare(left: Any, operator: str, right: Any) -> bool:
    if operator == "==":
        return bool(left == right) and isinstance(left, bool) == isinstance(right, bool)
    if operator == "!=":
        return not _compare(left, "==", right)
    both_numbers = isinstance(left, int | float) and isinstance(right, int | float)
    both_strings = isinstance(left, str) and isinstance(right, str)
    if not (both_numbers or both_strings):
        return False
    comparisons: dict[str, Callable[[Any, Any], bool]] = {
        "<": lambda a, b: a < b, ">": lambda a, b: a > b,
        "<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b,
    }
    return comparisons[operator](left, right)


def _apply_bracket(values: list[Any], argument: str) -> list[Any]:
    if argument == "*":
        return [child for value in values for child in _children(value)]
    if argument.startswith("?"):
        expression = argument[1:].strip()
        if not (expression.startswith("(") and expression.endswith(")")):
            raise JsonPathError(f"invalid filter: {argument!r}")
        match = _FILTER.match(expression[1:-1])
        if match is None:
            raise JsonPathError(f"unsupported filter: {argument!r}")
        field_path, operator, literal = match.groups()
        results: list[Any] = []
        for value in values:
            for item in value if isinstance(value, list) else _children(value):
                found = evaluate_jsonpath(item, field_path) if field_path else [item]
                if operator is None:
                    if found:
                        results.append(item)
                elif found and _compare(found[0], operator, _literal(literal)):
                    results.append(item)
        return results
    if argument[:1] in "'\"":
        keys = [_literal(part) for part in argument.split(",")]
        return [
            value[key] for value in values if isinstance(value, Mapping)
            for key in keys if key in value
        ]
    if ":" in argument:
        parts = [part.strip() for part in argument.split(":")]
        try:
            bounds = [int(part) if part else None for part in parts]
        except ValueError:
            raise JsonPathError(f"invalid array slice: {argument!r}") from None
        start, stop = bounds[0], bounds[1]
        step = bounds[2] if len(bounds) > 2 and bounds[2] else 1
        return [
            item for value in values if isinstance(value, list)
            for item in value[slice(start, stop, step)]
        ]
    try:
        index = int(argument)
    except ValueError:
        raise JsonPathError(f"invalid array index: {argument!r}") from None
    results = []
    for value in values:
        if isinstance(value, list) and -len(value) <= index < len(value):
            results.append(value[index])
    return results


def evaluate_jsonpath(obj: Any, path: str) -> list[Any]:
    """The Kubernetes JSONPath subset printer columns use; missing keys yield nothing.

    Supports ``.a.b``, ``['a.b']``, ``[0]``, ``[-1]``, ``[1:3]``, ``[*]``, ``.*``, ``..name``
    and filters ``[?(@.type=="Ready")]`` (``==``, ``!=``, ``<``, ``>``, ``<=``, ``>=``, or
    existence), optionally wrapped in ``{}`` as kubectl writes them.
    """
    values = [obj]
    for kind, argument in _split_steps(path):
        if kind == "recurse":
            values = [found for value in values for found in _descendants(value)]
        elif kind == "field":
            if argument == "*":
                values = [child for value in values for child in _children(value)]
            else:
                values = [
                    value[argument] for value in values
                    if isinstance(value, Mapping) and argument in value
                ]
        else:
            values = _apply_bracket(values, argument)
    return values


# --- printer columns of CustomResourceDefinitions --------------------------------------------


def _go_print(value: Any) -> str:
    """fmt.Print of a decoded JSON value, as the JSONPath printer shows non-strings."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e21 else repr(value)
    if isinstance(value, Mapping):
        inner = " ".join(f"{key}:{_go_print(value[key])}" for key in sorted(value))
        return f"map[{inner}]"
    if isinstance(value, list):
        return "[" + " ".join(_go_print(item) for item in value) + "]"
    return str(value)


def _custom_cell(column_type: str, value: Any, now: datetime) -> Any:
    """cellForJSONValue of the apiextensions table convertor."""
    if value is None:
        return None
    if column_type == "string":
        return value if isinstance(value, str) else _go_print(value)
    if column_type == "integer":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return int(value)
    if column_type == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return float(value)
    if column_type == "boolean":
        return value if isinstance(value, bool) else None
    if column_type == "date":
        if not isinstance(value, str):
            return None
        parsed = _parse_timestamp(value)
        if parsed is None:
            return "<invalid>"
        return human_duration(_aware(now) - parsed)
    return None


def _custom_columns(
    columns: list[Mapping[str, Any]], now: datetime
) -> tuple[list[dict[str, Any]], Callable[[Mapping[str, Any]], list[Any]]]:
    if not columns:
        columns = [
            {
                "name": "Age",
                "type": "date",
                "jsonPath": ".metadata.creationTimestamp",
                "description": CREATION_TIMESTAMP_DESCRIPTION,
            }
        ]
    definitions = [_column("Name", format_="name", description=NAME_DESCRIPTION)]
    for column in columns:
        json_path = str(column.get("jsonPath", ""))
        definitions.append(
            _column(
                str(column.get("name", "")),
                type_=str(column.get("type", "string")),
                format_=str(column.get("format", "")),
                description=str(
                    column.get("description")
                    or f"Custom resource definition column (in JSONPath format): {json_path}"
                ),
                priority=int(column.get("priority") or 0),
            )
        )

    def cells(item: Mapping[str, Any]) -> list[Any]:
        row: list[Any] = [_metadata(item).get("name", "")]
        for column in columns:
            try:
                found = evaluate_jsonpath(item, str(column.get("jsonPath", "")))
            except JsonPathError:
                found = []
            value = found[0] if found else None
            row.append(_custom_cell(str(column.get("type", "string")), value, now))
        return row

    return definitions, cells


# --- built-in printers -----------------------------------------------------------------------


def _column(
    name: str, *, type_: str = "string", format_: str = "", description: str = "",
    priority: int = 0,
) -> dict[str, Any]:
    return {
        "name": name,
        "type": type_,
        "format": format_,
        "description": description,
        "priority": priority,
    }


def _name_column() -> dict[str, Any]:
    return _column("Name", format_="name", description=NAME_DESCRIPTION)


def _age_column() -> dict[str, Any]:
    return _column("Age", description=CREATION_TIMESTAMP_DESCRIPTION)


def _metadata(item: Mapping[str, Any]) -> Mapping[str, Any]:
    metadata = item.get("metadata")
    return metadata if isinstance(metadata, Mapping) else {}


def _get(item: Any, *path: str) -> Any:
    current = item
    for part in path:
        if not isinstance(current, Mapping):
            return None
        current = current.get(part)
    return current


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _age(item: Mapping[str, Any], now: datetime) -> str:
    return _since(_metadata(item).get("creationTimestamp"), now)


def _format_labels(labels: Any) -> str:
    """labels.FormatLabels: sorted ``k=v`` pairs, ``<none>`` when empty."""
    if not isinstance(labels, Mapping) or not labels:
        return "<none>"
    return ",".join(f"{key}={labels[key]}" for key in sorted(labels))


def _pod_cells(pod: Mapping[str, Any], now: datetime) -> list[Any]:
    """printPod: READY, STATUS (the reason kubectl derives), RESTARTS and the wide columns."""
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    containers = _list(spec.get("containers"))
    init_containers = _list(spec.get("initContainers"))
    restartable_init = {
        container.get("name")
        for container in init_containers
        if isinstance(container, Mapping) and container.get("restartPolicy") == "Always"
    }
    total = len(containers) + len(restartable_init)
    ready = 0
    restarts = 0
    restartable_restarts = 0
    last_restart: datetime | None = None
    last_restartable_restart: datetime | None = None
    phase = status.get("phase") or ""
    reason = status.get("reason") or phase
    conditions = [c for c in _list(status.get("conditions")) if isinstance(c, Mapping)]
    for condition in conditions:
        if condition.get("type") == "PodScheduled" and condition.get("reason") == "SchedulingGated":
            reason = "SchedulingGated"

    def later(current: datetime | None, state: Any) -> datetime | None:
        finished = _parse_timestamp(_get(state, "lastState", "terminated", "finishedAt"))
        if finished is not None and (current is None or finished > current):
            return finished
        return current

    initializing = False
    init_statuses = [
        s for s in _list(status.get("initContainerStatuses")) if isinstance(s, Mapping)
    ]
    for index, container in enumerate(init_statuses):
        count = int(container.get("restartCount") or 0)
        restarts += count
        last_restart = later(last_restart, container)
        is_restartable = container.get("name") in restartable_init
        if is_restartable:
            restartable_restarts += count
            last_restartable_restart = later(last_restartable_restart, container)
        terminated = _get(container, "state", "terminated")
        waiting = _get(container, "state", "waiting")
        if isinstance(terminated, Mapping) and int(terminated.get("exitCode") or 0) == 0:
            continue
        if is_restartable and container.get("started"):
            if container.get("ready"):
                ready += 1
            continue
        if isinstance(terminated, Mapping):
            if terminated.get("reason"):
                reason = f"Init:{terminated['reason']}"
            elif terminated.get("signal"):
                reason = f"Init:Signal:{terminated['signal']}"
            else:
                reason = f"Init:ExitCode:{terminated.get('exitCode', 0)}"
        elif (
            isinstance(waiting, Mapping)
            and waiting.get("reason")
            and waiting.get("reason") != "PodInitializing"
        ):
            reason = f"Init:{waiting['reason']}"
        else:
            reason = f"Init:{index}/{len(init_containers)}"
        initializing = True
        break

    initialized = any(
        condition.get("type") == "Initialized" and condition.get("status") == "True"
        for condition in conditions
    )
    if not initializing or initialized:
        restarts = restartable_restarts
        last_restart = last_restartable_restart
        has_running = False
        statuses = [s for s in _list(status.get("containerStatuses")) if isinstance(s, Mapping)]
        for container in reversed(statuses):
            restarts += int(container.get("restartCount") or 0)
            last_restart = later(last_restart, container)
            waiting = _get(container, "state", "waiting")
            terminated = _get(container, "state", "terminated")
            running = _get(container, "state", "running")
            if isinstance(waiting, Mapping) and waiting.get("reason"):
                reason = waiting["reason"]
            elif isinstance(terminated, Mapping) and terminated.get("reason"):
                reason = terminated["reason"]
            elif isinstance(terminated, Mapping):
                if terminated.get("signal"):
                    reason = f"Signal:{terminated['signal']}"
                else:
                    reason = f"ExitCode:{terminated.get('exitCode', 0)}"
            elif container.get("ready") and isinstance(running, Mapping):
                has_running = True
                ready += 1
        if reason == "Completed" and has_running:
            pod_ready = any(
                condition.get("type") == "Ready" and condition.get("status") == "True"
                for condition in conditions
            )
            reason = "Running" if pod_ready else "NotReady"

    deleting = _metadata(pod).get("deletionTimestamp") is not None
    if deleting and status.get("reason") == "NodeLost":
        reason = "Unknown"
    elif deleting and phase not in ("Succeeded", "Failed"):
        reason = "Terminating"

    restarts_text = str(restarts)
    if restarts and last_restart is not None:
        restarts_text = f"{restarts} ({human_duration(_aware(now) - last_restart)} ago)"

    pod_ips = [entry for entry in _list(status.get("podIPs")) if isinstance(entry, Mapping)]
    pod_ip = (pod_ips[0].get("ip") if pod_ips else None) or status.get("podIP") or "<none>"
    readiness_gates = [g for g in _list(spec.get("readinessGates")) if isinstance(g, Mapping)]
    gates_text = "<none>"
    if readiness_gates:
        true_conditions = 0
        for gate in readiness_gates:
            for condition in conditions:
                if condition.get("type") == gate.get("conditionType"):
                    if condition.get("status") == "True":
                        true_conditions += 1
                    break
        gates_text = f"{true_conditions}/{len(readiness_gates)}"
    return [
        _metadata(pod).get("name", ""),
        f"{ready}/{total}",
        reason,
        restarts_text,
        _age(pod, now),
        pod_ip,
        spec.get("nodeName") or "<none>",
        status.get("nominatedNodeName") or "<none>",
        gates_text,
    ]


def _pod_row_conditions(pod: Mapping[str, Any]) -> list[dict[str, str]] | None:
    phase = _get(pod, "status", "phase")
    if phase == "Succeeded":
        return [{"type": "Completed", "status": "True", "reason": "Succeeded",
                 "message": "The pod has completed successfully."}]
    if phase == "Failed":
        return [{"type": "Completed", "status": "True", "reason": "Failed",
                 "message": "The pod failed."}]
    return None


def _service_external_ip(service: Mapping[str, Any]) -> str:
    spec = service.get("spec") or {}
    external_ips = [str(ip) for ip in _list(spec.get("externalIPs"))]
    service_type = spec.get("type") or "ClusterIP"
    ingress = _list(_get(service, "status", "loadBalancer", "ingress"))
    balancer = [
        str(entry.get("ip") or entry.get("hostname"))
        for entry in ingress
        if isinstance(entry, Mapping) and (entry.get("ip") or entry.get("hostname"))
    ]
    if service_type in ("ClusterIP", "NodePort"):
        # Unlike a real cluster, the local Service proxy makes every Service reachable from the
        # host at the address it publishes in status.loadBalancer.ingress: show it, so
        # `kubectl get svc` tells users where to connect.
        shown = external_ips or balancer
        return ",".join(shown) if shown else "<none>"
    if service_type == "LoadBalancer":
        if external_ips:
            return ",".join(balancer + external_ips)
        return ",".join(balancer) if balancer else "<pending>"
    if service_type == "ExternalName":
        return str(spec.get("externalName") or "")
    return "<unknown>"


def _service_cells(service: Mapping[str, Any], now: datetime) -> list[Any]:
    spec = service.get("spec") or {}
    cluster_ips = _list(spec.get("clusterIPs"))
    cluster_ip = (cluster_ips[0] if cluster_ips else spec.get("clusterIP")) or "<none>"
    pieces = []
    for port in _list(spec.get("ports")):
        if not isinstance(port, Mapping):
            continue
        protocol = port.get("protocol") or "TCP"
        if port.get("nodePort"):
            pieces.append(f"{port.get('port')}:{port['nodePort']}/{protocol}")
        else:
            pieces.append(f"{port.get('port')}/{protocol}")
    return [
        _metadata(service).get("name", ""),
        spec.get("type") or "ClusterIP",
        cluster_ip,
        _service_external_ip(service),
        ",".join(pieces) or "<none>",
        _age(service, now),
        _format_labels(spec.get("selector")),
    ]


def _node_cells(node: Mapping[str, Any], now: datetime) -> list[Any]:
    conditions = {
        c.get("type"): c for c in _list(_get(node, "status", "conditions"))
        if isinstance(c, Mapping)
    }
    states: list[str] = []
    ready = conditions.get("Ready")
    if ready is not None:
        states.append("Ready" if ready.get("status") == "True" else "NotReady")
    if not states:
        states.append("Unknown")
    if _get(node, "spec", "unschedulable"):
        states.append("SchedulingDisabled")
    roles: set[str] = set()
    for key, value in (_metadata(node).get("labels") or {}).items():
        if key.startswith("node-role.kubernetes.io/"):
            role = key[len("node-role.kubernetes.io/"):]
            if role:
                roles.add(role)
        elif key == "kubernetes.io/role" and value:
            roles.add(str(value))
    info = _get(node, "status", "nodeInfo") or {}
    addresses = [a for a in _list(_get(node, "status", "addresses")) if isinstance(a, Mapping)]

    def address(kind: str) -> str:
        for entry in addresses:
            if entry.get("type") == kind:
                return str(entry.get("address"))
        return "<none>"

    return [
        _metadata(node).get("name", ""),
        ",".join(states),
        ",".join(sorted(roles)) or "<none>",
        _age(node, now),
        info.get("kubeletVersion", ""),
        address("InternalIP"),
        address("ExternalIP"),
        info.get("osImage") or "<unknown>",
        info.get("kernelVersion") or "<unknown>",
        info.get("containerRuntimeVersion") or "<unknown>",
    ]


def _endpoints_text(endpoints: Mapping[str, Any]) -> str:
    """formatEndpoints: up to three ``ip:port`` entries, then ``+ N more...``."""
    subsets = [s for s in _list(endpoints.get("subsets")) if isinstance(s, Mapping)]
    if not subsets:
        return "<none>"
    shown: list[str] = []
    limit = 3
    more = False
    count = 0
    for subset in subsets:
        addresses = [a for a in _list(subset.get("addresses")) if isinstance(a, Mapping)]
        ports = [p for p in _list(subset.get("ports")) if isinstance(p, Mapping)]
        if not ports:
            count += len(addresses)
            for entry in addresses:
                if len(shown) == limit:
                    more = True
                    break
                shown.append(str(entry.get("ip")))
            continue
        for port in ports:
            count += len(addresses)
            for entry in addresses:
                if len(shown) == limit:
                    more = True
                    break
                ip = str(entry.get("ip"))
                host = f"[{ip}]" if ":" in ip else ip
                shown.append(f"{host}:{port.get('port')}")
    text = ",".join(shown)
    if more:
        return f"{text} + {count - limit} more..."
    return text


def _event_cells(event: Mapping[str, Any], now: datetime) -> list[Any]:
    first_seen = _since(event.get("firstTimestamp"), now)
    if _parse_timestamp(event.get("firstTimestamp")) is None:
        first_seen = _since(event.get("eventTime"), now)
    last_seen = _since(event.get("lastTimestamp"), now)
    if _parse_timestamp(event.get("lastTimestamp")) is None:
        last_seen = first_seen
    count = event.get("count") or 0
    series = event.get("series")
    if isinstance(series, Mapping):
        last_seen = _since(series.get("lastObservedTime"), now)
        count = series.get("count") or 0
    elif not count:
        count = 1
    involved = event.get("involvedObject") or {}
    kind = str(involved.get("kind") or "").lower()
    target = f"{kind}/{involved['name']}" if involved.get("name") else kind
    source = event.get("source") or {}
    component = source.get("component") or event.get("reportingComponent") or ""
    host = source.get("host") or event.get("reportingInstance") or ""
    return [
        last_seen,
        event.get("type", ""),
        event.get("reason", ""),
        target,
        involved.get("fieldPath", ""),
        f"{component}, {host}" if host else component,
        str(event.get("message") or "").strip(),
        first_seen,
        int(count),
        _metadata(event).get("name", ""),
    ]


def _deployment_cells(deployment: Mapping[str, Any], now: datetime) -> list[Any]:
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    containers = [
        c for c in _list(_get(spec, "template", "spec", "containers")) if isinstance(c, Mapping)
    ]
    selector = spec.get("selector")
    return [
        _metadata(deployment).get("name", ""),
        f"{int(status.get('readyReplicas') or 0)}/{int(spec.get('replicas', 1) or 0)}",
        int(status.get("updatedReplicas") or 0),
        int(status.get("availableReplicas") or 0),
        _age(deployment, now),
        ",".join(str(c.get("name", "")) for c in containers),
        ",".join(str(c.get("image", "")) for c in containers),
        _selector_text(selector),
    ]


def _template_containers(item: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [c for c in _list(_get(item, "spec", "template", "spec", "containers"))
            if isinstance(c, Mapping)]


def _containers_and_images(item: Mapping[str, Any]) -> list[str]:
    containers = _template_containers(item)
    return [",".join(str(c.get("name", "")) for c in containers),
            ",".join(str(c.get("image", "")) for c in containers)]


def _replica_set_cells(replica_set: Mapping[str, Any], now: datetime) -> list[Any]:
    spec = replica_set.get("spec") or {}
    status = replica_set.get("status") or {}
    return [
        _metadata(replica_set).get("name", ""),
        int(spec.get("replicas", 1) or 0),
        int(status.get("replicas") or 0),
        int(status.get("readyReplicas") or 0),
        _age(replica_set, now),
        *_containers_and_images(replica_set),
        _selector_text(spec.get("selector")),
    ]


def _stateful_set_cells(stateful_set: Mapping[str, Any], now: datetime) -> list[Any]:
    spec = stateful_set.get("spec") or {}
    status = stateful_set.get("status") or {}
    return [
        _metadata(stateful_set).get("name", ""),
        f"{int(status.get('readyReplicas') or 0)}/{int(spec.get('replicas', 1) or 0)}",
        _age(stateful_set, now),
        *_containers_and_images(stateful_set),
    ]


def _daemon_set_cells(daemon_set: Mapping[str, Any], now: datetime) -> list[Any]:
    status = daemon_set.get("status") or {}
    node_selector = _get(daemon_set, "spec", "template", "spec", "nodeSelector")
    return [
        _metadata(daemon_set).get("name", ""),
        int(status.get("desiredNumberScheduled") or 0),
        int(status.get("currentNumberScheduled") or 0),
        int(status.get("numberReady") or 0),
        int(status.get("updatedNumberScheduled") or 0),
        int(status.get("numberAvailable") or 0),
        _format_labels(node_selector),
        _age(daemon_set, now),
        *_containers_and_images(daemon_set),
        _selector_text(_get(daemon_set, "spec", "selector")),
    ]


def _job_cells(job: Mapping[str, Any], now: datetime) -> list[Any]:
    spec = job.get("spec") or {}
    status = job.get("status") or {}
    true_conditions = {c.get("type") for c in _list(status.get("conditions"))
                       if isinstance(c, Mapping) and c.get("status") == "True"}
    state = "Running"
    for kind in ("Complete", "Failed", "FailureTarget", "SuccessCriteriaMet", "Suspended"):
        if kind in true_conditions:
            state = kind
            break
    succeeded = int(status.get("succeeded") or 0)
    if spec.get("completions") is not None:
        completions = f"{succeeded}/{int(spec['completions'])}"
    else:
        parallelism = int(spec.get("parallelism", 1) or 0)
        completions = f"{succeeded}/1 of {parallelism}" if parallelism > 1 else f"{succeeded}/1"
    start = _parse_timestamp(status.get("startTime"))
    end = _parse_timestamp(status.get("completionTime")) or _aware(now)
    duration = human_duration(end - start) if start is not None else ""
    return [
        _metadata(job).get("name", ""), state, completions, duration, _age(job, now),
        *_containers_and_images(job), _selector_text(spec.get("selector")),
    ]


def _controller_revision_cells(revision: Mapping[str, Any], now: datetime) -> list[Any]:
    owner = next((ref for ref in _list(_metadata(revision).get("ownerReferences"))
                  if isinstance(ref, Mapping) and ref.get("controller")), None)
    controller = "<none>"
    if owner is not None:
        group = str(owner.get("apiVersion", "")).rpartition("/")[0]
        kind = str(owner.get("kind", "")).lower()
        controller = f"{kind}.{group}/{owner.get('name', '')}" if group else (
            f"{kind}/{owner.get('name', '')}")
    return [_metadata(revision).get("name", ""), controller, int(revision.get("revision") or 0),
            _age(revision, now)]


def _selector_text(selector: Any) -> str:
    """metav1.FormatLabelSelector: canonical text, ``<none>`` if empty, ``<error>`` if bad."""
    if selector is not None and not isinstance(selector, Mapping):
        return "<error>"
    try:
        text = str(label_selector_from_object(selector))
    except SelectorError:
        return "<error>"
    return text or "<none>"


def _int_or_string_text(value: Any) -> str:
    if value is None:
        return "N/A"
    return str(value)


def _network_policy_cells(policy: Mapping[str, Any], now: datetime) -> list[Any]:
    return [_metadata(policy).get("name", ""),
            _selector_text((policy.get("spec") or {}).get("podSelector") or {}), _age(policy, now)]


def _pdb_cells(budget: Mapping[str, Any], now: datetime) -> list[Any]:
    spec = budget.get("spec") or {}
    return [
        _metadata(budget).get("name", ""),
        _int_or_string_text(spec.get("minAvailable")),
        _int_or_string_text(spec.get("maxUnavailable")),
        int(_get(budget, "status", "disruptionsAllowed") or 0),
        _age(budget, now),
    ]


def _role_binding_cells(binding: Mapping[str, Any], now: datetime) -> list[Any]:
    role_ref = binding.get("roleRef") or {}
    subjects = [s for s in _list(binding.get("subjects")) if isinstance(s, Mapping)]

    def names(kind: str) -> str:
        found = []
        for subject in subjects:
            if subject.get("kind") != kind:
                continue
            if kind == "ServiceAccount":
                found.append(f"{subject.get('namespace', '')}/{subject.get('name', '')}")
            else:
                found.append(str(subject.get("name", "")))
        return ", ".join(found)

    return [
        _metadata(binding).get("name", ""),
        f"{role_ref.get('kind', '')}/{role_ref.get('name', '')}",
        _age(binding, now),
        names("User"),
        names("Group"),
        names("ServiceAccount"),
    ]


def _storage_text(value: Any) -> str:
    return "" if value is None else str(value)


def _claim_cells(claim: Mapping[str, Any], now: datetime) -> list[Any]:
    """printPersistentVolumeClaim: capacity and access modes only once a volume is named
    (then a missing capacity prints as the zero quantity, "0")."""
    spec = claim.get("spec") or {}
    status = claim.get("status") or {}
    phase = "Terminating" if _metadata(claim).get("deletionTimestamp") else status.get(
        "phase", "")
    capacity = modes = ""
    if spec.get("volumeName"):
        modes = access_modes_text(status.get("accessModes"))
        capacity = _storage_text((status.get("capacity") or {}).get("storage")) or "0"
    return [
        _metadata(claim).get("name", ""), phase, spec.get("volumeName") or "", capacity, modes,
        claim_class(claim), spec.get("volumeAttributesClassName") or "<unset>",
        _age(claim, now), spec.get("volumeMode") or "<unset>",
    ]


def _volume_cells(volume: Mapping[str, Any], now: datetime) -> list[Any]:
    """printPersistentVolume: CLAIM is namespace/name of `claimRef`."""
    spec = volume.get("spec") or {}
    status = volume.get("status") or {}
    ref = spec.get("claimRef")
    claim = f"{ref.get('namespace', '')}/{ref.get('name', '')}" if isinstance(ref, Mapping) \
        else ""
    phase = "Terminating" if _metadata(volume).get("deletionTimestamp") else status.get(
        "phase", "")
    return [
        _metadata(volume).get("name", ""),
        _storage_text((spec.get("capacity") or {}).get("storage")) or "0",
        access_modes_text(spec.get("accessModes")),
        spec.get("persistentVolumeReclaimPolicy", ""), phase, claim, volume_class(volume),
        spec.get("volumeAttributesClassName") or "<unset>", status.get("reason", ""),
        _age(volume, now), spec.get("volumeMode") or "<unset>",
    ]


def _storage_class_cells(sc: Mapping[str, Any], now: datetime) -> list[Any]:
    """printStorageClass: " (default)" after the default class's name."""
    name = str(_metadata(sc).get("name", ""))
    if is_default_class(sc):
        name += " (default)"
    return [name, sc.get("provisioner", ""), sc.get("reclaimPolicy") or "Delete",
            sc.get("volumeBindingMode") or "Immediate", bool(sc.get("allowVolumeExpansion")),
            _age(sc, now)]


def _created_at(item: Mapping[str, Any]) -> str:
    parsed = _parse_timestamp(_metadata(item).get("creationTimestamp"))
    if parsed is None:
        return "0001-01-01T00:00:00Z"
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_CellsFunction = Callable[[Mapping[str, Any], datetime], list[Any]]


def _simple(*extra: Callable[[Mapping[str, Any]], Any]) -> _CellsFunction:
    """Cells: name, the extra values, then age (the shape of most built-in printers)."""

    def cells(item: Mapping[str, Any], now: datetime) -> list[Any]:
        return [_metadata(item).get("name", ""), *(f(item) for f in extra), _age(item, now)]

    return cells


_BUILT_IN: dict[str, tuple[list[dict[str, Any]], _CellsFunction]] = {
    "Pod": (
        [
            _name_column(),
            _column("Ready", description="The aggregate readiness state of this pod for "
                    "accepting traffic."),
            _column("Status", description="The aggregate status of the containers in this pod."),
            _column("Restarts", description="The number of times the containers in this pod "
                    "have been restarted and when the last container in this pod has restarted."),
            _age_column(),
            _column("IP", priority=1, description="podIP address allocated to the pod."),
            _column("Node", priority=1, description="NodeName indicates in which node this pod "
                    "is scheduled."),
            _column("Nominated Node", priority=1, description="nominatedNodeName is set when "
                    "this pod preempts other pods on the node."),
            _column("Readiness Gates", priority=1, description="If specified, all readiness "
                    "gates will be evaluated for pod readiness."),
        ],
        _pod_cells,
    ),
    "Service": (
        [
            _name_column(),
            _column("Type", description="type determines how the Service is exposed."),
            _column("Cluster-IP", description="clusterIP is the IP address of the service."),
            _column("External-IP", description="externalIPs is a list of IP addresses for which "
                    "nodes in the cluster will also accept traffic for this service."),
            _column("Port(s)", description="The list of ports that are exposed by this service."),
            _age_column(),
            _column("Selector", priority=1, description="Route service traffic to pods with "
                    "label keys and values matching this selector."),
        ],
        _service_cells,
    ),
    "Namespace": (
        [_name_column(), _column("Status", description="The status of the namespace"),
         _age_column()],
        _simple(lambda item: _get(item, "status", "phase") or ""),
    ),
    "Node": (
        [
            _name_column(),
            _column("Status", description="The status of the node"),
            _column("Roles", description="The roles of the node"),
            _age_column(),
            _column("Version", description="Kubelet Version reported by the node."),
            _column("Internal-IP", priority=1, description="List of addresses reachable to "
                    "the node."),
            _column("External-IP", priority=1, description="List of addresses reachable to "
                    "the node."),
            _column("OS-Image", priority=1, description="OS Image reported by the node."),
            _column("Kernel-Version", priority=1, description="Kernel Version reported by the "
                    "node."),
            _column("Container-Runtime", priority=1, description="Container Runtime Version "
                    "reported by the node."),
        ],
        _node_cells,
    ),
    "Lease": (
        [_name_column(), _column("Holder", description="HolderIdentity contains the identity "
                                  "of the holder of a current lease."), _age_column()],
        _simple(lambda item: _get(item, "spec", "holderIdentity") or ""),
    ),
    "ConfigMap": (
        [_name_column(), _column("Data", description="Data contains the configuration data."),
         _age_column()],
        _simple(lambda item: len(item.get("data") or {}) + len(item.get("binaryData") or {})),
    ),
    "Secret": (
        [
            _name_column(),
            _column("Type", description="Used to facilitate programmatic handling of secret "
                    "data."),
            _column("Data", description="Data contains the secret data."),
            _age_column(),
        ],
        _simple(
            lambda item: item.get("type") or "Opaque", lambda item: len(item.get("data") or {})
        ),
    ),
    "ServiceAccount": (
        [_name_column(), _column("Secrets", description="Secrets is a list of the secrets in "
                                  "the same namespace that pods running using this "
                                  "ServiceAccount are allowed to use."), _age_column()],
        _simple(lambda item: len(_list(item.get("secrets")))),
    ),
    "Endpoints": (
        [_name_column(), _column("Endpoints", description="Endpoints is the list of "
                                  "endpoints."), _age_column()],
        _simple(_endpoints_text),
    ),
    "Event": (
        [
            _column("Last Seen", description="The last time this event was observed."),
            _column("Type", description="Type of this event (Normal, Warning), new types could "
                    "be added in the future."),
            _column("Reason", description="The reason the transition into the object's current "
                    "status happened."),
            _column("Object", description="The object that this event is about."),
            _column("Subobject", priority=1, description="The field of the object that this "
                    "event is about."),
            _column("Source", priority=1, description="The component reporting this event."),
            _column("Message", description="A human-readable description of the status of this "
                    "operation."),
            _column("First Seen", priority=1, description="The time at which the event was "
                    "first recorded."),
            _column("Count", priority=1, description="The number of times this event has "
                    "occurred."),
            _column("Name", priority=1, format_="name", description=NAME_DESCRIPTION),
        ],
        _event_cells,
    ),
    "Deployment": (
        [
            _name_column(),
            _column("Ready", description="Number of the pod with ready state"),
            _column("Up-to-date", description="Total number of non-terminated pods targeted by "
                    "this deployment that have the desired template spec."),
            _column("Available", description="Total number of available pods (ready for at "
                    "least minReadySeconds) targeted by this deployment."),
            _age_column(),
            _column("Containers", priority=1, description="Names of each container in the "
                    "template."),
            _column("Images", priority=1, description="Images referenced by each container in "
                    "the template."),
            _column("Selector", priority=1, description="Label selector for pods. Existing "
                    "ReplicaSets whose pods are selected by this will be the ones affected by "
                    "this deployment."),
        ],
        _deployment_cells,
    ),
    "ReplicaSet": (
        [
            _name_column(),
            _column("Desired", type_="integer", description="Number of desired pods."),
            _column("Current", type_="integer", description="Number of actual pods."),
            _column("Ready", type_="integer", description="Number of ready pods."),
            _age_column(),
            _column("Containers", priority=1, description="Names of each container in the "
                    "template."),
            _column("Images", priority=1, description="Images referenced by each container in "
                    "the template."),
            _column("Selector", priority=1, description="Label selector for pods."),
        ],
        _replica_set_cells,
    ),
    "ControllerRevision": (
        [
            _name_column(),
            _column("Controller", description="Controller of the object."),
            _column("Revision", type_="integer", description="Revision indicates the revision "
                    "of the state represented by Data."),
            _age_column(),
        ],
        _controller_revision_cells,
    ),
    "StatefulSet": (
        [
            _name_column(),
            _column("Ready", description="Number of the pod with ready state"),
            _age_column(),
            _column("Containers", priority=1, description="Names of each container in the "
                    "template."),
            _column("Images", priority=1, description="Images referenced by each container in "
                    "the template."),
        ],
        _stateful_set_cells,
    ),
    "DaemonSet": (
        [
            _name_column(),
            _column("Desired", type_="integer", description="The total number of nodes that "
                    "should be running the daemon pod."),
            _column("Current", type_="integer", description="The number of nodes that are "
                    "running at least 1 daemon pod and are supposed to run the daemon pod."),
            _column("Ready", type_="integer", description="The number of nodes that should be "
                    "running the daemon pod and have one or more of the daemon pod running and "
                    "ready."),
            _column("Up-to-date", type_="integer", description="The total number of nodes that "
                    "are running updated daemon pod"),
            _column("Available", type_="integer", description="The number of nodes that should "
                    "be running the daemon pod and have one or more of the daemon pod running "
                    "and available."),
            _column("Node Selector", description="NodeSelector is a selector which must be "
                    "true for the pod to fit on a node."),
            _age_column(),
            _column("Containers", priority=1, description="Names of each container in the "
                    "template."),
            _column("Images", priority=1, description="Images referenced by each container in "
                    "the template."),
            _column("Selector", priority=1, description="A label query over pods that are "
                    "managed by the daemon set."),
        ],
        _daemon_set_cells,
    ),
    "Job": (
        [
            _name_column(),
            _column("Status", description="Status of the job."),
            _column("Completions", description="The completion status of the job."),
            _column("Duration", description="Time required to complete the job."),
            _age_column(),
            _column("Containers", priority=1, description="Names of each container in the "
                    "template."),
            _column("Images", priority=1, description="Images referenced by each container in "
                    "the template."),
            _column("Selector", priority=1, description="A label query over pods that should "
                    "match the pod count."),
        ],
        _job_cells,
    ),
    "NetworkPolicy": (
        [
            _name_column(),
            _column("Pod-Selector", description="Selects the pods to which this "
                    "NetworkPolicy object applies."),
            _age_column(),
        ],
        _network_policy_cells,
    ),
    "PodDisruptionBudget": (
        [
            _name_column(),
            _column("Min Available", description="The minimum number of pods that must be "
                    "available simultaneously.  This can be either an integer or a string "
                    "specifying a percentage, e.g. \"28%\"."),
            _column("Max Unavailable", description="The maximum number of pods that may be "
                    "unavailable simultaneously.  This can be either an integer or a string "
                    "specifying a percentage, e.g. \"28%\"."),
            _column("Allowed Disruptions", description="Calculated number of pods that may be "
                    "disrupted at this time."),
            _age_column(),
        ],
        _pdb_cells,
    ),
    "RoleBinding": (
        [
            _name_column(),
            _column("Role", description="RoleRef can reference a Role in the current namespace "
                    "or a ClusterRole in the global namespace."),
            _age_column(),
            _column("Users", priority=1, description="Users in the roleBinding"),
            _column("Groups", priority=1, description="Groups in the roleBinding"),
            _column("ServiceAccounts", priority=1, description="ServiceAccounts in the "
                    "roleBinding"),
        ],
        _role_binding_cells,
    ),
    "PersistentVolumeClaim": (
        [
            _name_column(),
            _column("Status", description="phase represents the current phase of "
                    "PersistentVolumeClaim."),
            _column("Volume", description="volumeName is the binding reference to the "
                    "PersistentVolume backing this claim."),
            _column("Capacity", description="capacity represents the actual resources of the "
                    "underlying volume."),
            _column("Access Modes", description="accessModes contains the actual access modes "
                    "the volume backing the PVC has."),
            _column("StorageClass", description="StorageClass of the pvc"),
            _column("VolumeAttributesClass", description="VolumeAttributesClass of the pvc"),
            _age_column(),
            _column("VolumeMode", priority=1, description="volumeMode defines what type of "
                    "volume is required by the claim."),
        ],
        _claim_cells,
    ),
    "PersistentVolume": (
        [
            _name_column(),
            _column("Capacity", description="capacity is the description of the persistent "
                    "volume's resources and capacity."),
            _column("Access Modes", description="accessModes contains all ways the volume can "
                    "be mounted."),
            _column("Reclaim Policy", description="persistentVolumeReclaimPolicy defines what "
                    "happens to a persistent volume when released from its claim."),
            _column("Status", description="phase indicates if a volume is available, bound to "
                    "a claim, or released by a claim."),
            _column("Claim", description="claimRef is part of a bi-directional binding between "
                    "PersistentVolume and PersistentVolumeClaim."),
            _column("StorageClass", description="StorageClass of the pv"),
            _column("VolumeAttributesClass", description="VolumeAttributesClass of the pv"),
            _column("Reason", description="reason is a brief CamelCase string that describes "
                    "any failure and is meant for machine parsing and tidy display in the CLI."),
            _age_column(),
            _column("VolumeMode", priority=1, description="volumeMode defines if a volume is "
                    "intended to be used with a formatted filesystem or to remain in raw block "
                    "state."),
        ],
        _volume_cells,
    ),
    "StorageClass": (
        [
            _name_column(),
            _column("Provisioner", description="provisioner indicates the type of the "
                    "provisioner."),
            _column("ReclaimPolicy", description="reclaimPolicy controls the reclaimPolicy for "
                    "dynamically provisioned PersistentVolumes of this storage class."),
            _column("VolumeBindingMode", description="volumeBindingMode indicates how "
                    "PersistentVolumeClaims should be provisioned and bound."),
            _column("AllowVolumeExpansion", description="allowVolumeExpansion shows whether the "
                    "storage class allow volume expand."),
            _age_column(),
        ],
        _storage_class_cells,
    ),
}
_BUILT_IN["ClusterRoleBinding"] = _BUILT_IN["RoleBinding"]

# Kinds kube-apiserver serves with its default table convertor: NAME, CREATED AT.
_CREATED_AT_KINDS = frozenset({"CustomResourceDefinition", "Role", "ClusterRole"})


def _built_in_columns(
    kind: str, now: datetime
) -> tuple[list[dict[str, Any]], Callable[[Mapping[str, Any]], list[Any]]]:
    if kind in _BUILT_IN:
        definitions, cells = _BUILT_IN[kind]
        return [dict(d) for d in definitions], lambda item: cells(item, now)
    if kind in _CREATED_AT_KINDS:
        definitions = [
            _name_column(),
            _column("Created At", type_="date", description=CREATION_TIMESTAMP_DESCRIPTION),
        ]
        return definitions, lambda item: [_metadata(item).get("name", ""), _created_at(item)]
    return [_name_column(), _age_column()], lambda item: _simple()(item, now)


def _row_object(item: Mapping[str, Any], include_object: str) -> Any:
    if include_object == "Object":
        return item
    if include_object == "Metadata":
        return {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": dict(_metadata(item)),
        }
    return None


def table_for(
    items: list[Mapping[str, Any]],
    columns: list[Mapping[str, Any]] | None,
    *,
    kind: str,
    include_object: str,
    resource_version: str,
    now: datetime,
) -> dict[str, Any]:
    """A ``meta.k8s.io/v1`` Table of ``items``.

    ``columns`` are a CRD version's ``additionalPrinterColumns`` (``[]`` gives NAME, AGE);
    ``None`` selects the built-in printer of ``kind``.  ``include_object`` is the
    ``includeObject`` parameter: ``None``, ``Metadata`` (PartialObjectMetadata) or ``Object``.
    Server-side tables carry every column; kubectl hides priority > 0 unless ``-o wide``.
    """
    if include_object not in ("None", "Metadata", "Object"):
        raise ValueError(f"includeObject must be None, Metadata or Object, not {include_object!r}")
    if columns is None:
        definitions, cells = _built_in_columns(kind, now)
    else:
        definitions, cells = _custom_columns(list(columns), now)
    rows: list[dict[str, Any]] = []
    for item in items:
        row: dict[str, Any] = {"cells": cells(item)}
        if columns is None and kind == "Pod":
            conditions = _pod_row_conditions(item)
            if conditions:
                row["conditions"] = conditions
        row_object = _row_object(item, include_object)
        if row_object is not None:
            row["object"] = row_object
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": definitions,
        "rows": rows,
    }
