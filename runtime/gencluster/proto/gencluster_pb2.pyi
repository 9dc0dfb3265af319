from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CommandKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMMAND_KIND_UNSPECIFIED: _ClassVar[CommandKind]
    COMMAND_KIND_CALL: _ClassVar[CommandKind]
    COMMAND_KIND_CAST: _ClassVar[CommandKind]
    COMMAND_KIND_MERGE: _ClassVar[CommandKind]
    COMMAND_KIND_RESTORE: _ClassVar[CommandKind]
    COMMAND_KIND_QUARANTINE: _ClassVar[CommandKind]

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNSPECIFIED: _ClassVar[Role]
    ROLE_ACTIVE: _ClassVar[Role]
    ROLE_STANDBY: _ClassVar[Role]
    ROLE_JOINING: _ClassVar[Role]
    ROLE_STOPPED: _ClassVar[Role]

class ReplicationMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REPLICATION_MODE_UNSPECIFIED: _ClassVar[ReplicationMode]
    REPLICATION_MODE_SYNC: _ClassVar[ReplicationMode]
    REPLICATION_MODE_ASYNC: _ClassVar[ReplicationMode]
COMMAND_KIND_UNSPECIFIED: CommandKind
COMMAND_KIND_CALL: CommandKind
COMMAND_KIND_CAST: CommandKind
COMMAND_KIND_MERGE: CommandKind
COMMAND_KIND_RESTORE: CommandKind
COMMAND_KIND_QUARANTINE: CommandKind
ROLE_UNSPECIFIED: Role
ROLE_ACTIVE: Role
ROLE_STANDBY: Role
ROLE_JOINING: Role
ROLE_STOPPED: Role
REPLICATION_MODE_UNSPECIFIED: ReplicationMode
REPLICATION_MODE_SYNC: ReplicationMode
REPLICATION_MODE_ASYNC: ReplicationMode

class CallRequest(_message.Message):
    __slots__ = ("request_id", "payload", "codec", "first_attempt_unix_ms", "first_send")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    FIRST_ATTEMPT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEND_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    payload: bytes
    codec: str
    first_attempt_unix_ms: int
    first_send: bool
    def __init__(self, request_id: _Optional[str] = ..., payload: _Optional[bytes] = ..., codec: _Optional[str] = ..., first_attempt_unix_ms: _Optional[int] = ..., first_send: _Optional[bool] = ...) -> None: ...

