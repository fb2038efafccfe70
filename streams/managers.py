"""Service managers, wired to the stream processor (README: "Service managers").

The mechanism and the built-in managers are pure (:mod:`switchboard.managers`). This module
builds them from the settings and gives each agent one call per hook:

=========================  ======================================  ============================
hook                       called by                               what its outcome changes
=========================  ======================================  ============================
``on_session_start``       the session agent, per chunk and        scrubbed deliveries are
                           channel, before fan-out                 ``suppressed``; a block
                                                                   cancels the session
``on_message_send``        the dispatcher, before the provider     the message sent (sender,
                           call (every attempt)                    Messaging Service, MMS)
``on_delivery_report``     the report agent, for every report      nothing (managers remember)
                           that moves a delivery on
``on_opt_out``             inbound STOP, and a provider's          nothing
                           "unsubscribed" error
``on_session_complete``    the report agent, once per session      nothing
=========================  ======================================  ============================

A hook that raises (or times out) never loses the message: the runner contains it, and its
error goes into the ``detail`` of the status event that the hook's step emits, under
``service_manager_errors``. A client whose configuration names an unknown manager cannot be
applied (``switchboard clients apply`` refuses it, and a worker keeps the previous version).

State: managers keep memory in :class:`switchboard.managers.KeyValueState` over
``<prefix>.manager-state``, a compacted topic mirrored in RocksDB on every worker
(:class:`streams.replica.KeyValueReplica`). It survives restarts and every worker reads it
locally; a write is durable when ``put`` returns and visible everywhere about a second later.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from switchboard.clients import ClientConfig
from switchboard.managers import (
    DETAIL_KEY,
    KeyValueState,
    ManagerState,
    OptOutContext,
    ReportContext,
    Scrubbed,
    SendContext,
    ServiceManagers,
    SessionCompleteContext,
    SessionStartContext,
)
from switchboard.records import DispatchJob, Report
from switchboard.settings import Settings
from transports.base import OutboundMessage
from transports.twilio_lookup import TwilioLookups

__all__ = ["ManagerDesk", "SessionStartPlan", "build_managers", "merge_detail"]

log = logging.getLogger(__name__)


def build_managers(settings: Settings, lookups: TwilioLookups) -> ServiceManagers:
    """The managers of ``SERVICE_MANAGERS`` with ``SWITCHBOARD_SERVICE_MANAGER_OPTIONS``; the
    scrubber gets each client's Twilio Lookup. Raises ``ConfigError`` for an unknown name or a
    bad option, so a worker does not start with a list it cannot run."""
    options = settings.manager_options
    # In sandbox mode nothing leaves the machine: no paid lookups either (cached answers apply).
    lookup = (lambda client: None) if settings.sandbox else lookups.for_client
    options["scrub-bad-mobilenums"] = {**options.get("scrub-bad-mobilenums", {}), "lookup": lookup}
    return ServiceManagers.from_setting(
        settings.service_managers or None,
        options=options,
        session_start_timeout=settings.session_start_timeout,
    )


@dataclass(frozen=True, slots=True)
class SessionStartPlan:
    """What ``on_session_start`` decided for one chunk: the scrubbed deliveries by
    ``(channel, address)``, a block reason, and the ``detail`` for each channel's events."""

    scrubbed: Mapping[tuple[str, str], Scrubbed] = field(default_factory=dict)
    block: str | None = None
    detail: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


