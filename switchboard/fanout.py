"""Fan-out: one chunk of a session's audience → dispatch jobs, one per (recipient, channel). Pure.

A session's audience is stored in chunks of :data:`CHUNK_SIZE` recipients, and fanned out one
chunk per session command, so a 1,000,000-recipient session never holds more than one chunk's
jobs in memory and never blocks its partition for long.

For each recipient and channel, :func:`plan_chunk` gives either a :class:`~switchboard.records.
DispatchJob` with the message rendered for that recipient, or a ``rejected`` report saying why
that delivery cannot be made (no address for the channel, a template variable without a value):
a delivery is never dropped silently. A session with a channel fallback (``options.fallback``,
``switchboard/fallback.py``) has a job for each of a recipient's steps (the channels it has an
address for), of which the fan-out sends only the first (:func:`first_steps`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

from switchboard import fallback
from switchboard.deadline import deadline_of
from switchboard.instruction import ADDRESS_FIELD, SMS_MAX_CHARS, Channel
from switchboard.records import DispatchJob, Report, SessionState
from switchboard.render import MissingVariable, TemplateSyntaxError, render

__all__ = [
    "CHUNK_SIZE",
    "DISPATCH_SPREAD",
    "RETRY_OPTIONS",
    "chunk_count",
    "dispatch_key",
    "first_steps",
    "plan_chunk",
    "template_variables",
]

CHUNK_SIZE: Final = 500


def chunk_count(recipients: int, size: int = CHUNK_SIZE) -> int:
    return max(1, -(-recipients // size))


#: Recipients whose jobs share a Kafka key (``dispatch_key``): a campaign of 1,000 recipients
#: is spread over 10 keys, so over every partition of a few.
DISPATCH_SPREAD: Final = 100


def dispatch_key(session_id: str, index: int, size: int = DISPATCH_SPREAD) -> bytes:
    """The Kafka key of a delivery's jobs: its session and a slice of its recipients. A session's
    slices hash to every partition, so every worker sends a share of one campaign; all the jobs
    of one delivery (every attempt) go to one partition, whose ``sends`` rows they share."""
    return f"{session_id}:{index // size}".encode()


#: The session options a job needs to schedule its own retry (``switchboard/retry.py``).
RETRY_OPTIONS: Final = ("retries", "retryIntervalMinutes")


def template_variables(
    transport: Mapping[str, Any], recipient: Mapping[str, Any]
) -> dict[str, Any]:
    """Variables for one recipient: ``extras.template_vars``, then the profile (which wins)."""
    extras = transport.get("extras") or {}
    variables: dict[str, Any] = dict(extras.get("template_vars") or {})
    variables.update(recipient.get("vars") or {})
    if recipient.get("name") is not None:
        variables["name"] = recipient["name"]
    return variables


def plan_chunk(
    session: SessionState,
    chunk: int,
    recipients: Sequence[Mapping[str, Any]],
    *,
    now: float,
    size: int = CHUNK_SIZE,
) -> Iterator[DispatchJob | Report]:
    """The jobs (or rejected reports) of audience chunk ``chunk``, in recipient then channel order."""
    transport = session.transport
    priority = session.priority
    retry_options: dict[str, Any] = {
        k: session.options[k] for k in RETRY_OPTIONS if k in session.options
    }
    extras = {k: v for k, v in (transport.get("extras") or {}).items() if k != "template_vars"}
    transactional = session.options.get("transactional") is True
    expires_at = deadline_of(session.options, session.created_at)
    plan = fallback.plan_of(session.options)
    for offset, recipient in enumerate(recipients):
        index = chunk * size + offset
        variables = template_variables(transport, recipient)
        addresses = recipient.get("addresses") or {}
        channels = session.channels
        if plan is not None:  # its steps; one with no address at all is rejected on the first
            channels = list(fallback.steps(channels, addresses)) or channels[:1]
        for channel in channels:
            address = addresses.get(ADDRESS_FIELD[_channel(channel)])
            if not address:
                yield _rejected(
                    session,
                    channel,
                    index,
                    "",
                    now,
                    "no-address",
                    f"the recipient has no {ADDRESS_FIELD[_channel(channel)]} for {channel}",
                )
                continue
            try:
                message = _render(transport.get("message"), variables)
                subject = _render(transport.get("subject"), variables)
                job_extras = dict(extras)
                if isinstance(extras.get("html"), str):
                    job_extras["html"] = render(extras["html"], variables, escape_html=True)
            except (MissingVariable, TemplateSyntaxError) as exc:
                yield _rejected(session, channel, index, address, now, "template", str(exc))
                continue
            if channel == "sms" and message is not None and len(message) > SMS_MAX_CHARS:
                yield _rejected(
                    session,
                    channel,
                    index,
                    address,
                    now,
                    "too-long",
                    f"the rendered SMS is {len(message)} characters; at most {SMS_MAX_CHARS} can be sent",
                )
                continue
            yield DispatchJob(
                session_id=session.session_id,
                client_id=session.client_id,
                channel=channel,
                index=index,
                address=address,
                attempt=1,
                message=message,
                subject=subject,
                file_url=transport.get("fileUrl"),
                extras=job_extras,
                locale=recipient.get("locale"),
                timezone=recipient.get("timezone"),
                priority=priority,
                retry_options=retry_options,
                transactional=transactional,
                expires_at=expires_at,
            )


def first_steps(items: Iterator[DispatchJob | Report]) -> Iterator[DispatchJob | Report]:
    """The first of each recipient's items (its first step, with a fallback): what a fan-out
    sends of a session with a fallback."""
    seen = -1
    for item in items:
        if item.index != seen:
            seen = item.index
            yield item


def _render(template: Any, variables: Mapping[str, Any]) -> str | None:
    return render(template, variables) if isinstance(template, str) else None


def _channel(name: str) -> Channel:
    return name  # type: ignore[return-value]  # channels were validated at intake


def _rejected(
    session: SessionState, channel: str, index: int, address: str, now: float, code: str, error: str
) -> Report:
    return Report(
        session_id=session.session_id,
        client_id=session.client_id,
        channel=channel,
        index=index,
        address=address,
        status="rejected",
        error_code=code,
        error=error,
        occurred_at=now,
        priority=session.priority,
    )