class HandlerError(_message.Message):
    __slots__ = ("type", "message")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    type: str
    message: str
    def __init__(self, type: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class CallReply(_message.Message):
    __slots__ = ("epoch", "seq", "reply", "error", "duplicate")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    REPLY_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    seq: int
    reply: bytes
    error: HandlerError
    duplicate: bool
    def __init__(self, epoch: _Optional[int] = ..., seq: _Optional[int] = ..., reply: _Optional[bytes] = ..., error: _Optional[_Union[HandlerError, _Mapping]] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class CastRequest(_message.Message):
    __slots__ = ("request_id", "payload", "codec", "first_attempt_unix_ms", "first_send")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    FIRST_ATTEMPT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEND_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    payload: bytes
    codec: str
    first_attempt_unix_ms: int
    first_send: bool
    def __init__(self, request_id: _Optional[str] = ..., payload: _Optional[bytes] = ..., codec: _Optional[str] = ..., first_attempt_unix_ms: _Optional[int] = ..., first_send: _Optional[bool] = ...) -> None: ...

class CastReply(_message.Message):
    __slots__ = ("epoch", "seq", "error", "duplicate")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    seq: int
    error: HandlerError
    duplicate: bool
    def __init__(self, epoch: _Optional[int] = ..., seq: _Optional[int] = ..., error: _Optional[_Union[HandlerError, _Mapping]] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("topic", "from_event", "accept_gap", "last_seq", "last_epoch")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    FROM_EVENT_FIELD_NUMBER: _ClassVar[int]
    ACCEPT_GAP_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    LAST_EPOCH_FIELD_NUMBER: _ClassVar[int]
    topic: str
    from_event: int
    accept_gap: bool
    last_seq: int
    last_epoch: int
    def __init__(self, topic: _Optional[str] = ..., from_event: _Optional[int] = ..., accept_gap: _Optional[bool] = ..., last_seq: _Optional[int] = ..., last_epoch: _Optional[int] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("topic", "number", "seq", "time", "data", "epoch", "missed", "origin_epoch", "audience", "renumbered")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    MISSED_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_EPOCH_FIELD_NUMBER: _ClassVar[int]
    AUDIENCE_FIELD_NUMBER: _ClassVar[int]
    RENUMBERED_FIELD_NUMBER: _ClassVar[int]
    topic: str
    number: int
    seq: int
    time: float
    data: bytes
    epoch: int
    missed: int
    origin_epoch: int
    audience: str
    renumbered: bool
    def __init__(self, topic: _Optional[str] = ..., number: _Optional[int] = ..., seq: _Optional[int] = ..., time: _Optional[float] = ..., data: _Optional[bytes] = ..., epoch: _Optional[int] = ..., missed: _Optional[int] = ..., origin_epoch: _Optional[int] = ..., audience: _Optional[str] = ..., renumbered: _Optional[bool] = ...) -> None: ...

class PromiseRequest(_message.Message):
    __slots__ = ("identity", "epoch")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    identity: str
    epoch: int
    def __init__(self, identity: _Optional[str] = ..., epoch: _Optional[int] = ...) -> None: ...

class PromiseReply(_message.Message):
    __slots__ = ("granted", "seconds", "reason")
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    granted: bool
    seconds: float
    reason: str
    def __init__(self, granted: _Optional[bool] = ..., seconds: _Optional[float] = ..., reason: _Optional[str] = ...) -> None: ...

class SnapshotRequest(_message.Message):
    __slots__ = ("identity", "epoch")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    identity: str
    epoch: int
    def __init__(self, identity: _Optional[str] = ..., epoch: _Optional[int] = ...) -> None: ...

class Command(_message.Message):
    __slots__ = ("kind", "request_id", "payload", "time", "seed")
    KIND_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    kind: CommandKind
    request_id: str
    payload: bytes
    time: float
    seed: int
    def __init__(self, kind: _Optional[_Union[CommandKind, str]] = ..., request_id: _Optional[str] = ..., payload: _Optional[bytes] = ..., time: _Optional[float] = ..., seed: _Optional[int] = ...) -> None: ...

class LogEntry(_message.Message):
    __slots__ = ("seq", "epoch", "command")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    seq: int
    epoch: int
    command: Command
    def __init__(self, seq: _Optional[int] = ..., epoch: _Optional[int] = ..., command: _Optional[_Union[Command, _Mapping]] = ...) -> None: ...

class ReplyRecord(_message.Message):
    __slots__ = ("request_id", "seq", "reply", "error", "time", "digest")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    REPLY_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    seq: int
    reply: bytes
    error: HandlerError
    time: float
    digest: bytes
    def __init__(self, request_id: _Optional[str] = ..., seq: _Optional[int] = ..., reply: _Optional[bytes] = ..., error: _Optional[_Union[HandlerError, _Mapping]] = ..., time: _Optional[float] = ..., digest: _Optional[bytes] = ...) -> None: ...

class TopicPosition(_message.Message):
    __slots__ = ("topic", "next_event")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    NEXT_EVENT_FIELD_NUMBER: _ClassVar[int]
    topic: str
    next_event: int
    def __init__(self, topic: _Optional[str] = ..., next_event: _Optional[int] = ...) -> None: ...

class SnapshotHeader(_message.Message):
    __slots__ = ("applied_seq", "applied_epoch", "server_version", "codec", "state_size", "topics", "replies_complete_after", "merge_seqs")
    APPLIED_SEQ_FIELD_NUMBER: _ClassVar[int]
    APPLIED_EPOCH_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    STATE_SIZE_FIELD_NUMBER: _ClassVar[int]
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    REPLIES_COMPLETE_AFTER_FIELD_NUMBER: _ClassVar[int]
    MERGE_SEQS_FIELD_NUMBER: _ClassVar[int]
    applied_seq: int
    applied_epoch: int
    server_version: int
    codec: str
    state_size: int
    topics: _containers.RepeatedCompositeFieldContainer[TopicPosition]
    replies_complete_after: float
    merge_seqs: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, applied_seq: _Optional[int] = ..., applied_epoch: _Optional[int] = ..., server_version: _Optional[int] = ..., codec: _Optional[str] = ..., state_size: _Optional[int] = ..., topics: _Optional[_Iterable[_Union[TopicPosition, _Mapping]]] = ..., replies_complete_after: _Optional[float] = ..., merge_seqs: _Optional[_Iterable[int]] = ...) -> None: ...

class SnapshotChunk(_message.Message):
    __slots__ = ("epoch", "header", "replies", "events", "state")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    REPLIES_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    header: SnapshotHeader
    replies: ReplyBatch
    events: EventBatch
    state: bytes
    def __init__(self, epoch: _Optional[int] = ..., header: _Optional[_Union[SnapshotHeader, _Mapping]] = ..., replies: _Optional[_Union[ReplyBatch, _Mapping]] = ..., events: _Optional[_Union[EventBatch, _Mapping]] = ..., state: _Optional[bytes] = ...) -> None: ...

class ReplyBatch(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[ReplyRecord]
    def __init__(self, records: _Optional[_Iterable[_Union[ReplyRecord, _Mapping]]] = ...) -> None: ...

class EventBatch(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ...) -> None: ...

class ReplicateUp(_message.Message):
    __slots__ = ("hello", "ack")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    ack: Ack
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("identity", "address", "epoch", "applied_seq", "applied_epoch")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    APPLIED_SEQ_FIELD_NUMBER: _ClassVar[int]
    APPLIED_EPOCH_FIELD_NUMBER: _ClassVar[int]
    identity: str
    address: str
    epoch: int
    applied_seq: int
    applied_epoch: int
    def __init__(self, identity: _Optional[str] = ..., address: _Optional[str] = ..., epoch: _Optional[int] = ..., applied_seq: _Optional[int] = ..., applied_epoch: _Optional[int] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("epoch", "applied_seq")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    APPLIED_SEQ_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    applied_seq: int
    def __init__(self, epoch: _Optional[int] = ..., applied_seq: _Optional[int] = ...) -> None: ...

class ReplicateDown(_message.Message):
    __slots__ = ("entries", "need_snapshot")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEED_SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    entries: EntryBatch
    need_snapshot: NeedSnapshot
    def __init__(self, entries: _Optional[_Union[EntryBatch, _Mapping]] = ..., need_snapshot: _Optional[_Union[NeedSnapshot, _Mapping]] = ...) -> None: ...

class EntryBatch(_message.Message):
    __slots__ = ("epoch", "entries", "last_seq", "server_version")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    entries: _containers.RepeatedCompositeFieldContainer[LogEntry]
    last_seq: int
    server_version: int
    def __init__(self, epoch: _Optional[int] = ..., entries: _Optional[_Iterable[_Union[LogEntry, _Mapping]]] = ..., last_seq: _Optional[int] = ..., server_version: _Optional[int] = ...) -> None: ...

class NeedSnapshot(_message.Message):
    __slots__ = ("epoch", "reason")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    reason: str
    def __init__(self, epoch: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StandbyStatus(_message.Message):
    __slots__ = ("identity", "address", "acked_seq", "lag", "in_sync")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ACKED_SEQ_FIELD_NUMBER: _ClassVar[int]
    LAG_FIELD_NUMBER: _ClassVar[int]
    IN_SYNC_FIELD_NUMBER: _ClassVar[int]
    identity: str
    address: str
    acked_seq: int
    lag: int
    in_sync: bool
    def __init__(self, identity: _Optional[str] = ..., address: _Optional[str] = ..., acked_seq: _Optional[int] = ..., lag: _Optional[int] = ..., in_sync: _Optional[bool] = ...) -> None: ...

class StatusReply(_message.Message):
    __slots__ = ("identity", "role", "epoch", "applied_seq", "active", "active_address", "standbys", "mode", "server", "server_version", "codec", "lease_holder", "lease_epoch", "lease_read_age_seconds", "state_lost", "applied_epoch", "failsafe_seconds", "failsafe_episodes", "last_failsafe_seconds", "downgrade_refused", "sync_degraded_seconds", "unsynced_entries")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    APPLIED_SEQ_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STANDBYS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    SERVER_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    LEASE_HOLDER_FIELD_NUMBER: _ClassVar[int]
    LEASE_EPOCH_FIELD_NUMBER: _ClassVar[int]
    LEASE_READ_AGE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    STATE_LOST_FIELD_NUMBER: _ClassVar[int]
    APPLIED_EPOCH_FIELD_NUMBER: _ClassVar[int]
    FAILSAFE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FAILSAFE_EPISODES_FIELD_NUMBER: _ClassVar[int]
    LAST_FAILSAFE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DOWNGRADE_REFUSED_FIELD_NUMBER: _ClassVar[int]
    SYNC_DEGRADED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    UNSYNCED_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    identity: str
    role: Role
    epoch: int
    applied_seq: int
    active: str
    active_address: str
    standbys: _containers.RepeatedCompositeFieldContainer[StandbyStatus]
    mode: ReplicationMode
    server: str
    server_version: int
    codec: str
    lease_holder: str
    lease_epoch: int
    lease_read_age_seconds: float
    state_lost: bool
    applied_epoch: int
    failsafe_seconds: float
    failsafe_episodes: int
    last_failsafe_seconds: float
    downgrade_refused: str
    sync_degraded_seconds: float
    unsynced_entries: int
    def __init__(self, identity: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ..., epoch: _Optional[int] = ..., applied_seq: _Optional[int] = ..., active: _Optional[str] = ..., active_address: _Optional[str] = ..., standbys: _Optional[_Iterable[_Union[StandbyStatus, _Mapping]]] = ..., mode: _Optional[_Union[ReplicationMode, str]] = ..., server: _Optional[str] = ..., server_version: _Optional[int] = ..., codec: _Optional[str] = ..., lease_holder: _Optional[str] = ..., lease_epoch: _Optional[int] = ..., lease_read_age_seconds: _Optional[float] = ..., state_lost: _Optional[bool] = ..., applied_epoch: _Optional[int] = ..., failsafe_seconds: _Optional[float] = ..., failsafe_episodes: _Optional[int] = ..., last_failsafe_seconds: _Optional[float] = ..., downgrade_refused: _Optional[str] = ..., sync_degraded_seconds: _Optional[float] = ..., unsynced_entries: _Optional[int] = ...) -> None: ...

class GetStateRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStateReply(_message.Message):
    __slots__ = ("epoch", "applied_seq", "codec", "state")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    APPLIED_SEQ_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    applied_seq: int
    codec: str
    state: bytes
    def __init__(self, epoch: _Optional[int] = ..., applied_seq: _Optional[int] = ..., codec: _Optional[str] = ..., state: _Optional[bytes] = ...) -> None: ...

class SwitchoverRequest(_message.Message):
    __slots__ = ("target",)
    TARGET_FIELD_NUMBER: _ClassVar[int]
    target: str
    def __init__(self, target: _Optional[str] = ...) -> None: ...

class SwitchoverReply(_message.Message):
    __slots__ = ("active", "epoch")
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    active: str
    epoch: int
    def __init__(self, active: _Optional[str] = ..., epoch: _Optional[int] = ...) -> None: ...

class DemoteRequest(_message.Message):
    __slots__ = ("follow_address", "reason")
    FOLLOW_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    follow_address: str
    reason: str
    def __init__(self, follow_address: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class DemoteReply(_message.Message):
    __slots__ = ("epoch", "applied_seq")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    APPLIED_SEQ_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    applied_seq: int
    def __init__(self, epoch: _Optional[int] = ..., applied_seq: _Optional[int] = ...) -> None: ...

class ExportStateRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MergeOrigin(_message.Message):
    __slots__ = ("request_id", "source", "source_epoch")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_EPOCH_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    source: str
    source_epoch: int
    def __init__(self, request_id: _Optional[str] = ..., source: _Optional[str] = ..., source_epoch: _Optional[int] = ...) -> None: ...

class MergeChunk(_message.Message):
    __slots__ = ("origin", "snapshot")
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    origin: MergeOrigin
    snapshot: SnapshotChunk
    def __init__(self, origin: _Optional[_Union[MergeOrigin, _Mapping]] = ..., snapshot: _Optional[_Union[SnapshotChunk, _Mapping]] = ...) -> None: ...

class MergeReply(_message.Message):
    __slots__ = ("epoch", "seq", "error", "duplicate")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    seq: int
    error: HandlerError
    duplicate: bool
    def __init__(self, epoch: _Optional[int] = ..., seq: _Optional[int] = ..., error: _Optional[_Union[HandlerError, _Mapping]] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class PauseWritesRequest(_message.Message):
    __slots__ = ("seconds",)
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    seconds: float
    def __init__(self, seconds: _Optional[float] = ...) -> None: ...

class PauseWritesReply(_message.Message):
    __slots__ = ("epoch", "applied_seq", "paused")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    APPLIED_SEQ_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    applied_seq: int
    paused: bool
    def __init__(self, epoch: _Optional[int] = ..., applied_seq: _Optional[int] = ..., paused: _Optional[bool] = ...) -> None: ...

class MergePayload(_message.Message):
    __slots__ = ("state", "replies", "replies_complete_after", "server_version")
    STATE_FIELD_NUMBER: _ClassVar[int]
    REPLIES_FIELD_NUMBER: _ClassVar[int]
    REPLIES_COMPLETE_AFTER_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    state: bytes
    replies: _containers.RepeatedCompositeFieldContainer[ReplyRecord]
    replies_complete_after: float
    server_version: int
    def __init__(self, state: _Optional[bytes] = ..., replies: _Optional[_Iterable[_Union[ReplyRecord, _Mapping]]] = ..., replies_complete_after: _Optional[float] = ..., server_version: _Optional[int] = ...) -> None: ...

class RestoreOrigin(_message.Message):
    __slots__ = ("request_id", "force", "source")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    force: bool
    source: str
    def __init__(self, request_id: _Optional[str] = ..., force: _Optional[bool] = ..., source: _Optional[str] = ...) -> None: ...

class RestoreChunk(_message.Message):
    __slots__ = ("origin", "snapshot")
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    origin: RestoreOrigin
    snapshot: SnapshotChunk
    def __init__(self, origin: _Optional[_Union[RestoreOrigin, _Mapping]] = ..., snapshot: _Optional[_Union[SnapshotChunk, _Mapping]] = ...) -> None: ...

class RestoreReply(_message.Message):
    __slots__ = ("epoch", "applied_seq")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    APPLIED_SEQ_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    applied_seq: int
    def __init__(self, epoch: _Optional[int] = ..., applied_seq: _Optional[int] = ...) -> None: ...