class ManagerDesk:
    """Runs the managers' hooks for the agents (see the module docs)."""

    def __init__(self, managers: ServiceManagers, state: ManagerState) -> None:
        self.managers = managers
        self.state = state

    @classmethod
    def over(cls, managers: ServiceManagers, table: Any) -> ManagerDesk:
        """A desk keeping the managers' state in ``table`` (a replicated bytes table)."""
        return cls(managers, KeyValueState(table))

    def check_client(self, client: ClientConfig) -> None:
        """``ConfigError`` when ``client``'s ``service_managers`` cannot be run."""
        self.managers.check_client(client)

    async def before_send(
        self, job: DispatchJob, client: ClientConfig, message: OutboundMessage
    ) -> tuple[OutboundMessage, dict[str, Any]]:
        """The message to send after ``on_message_send``, and the detail for its report."""
        if not self.managers.wants(client, "on_message_send"):
            return message, {}
        managers = self.managers.for_client(client)
        outcome = await self.managers.run_send(
            managers, SendContext.for_job(job, client, self.state)
        )
        return dataclasses.replace(message, **outcome.message.transport_fields()), outcome.detail

    def wants_reports(self, client: ClientConfig) -> bool:
        """Whether ``client``'s managers have an ``on_delivery_report`` hook: asked for every
        report that moves a delivery, before paying :meth:`after_report`'s coroutine."""
        return self.managers.wants(client, "on_delivery_report")

    async def after_report(self, report: Report, client: ClientConfig) -> dict[str, Any]:
        """Run ``on_delivery_report``; the detail (errors) for the report's status event."""
        if not self.wants_reports(client):
            return {}
        managers = self.managers.for_client(client)
        ctx = ReportContext.from_report(report, client, self.state)
        return (await self.managers.run_delivery_report(managers, ctx)).detail

    async def opted_out(
        self,
        client: ClientConfig,
        channel: str,
        address: str,
        *,
        sender: str | None = None,
        reason: str | None = None,
        session_id: str | None = None,
        at: float = 0.0,
    ) -> dict[str, Any]:
        """Run ``on_opt_out``; the detail (errors), for a log line."""
        managers = self.managers.for_client(client)
        if not self.managers.has_hook(managers, "on_opt_out"):
            return {}
        ctx = OptOutContext(
            client=client,
            channel=channel,
            state=self.state,
            address=address,
            sender=sender,
            session_id=session_id,
            reason=reason,
            occurred_at=at,
        )
        outcome = await self.managers.run_opt_out(managers, ctx)
        return outcome.detail

    async def session_start(
        self, client: ClientConfig, session_id: str, jobs: Sequence[DispatchJob]
    ) -> SessionStartPlan:
        """Run ``on_session_start`` on the addresses of ``jobs``, one channel at a time.

        A block on any channel blocks the session; the later channels are not asked."""
        managers = self.managers.for_client(client)
        if not jobs or not self.managers.has_hook(managers, "on_session_start"):
            return SessionStartPlan()
        scrubbed: dict[tuple[str, str], Scrubbed] = {}
        detail: dict[str, Mapping[str, Any]] = {}
        for channel, addresses in _by_channel(jobs).items():
            ctx = SessionStartContext(
                client=client,
                channel=channel,
                state=self.state,
                session_id=session_id,
                addresses=addresses,
            )
            outcome = await self.managers.run_session_start(managers, ctx)
            detail[channel] = outcome.detail
            for scrub in outcome.scrubbed:
                scrubbed[(channel, scrub.address)] = scrub
            if outcome.blocked:
                return SessionStartPlan(scrubbed, outcome.block_reason, detail)
        return SessionStartPlan(scrubbed, None, detail)

    async def session_complete(
        self,
        client: ClientConfig,
        session_id: str,
        channels: Iterable[str],
        counts: Mapping[str, int],
        deliveries: int,
    ) -> dict[str, Any]:
        """Run ``on_session_complete``; the detail (errors) for the ``completed`` event."""
        managers = self.managers.for_client(client)
        if not self.managers.has_hook(managers, "on_session_complete"):
            return {}
        ctx = SessionCompleteContext(
            client=client,
            state=self.state,
            session_id=session_id,
            channels=tuple(channels),
            counts=dict(counts),
            deliveries=deliveries,
        )
        return (await self.managers.run_session_complete(managers, ctx)).detail


def merge_detail(detail: Mapping[str, Any], more: Mapping[str, Any]) -> dict[str, Any]:
    """``detail`` with ``more`` added; the hooks' error lists are joined, not replaced (a send's
    errors and its report's errors end on one event)."""
    out = {**detail, **more}
    if DETAIL_KEY in detail and DETAIL_KEY in more:
        out[DETAIL_KEY] = [*detail[DETAIL_KEY], *more[DETAIL_KEY]]
    return out


def _by_channel(jobs: Iterable[DispatchJob]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for job in jobs:
        out.setdefault(job.channel, []).append(job.address)
    return out
