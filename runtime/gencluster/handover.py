"""Graceful stop (SIGTERM) and switchover: give the Lease to an up-to-date standby at once.

Stop accepting writes, wait until the target standby acknowledged every entry, write the
handover (`election.handover`), close the streams (the target notices and confirms by
renewing), and wait for the confirmation. The `Handover` performs the Lease writes and the
waits; the role changes they imply (writes refused, stepped down) it reports to its
`HandoverHost` (the node).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from gencluster import election
from gencluster.election import LeaseRecord
from gencluster.leases import KubernetesApi, KubernetesError, LeaseConflict
from gencluster.node_config import NodeConfig
from gencluster.term import Term

log = logging.getLogger(__name__)

CONFIRMATION_POLL = 0.02
"""Seconds between Lease reads while waiting for the target to renew."""


class HandoverHost(Protocol):
    def handover_started(self) -> None: ...

    def handover_abandoned(self, term: Term) -> None: ...

    def handed_over(self, target: str, address: str, epoch: int) -> None: ...


class Handover:
    """The Lease writes and waits of a handover; the node decides when one runs."""

    def __init__(self, *, config: NodeConfig, api: KubernetesApi, host: HandoverHost) -> None:
        self._config = config
        self._api = api
        self._host = host

    async def hand_over(
        self, term: Term, target: str | None, timeout: float
    ) -> tuple[str, int] | None:
        """Give the Lease to `target` (default: the most up-to-date in-sync standby).

        Returns (target, epoch) once the target confirmed or `timeout` passed after the
        handover was written; None when no standby could take it (writes resume).
        """
        deadline = time.monotonic() + timeout
        members = term.tracker.published_in_sync
        acked = {s.identity: s.acked_seq for s in term.tracker.standbys() if s.connected}
        if target is None:
            target = election.choose_handover_target(acked, members)
        if target is None or target not in members or target not in acked:
            return None
        self._host.handover_started()
        if not await term.caught_up(target, deadline):
            self._host.handover_abandoned(term)
            return None
        target_address = term.standby_addresses.get(target, "")
        written = await self._write(target, deadline)
        if written is None:
            self._host.handover_abandoned(term)
            return None
        self._host.handed_over(target, target_address, written.transitions)
        await self._await_confirmation(written, deadline)
        return target, written.transitions

    async def _write(self, target: str, deadline: float) -> LeaseRecord | None:
        """Write the handover; None when it certainly did not happen (writes may resume).

        A write that gets no answer may still have been applied, and the target takes over
        as soon as it reads the Lease: so after one, the Lease is read back to learn the
        outcome (`election.handover_write_outcome`), and if the deadline passes before that
        is known, the handover is presumed done. The worst case is then a Lease nobody
        renews until it expires (an outage of at most its duration), never two actives.
        """
        name = self._config.lease_name
        me = self._config.identity
        unanswered: LeaseRecord | None = None
        while time.monotonic() < deadline:
            try:
                record, raw = await self._api.get_lease(name)
            except KubernetesError as error:
                if unanswered is None:
                    log.warning("handover to %s failed: %s", target, error)
                    return None
                continue
            if unanswered is not None:
                outcome = election.handover_write_outcome(unanswered, record, me)
                if outcome is election.HandoverWrite.LANDED:
                    log.info("the unanswered handover to %s landed (epoch %d)",
                             target, record.transitions)
                    return record
                if outcome is election.HandoverWrite.LOST:
                    log.warning("the Lease moved to %r during the handover to %s",
                                record.holder, target)
                    return None
                unanswered = None  # not applied: write it again from this read
            if record.holder != me:
                return None
            try:
                new_record = election.handover(record, me, target, time.time())
                written, _ = await self._api.update_lease(name, raw, new_record)
            except LeaseConflict:
                continue
            except KubernetesError as error:
                if error.status != 0:
                    log.warning("handover to %s refused: %s", target, error)
                    return None
                log.warning("handover to %s got no answer (%s): reading the Lease back",
                            target, error)
                unanswered = new_record
                continue
            except ValueError as error:
                log.warning("handover to %s failed: %s", target, error)
                return None
            log.info("handed the Lease to %s (epoch %d)", target, written.transitions)
            return written
        if unanswered is not None:
            log.warning("cannot learn whether the handover to %s landed before its deadline: "
                        "presumed done (writes stay stopped)", target)
        return unanswered

    async def _await_confirmation(self, written: LeaseRecord, deadline: float) -> None:
        """The target confirms by renewing: the record changes from what we wrote."""
        while time.monotonic() < deadline:
            try:
                record, _ = await self._api.get_lease(self._config.lease_name)
            except KubernetesError:
                record = None
            if record is not None and record != written:
                return
            await asyncio.sleep(CONFIRMATION_POLL)

    async def release(self) -> None:
        """Clear the holder (no standby could take the Lease), so that any replica may take
        it at once instead of after its expiry."""
        try:
            record, raw = await self._api.get_lease(self._config.lease_name)
            if record.holder == self._config.identity:
                await self._api.update_lease(
                    self._config.lease_name, raw, election.release(record, time.time())
                )
        except KubernetesError as error:
            log.warning("cannot release the Lease: %s", error)
