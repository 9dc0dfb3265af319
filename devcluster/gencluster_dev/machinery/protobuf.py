"""Decoding of Kubernetes protobuf request bodies for the kinds kubectl sends that way.

kubectl's imperative commands (`kubectl create namespace|configmap|secret|serviceaccount|
token|role|rolebinding|...`) go through client-go's typed clients, which send
`application/vnd.kubernetes.protobuf` and do not fall back to JSON. This module turns such a
body into the JSON object the API would have received, using the field numbers of the
`generated.proto` files of k8s.io/api for those kinds; any other kind is refused with 415 like
a server that does not speak protobuf for it.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

MAGIC = b"k8s\x00"


class ProtobufError(ValueError):
    """A body that is not a Kubernetes protobuf envelope of a supported kind."""


# A message schema: field number -> (json name, decoder, repeated)
Field = tuple[str, "Decoder", bool]
Schema = dict[int, Field]
Decoder = Callable[[Any], Any]


def _read_varint(data: bytes, offset: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if offset >= len(data):
            raise ProtobufError("truncated varint")
        byte = data[offset]
        offset += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, offset
        shift += 7
        if shift > 63:
            raise ProtobufError("varint too long")


def _fields(data: bytes) -> list[tuple[int, Any]]:
    """(field number, raw value) pairs: ints for varints, bytes for length-delimited."""
    out: list[tuple[int, Any]] = []
    offset = 0
    while offset < len(data):
        key, offset = _read_varint(data, offset)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, offset = _read_varint(data, offset)
        elif wire == 2:
            length, offset = _read_varint(data, offset)
            if offset + length > len(data):
                raise ProtobufError("truncated field")
            value, offset = data[offset:offset + length], offset + length
        elif wire == 1:
            value, offset = data[offset:offset + 8], offset + 8
        elif wire == 5:
            value, offset = data[offset:offset + 4], offset + 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
        out.append((number, value))
    return out


def _string(raw: Any) -> str:
    if not isinstance(raw, bytes):
        raise ProtobufError("expected a string")
    return raw.decode()


def _bytes_b64(raw: Any) -> str:
    if not isinstance(raw, bytes):
        raise ProtobufError("expected bytes")
    return base64.b64encode(raw).decode()


def _int(raw: Any) -> int:
    if not isinstance(raw, int):
        raise ProtobufError("expected an integer")
    return raw - (1 << 64) if raw >= 1 << 63 else raw


def _bool(raw: Any) -> bool:
    return bool(_int(raw))


def _message(schema: Schema) -> Decoder:
    def decode(raw: Any) -> dict[str, Any]:
        if not isinstance(raw, bytes):
            raise ProtobufError("expected a message")
        out: dict[str, Any] = {}
        for number, value in _fields(raw):
            if number not in schema:
                continue
            name, decoder, repeated = schema[number]
            decoded = decoder(value)
            if not repeated and decoded in ("", 0):  # 0 == False: also drops false
                continue  # proto writes zero values; the JSON form omits them (omitempty)
            if repeated:
                out.setdefault(name, []).append(decoded)
            elif isinstance(decoded, dict) and name in out and getattr(
                decoder, "is_map", False
            ):
                out[name].update(decoded)
            else:
                out[name] = decoded
        return out

    return decode


def _map(value_decoder: Decoder) -> Decoder:
    def decode(raw: Any) -> dict[str, Any]:
        entry = dict(_fields(raw))
        return {_string(entry.get(1, b"")): value_decoder(entry.get(2, b""))}

    decode.is_map = True  # type: ignore[attr-defined]
    return decode


def _time(raw: Any) -> str:
    seconds = _int(dict(_fields(raw)).get(1, 0))
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


OWNER_REFERENCE = _message({
    1: ("kind", _string, False), 3: ("name", _string, False), 4: ("uid", _string, False),
    5: ("apiVersion", _string, False), 6: ("controller", _bool, False),
    7: ("blockOwnerDeletion", _bool, False),
})
OBJECT_META = _message({
    1: ("name", _string, False), 2: ("generateName", _string, False),
    3: ("namespace", _string, False), 5: ("uid", _string, False),
    6: ("resourceVersion", _string, False), 7: ("generation", _int, False),
    8: ("creationTimestamp", _time, False),
    11: ("labels", _map(_string), False), 12: ("annotations", _map(_string), False),
    13: ("ownerReferences", OWNER_REFERENCE, True), 14: ("finalizers", _string, True),
})
POLICY_RULE = _message({
    1: ("verbs", _string, True), 2: ("apiGroups", _string, True),
    3: ("resources", _string, True), 4: ("resourceNames", _string, True),
    5: ("nonResourceURLs", _string, True),
})
SUBJECT = _message({
    1: ("kind", _string, False), 2: ("apiGroup", _string, False), 3: ("name", _string, False),
    4: ("namespace", _string, False),
})
ROLE_REF = _message({1: ("apiGroup", _string, False), 2: ("kind", _string, False),
                     3: ("name", _string, False)})
NAME_ONLY = _message({1: ("name", _string, False)})
OBJECT_REFERENCE = _message({
    1: ("kind", _string, False), 2: ("namespace", _string, False), 3: ("name", _string, False),
    4: ("uid", _string, False), 5: ("apiVersion", _string, False),
})

RESOURCE_ATTRIBUTES = _message({
    1: ("namespace", _string, False), 2: ("verb", _string, False), 3: ("group", _string, False),
    4: ("version", _string, False), 5: ("resource", _string, False),
    6: ("subresource", _string, False), 7: ("name", _string, False),
})
NON_RESOURCE_ATTRIBUTES = _message({1: ("path", _string, False), 2: ("verb", _string, False)})
SUBJECT_ACCESS_REVIEW = _message({
    1: ("metadata", OBJECT_META, False),
    2: ("spec", _message({
        1: ("resourceAttributes", RESOURCE_ATTRIBUTES, False),
        2: ("nonResourceAttributes", NON_RESOURCE_ATTRIBUTES, False),
        3: ("user", _string, False), 4: ("groups", _string, True), 6: ("uid", _string, False),
    }), False),
})

KINDS: dict[tuple[str, str], Decoder] = {
    # kubectl auth can-i (authorization/v1 generated.proto)
    ("authorization.k8s.io/v1", "SelfSubjectAccessReview"): _message({
        1: ("metadata", OBJECT_META, False),
        2: ("spec", _message({
            1: ("resourceAttributes", RESOURCE_ATTRIBUTES, False),
            2: ("nonResourceAttributes", NON_RESOURCE_ATTRIBUTES, False),
        }), False),
    }),
    ("authorization.k8s.io/v1", "SelfSubjectRulesReview"): _message({
        1: ("metadata", OBJECT_META, False),
        2: ("spec", _message({1: ("namespace", _string, False)}), False),
    }),
    ("authorization.k8s.io/v1", "SubjectAccessReview"): SUBJECT_ACCESS_REVIEW,
    ("authorization.k8s.io/v1", "LocalSubjectAccessReview"): SUBJECT_ACCESS_REVIEW,
    ("v1", "Namespace"): _message({
        1: ("metadata", OBJECT_META, False),
        2: ("spec", _message({1: ("finalizers", _string, True)}), False),
    }),
    ("v1", "ConfigMap"): _message({
        1: ("metadata", OBJECT_META, False), 2: ("data", _map(_string), False),
        3: ("binaryData", _map(_bytes_b64), False), 4: ("immutable", _bool, False),
    }),
    ("v1", "Secret"): _message({
        1: ("metadata", OBJECT_META, False), 2: ("data", _map(_bytes_b64), False),
        3: ("type", _string, False), 4: ("stringData", _map(_string), False),
        5: ("immutable", _bool, False),
    }),
    ("v1", "ServiceAccount"): _message({
        1: ("metadata", OBJECT_META, False), 2: ("secrets", OBJECT_REFERENCE, True),
        3: ("imagePullSecrets", NAME_ONLY, True),
        4: ("automountServiceAccountToken", _bool, False),
    }),
    ("authentication.k8s.io/v1", "TokenRequest"): _message({
        1: ("metadata", OBJECT_META, False),
        2: ("spec", _message({
            1: ("audiences", _string, True), 4: ("expirationSeconds", _int, False),
            3: ("boundObjectRef", _message({
                1: ("kind", _string, False), 2: ("apiVersion", _string, False),
                3: ("name", _string, False), 4: ("uid", _string, False)}), False),
        }), False),
    }),
    ("rbac.authorization.k8s.io/v1", "Role"): _message({
        1: ("metadata", OBJECT_META, False), 2: ("rules", POLICY_RULE, True)}),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): _message({
        1: ("metadata", OBJECT_META, False), 2: ("rules", POLICY_RULE, True)}),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): _message({
        1: ("metadata", OBJECT_META, False), 2: ("subjects", SUBJECT, True),
        3: ("roleRef", ROLE_REF, False)}),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): _message({
        1: ("metadata", OBJECT_META, False), 2: ("subjects", SUBJECT, True),
        3: ("roleRef", ROLE_REF, False)}),
}


def decode_object(body: bytes) -> dict[str, Any]:
    """The JSON form of a protobuf-encoded object; ProtobufError for anything unsupported."""
    if not body.startswith(MAGIC):
        raise ProtobufError("missing the k8s protobuf envelope")
    envelope = dict(_fields(body[len(MAGIC):]))
    type_meta = dict(_fields(envelope.get(1, b"")))
    api_version = _string(type_meta.get(1, b""))
    kind = _string(type_meta.get(2, b""))
    decoder = KINDS.get((api_version, kind))
    if decoder is None:
        raise ProtobufError(f"protobuf bodies of {api_version}/{kind} are not supported")
    obj = decoder(envelope.get(2, b""))
    obj = {"apiVersion": api_version, "kind": kind, **obj}
    return obj


def decode_delete_options(body: bytes) -> dict[str, Any]:
    """The JSON form of a protobuf DeleteOptions, the body client-go's typed clients send with
    every DELETE (Helm's release storage deletes its Secrets that way).

    DeleteOptions is registered in every group version, so any apiVersion is accepted. Unlike
    the objects above, zero values stay: `gracePeriodSeconds: 0` (delete at once) is an optional
    pointer field, written only when set, and means something else than its absence.
    """
    if not body.startswith(MAGIC):
        raise ProtobufError("missing the k8s protobuf envelope")
    envelope = dict(_fields(body[len(MAGIC):]))
    type_meta = dict(_fields(envelope.get(1, b"")))
    kind = _string(type_meta.get(2, b""))
    if kind != "DeleteOptions":
        raise ProtobufError(f"expected DeleteOptions, got {kind or 'no kind'}")
    options: dict[str, Any] = {}
    for number, value in _fields(envelope.get(2, b"")):
        if number == 1:
            options["gracePeriodSeconds"] = _int(value)
        elif number == 2:
            names = {1: "uid", 2: "resourceVersion"}
            options["preconditions"] = {names[field]: _string(raw)
                                        for field, raw in _fields(value) if field in names}
        elif number == 3:
            options["orphanDependents"] = _bool(value)
        elif number == 4:
            options["propagationPolicy"] = _string(value)
        elif number == 5:
            options.setdefault("dryRun", []).append(_string(value))
    return options
