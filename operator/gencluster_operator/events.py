"""The fixed vocabulary the operator reports with: Event reasons, failover reasons, conditions.

These words are a public contract (users alert on them, `kubectl get events
--field-selector reason=FailoverStarted` finds them), so they live here once and nowhere else;
docs/clusteredserver.md documents the condition reasons with the same spelling.

docs/clusteredserver.md ("Events") lists every Event reason with its type and meaning; the
plan emits FailoverStarted, SwitchoverStarted/Rejected, ScaledUp/Down, RollingUpdate,
PodReplaced and Reinitialized/ReinitializeRejected, the status diff (`status.events_between`)
the others, the shell ReconcileFailed.
"""

from __future__ import annotations

from enum import StrEnum


class EventType(StrEnum):
    NORMAL = "Normal"
    WARNING = "Warning"


class EventReason(StrEnum):
    ACTIVE_ELECTED = "ActiveElected"
    FAILOVER_STARTED = "FailoverStarted"
    FAILOVER_COMPLETED = "FailoverCompleted"
    SWITCHOVER_STARTED = "SwitchoverStarted"
    SWITCHOVER_COMPLETED = "SwitchoverCompleted"
    SWITCHOVER_REJECTED = "SwitchoverRejected"
    SCALED_UP = "ScaledUp"
    SCALED_DOWN = "ScaledDown"
    ROLLING_UPDATE = "RollingUpdate"
    POD_REPLACED = "PodReplaced"
    POD_MONITOR_UNAVAILABLE = "PodMonitorUnavailable"
    RECONCILE_PAUSED = "ReconcilePaused"
    RECONCILE_RESUMED = "ReconcileResumed"
    HIBERNATING = "Hibernating"
    HIBERNATED = "Hibernated"
    RESUMED_FROM_HIBERNATION = "ResumedFromHibernation"
    HIBERNATION_REFUSED = "HibernationRefused"
    SPLIT_BRAIN_DETECTED = "SplitBrainDetected"
    STATES_MERGED = "StatesMerged"
    MERGE_FAILED = "MergeFailed"
    INVALID_SERVER = "InvalidServer"
    INVALID_SPEC = "InvalidSpec"
    RECONCILE_FAILED = "ReconcileFailed"
    STATE_LOST = "StateLost"
    REINITIALIZED = "Reinitialized"
    REINITIALIZE_REJECTED = "ReinitializeRejected"
    SERVED_IN_FAILSAFE = "ServedInFailsafe"
    FOREIGN_POD_IGNORED = "ForeignPodIgnored"
    SYNC_DEGRADED = "SyncDegraded"
    SYNC_RESTORED = "SyncRestored"
    VOLUME_FAILED = "VolumeFailed"
    DOWNGRADE_REFUSED = "DowngradeRefused"


class FailoverReason(StrEnum):
    """Why the active role moved: `status.lastFailoverReason`, and the reason of a handover."""

    ACTIVE_POD_DELETED = "ActivePodDeleted"
    ACTIVE_CONTAINER_TERMINATED = "ActiveContainerTerminated"
    LEASE_EXPIRED = "LeaseExpired"
    SWITCHOVER = "Switchover"
    ROLLING_UPDATE = "RollingUpdate"
    SCALED_DOWN = "ScaledDown"


class ConditionType(StrEnum):
    READY = "Ready"
    AVAILABLE = "Available"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    SPLIT_BRAIN = "SplitBrain"


class ConditionReason(StrEnum):
    """Condition reasons, as docs/clusteredserver.md lists them per condition type."""

    # Ready
    SERVING = "Serving"
    RECONCILING = "Reconciling"
    PENDING = "Pending"
    NO_ACTIVE = "NoActive"
    NOT_ENOUGH_SYNC_STANDBYS = "NotEnoughSyncStandbys"
    PODS_NOT_READY = "PodsNotReady"
    UPDATING = "Updating"
    SERVER_NOT_RUNNABLE = "ServerNotRunnable"
    INVALID_SPEC = "InvalidSpec"
    SPLIT_BRAIN = "SplitBrain"
    STATE_LOST = "StateLost"
    # Available
    ACTIVE_SERVING = "ActiveServing"
    # Progressing
    CREATING = "Creating"
    SCALING_UP = "ScalingUp"
    SCALING_DOWN = "ScalingDown"
    ROLLING_UPDATE = "RollingUpdate"
    SWITCHING_OVER = "SwitchingOver"
    FAILING_OVER = "FailingOver"
    MERGING = "Merging"
    WAITING_FOR_STORAGE = "WaitingForStorage"
    RECONCILED = "Reconciled"
    RECONCILE_PAUSED = "ReconcilePaused"
    HIBERNATING = "Hibernating"
    HIBERNATED = "Hibernated"
    HIBERNATION_REFUSED = "HibernationRefused"
    # Degraded
    STANDBYS_OUT_OF_SYNC = "StandbysOutOfSync"
    SYNC_DEGRADED = "SyncDegraded"
    VOLUME_FAILED = "VolumeFailed"
    MERGE_FAILED = "MergeFailed"
    RECONCILE_FAILED = "ReconcileFailed"
    DOWNGRADE_REFUSED = "DowngradeRefused"
    AS_EXPECTED = "AsExpected"
    # SplitBrain
    SPLIT_BRAIN_DETECTED = "SplitBrainDetected"
    STATES_MERGED = "StatesMerged"
    STALE_ACTIVE_DEMOTED = "StaleActiveDemoted"
    NO_SPLIT_BRAIN = "NoSplitBrain"
