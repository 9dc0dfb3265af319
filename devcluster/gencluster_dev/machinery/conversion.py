"""Conversion between the two served forms of Event (core/v1 and events.k8s.io/v1).

Kubernetes stores one Event and serves it in both shapes, so `kubectl describe` (core/v1)
shows the events a controller wrote through events.k8s.io/v1 and vice versa. Stored objects
are core/v1; these pure functions rename the fields on the way in and out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# core/v1 field -> events.k8s.io/v1 field
CORE_TO_EVENTS_V1: dict[str, str] = {
    "involvedObject": "regarding",
    "message": "note",
    "reportingComponent": "reportingController",
    "source": "deprecatedSource",
    "firstTimestamp": "deprecatedFirstTimestamp",
    "lastTimestamp": "deprecatedLastTimestamp",
    "count": "deprecatedCount",
}
EVENTS_V1_TO_CORE = {v: k for k, v in CORE_TO_EVENTS_V1.items()}


def _renamed(obj: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    return {names.get(key, key): value for key, value in obj.items()}


def event_to_events_v1(core_event: Mapping[str, Any]) -> dict[str, Any]:
    """A stored core/v1 Event as events.k8s.io/v1 serves it."""
    out = _renamed(core_event, CORE_TO_EVENTS_V1)
    out["apiVersion"] = "events.k8s.io/v1"
    return out


def event_from_events_v1(event: Mapping[str, Any]) -> dict[str, Any]:
    """An events.k8s.io/v1 Event in its stored core/v1 form."""
    out = _renamed(event, EVENTS_V1_TO_CORE)
    out["apiVersion"] = "v1"
    return out


Converter = Any  # Callable[[Mapping[str, Any]], dict[str, Any]]
TO_STORAGE: dict[tuple[str, str], Converter] = {("events.k8s.io", "Event"): event_from_events_v1}
FROM_STORAGE: dict[tuple[str, str], Converter] = {("events.k8s.io", "Event"): event_to_events_v1}


def to_storage(group: str, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    """The stored form of an object received at `group` (identity for most kinds)."""
    convert = TO_STORAGE.get((group, kind))
    return convert(obj) if convert else obj


def from_storage(group: str, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    """The served form at `group` of a stored object (identity for most kinds)."""
    convert = FROM_STORAGE.get((group, kind))
    return convert(obj) if convert else obj
