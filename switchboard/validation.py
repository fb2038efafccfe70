"""Instruction validation: untrusted mapping in, an :class:`Envelope` and the audience's
recipients (as internal records, a chunk at a time) out. Pure.

:func:`validate_envelope` (or :func:`envelope_steps`), then :func:`audience_chunks`: the same
functions serve the Send API (before answering 202) and the intake agent (for instructions
produced to Kafka), through ``streams/submit.py``, so both paths accept and refuse exactly the
same inputs.

Guarantees:
    * Every problem is reported, each with the path of its field (``audience[3].phone``), in one
      :class:`~switchboard.errors.ValidationFailed`; nothing stops at the first error.
    * Unknown fields are errors: a misspelt ``sheduledTimestamp`` must not silently send now.
    * Text that is not valid Unicode (a lone surrogate such as a JSON ``"\\ud800"`` escape, which
      no UTF-8 encoder accepts) is an error naming its field, wherever it is: such an
      instruction could never be stored or sent.
    * :func:`validate_envelope` reports the recipients' errors too when the rest of the
      instruction is wrong, so a missing subject does not hide a bad address.
    * Addresses come out normalised (E.164, lower-cased email domains), so later stages and
      idempotency compare like with like.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, cast

from switchboard.addresses import NORMALIZERS, AddressError, normalize_url
from switchboard.clients import ClientConfig
from switchboard.deadline import MAX_TTL_SECONDS
from switchboard.errors import FieldError, ValidationFailed
from switchboard.fallback import MAX_AFTER_SECONDS
from switchboard.instruction import (
    ADDRESS_FIELD,
    CHANNELS,
    MAX_AUDIENCE,
    MAX_PRIORITY_RECIPIENTS,
    PRIORITIES,
    SMS_MAX_CHARS,
    TRIGGERS,
    Channel,
    Envelope,
    Fallback,
    Options,
    Priority,
    Recipient,
    Transport,
    Trigger,
    recipient_record,
)
from switchboard.render import TemplateSyntaxError, placeholders
from switchboard.zones import is_zone_name

__all__ = [
    "NOT_TEXT",
    "ValidationPolicy",
    "audience_chunks",
    "envelope_steps",
    "is_text",
    "validate_envelope",
]

_TOP: Final = frozenset({"client_id", "idempotency_key", "transport", "audience", "options"})
_TRANSPORT: Final = frozenset({"type", "subject", "message", "fileUrl", "extras"})
_OPTIONS: Final = frozenset(
    {
        "trigger",
        "scheduledTimestamp",
        "retries",
        "retryIntervalMinutes",
        "webhookUrl",
        "priority",
        "transactional",
        "expiresAt",
        "ttlSeconds",
        "fallback",
    }
)
_FALLBACK: Final = frozenset({"channels", "afterSeconds"})
_PROFILE: Final = frozenset({*NORMALIZERS, "name", "timezone", "locale", "vars"})
MAX_RETRIES: Final = 20
MAX_ERRORS: Final = 100  # an audience's errors reported at once; the rest after a fix
MAX_MESSAGE: Final = 32_000


@dataclass(frozen=True, slots=True)
class ValidationPolicy:
    """Operator settings that change what is acceptable."""

    allow_http_webhooks: bool = False
    max_audience: int = MAX_AUDIENCE


def validate_envelope(
    data: Any,
    *,
    client: ClientConfig | None,
    authenticated_client: str | None = None,
    policy: ValidationPolicy | None = None,
) -> Envelope:
    """Validate everything but the recipients of ``data`` (decoded JSON or Avro) for
    ``client``; then read the audience with :func:`audience_chunks`. All at once: a caller that
    must not hold its thread for long (an event loop) drives :func:`envelope_steps` instead.

    Args:
        data: the instruction as a mapping.
        client: the configuration of the client named by ``data["client_id"]`` (or by the API
            key), or ``None`` when no such client exists.
        authenticated_client: over HTTP, the client the API key belongs to; ``client_id`` in the
            body is then optional and must match.
        policy: operator settings.

    Raises:
        ValidationFailed: with every problem found.
    """
    steps = envelope_steps(
        data, client=client, authenticated_client=authenticated_client, policy=policy
    )
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return cast(Envelope, done.value)


def envelope_steps(
    data: Any,
    *,
    client: ClientConfig | None,
    authenticated_client: str | None = None,
    policy: ValidationPolicy | None = None,
    size: int = 500,
) -> Generator[None, None, Envelope]:
    """:func:`validate_envelope` in steps: the generator yields after every ``size`` recipients
    it checks, and returns the envelope (``StopIteration.value``). Only an invalid envelope has
    its recipients checked (to report their errors too), and checking a million takes tens of
    seconds: the steps let an event loop run its other work in between.

    Raises:
        ValidationFailed: with every problem found (from the ``next`` that finishes).
    """
    v = _Validator(policy or ValidationPolicy())
    envelope = v.envelope(data, client, authenticated_client)
    if v.errors or envelope is None:
        # Every problem at once: the recipients are checked too (up to MAX_ERRORS errors in
        # all), so a missing subject does not hide a bad address until the next attempt.
        yield from v.recipient_steps(data, [], size)
        v.errors.sort(key=_document_rank)
        raise ValidationFailed(v.errors or [FieldError("", "invalid instruction")])
    return envelope


def audience_chunks(
    envelope: Envelope,
    audience: Sequence[Any],
    *,
    size: int,
    policy: ValidationPolicy | None = None,
) -> Iterator[list[dict[str, Any]]]:
    """The audience's recipients, validated and normalised, as internal records, ``size`` at a
    time: memory holds one chunk, whatever the audience's size.

    Once a recipient is invalid, the rest are still checked (to report every error) and an
    empty list is yielded after every ``size`` of them: nothing to store, but a point where the
    caller can let other work run (checking a million recipients takes tens of seconds).

    Raises:
        ValidationFailed: when any recipient is invalid, naming every invalid one (up to 100).
            It is raised after the chunks before the first invalid recipient were yielded, and
            no recipient is yielded after it: a caller that stored them discards them.
    """
    v = _Validator(policy or ValidationPolicy())
    chunk: list[dict[str, Any]] = []
    for i, entry in enumerate(audience):
        recipient = v.recipient(entry, f"audience[{i}]", envelope.channels)
        if v.errors:
            if len(v.errors) >= MAX_ERRORS:
                v.err("audience", "too many errors; fix these and resubmit")
                break
            if (i + 1) % size == 0:
                yield []
            continue
        assert recipient is not None
        chunk.append(recipient_record(recipient))
        if len(chunk) == size:
            yield chunk
            chunk = []
    if v.errors:
        raise ValidationFailed(v.errors)
    if chunk:
        yield chunk


NOT_TEXT: Final = (
    "not valid Unicode text: it holds a lone surrogate (such as \\ud800), which UTF-8 cannot encode"
)


def is_text(value: str) -> bool:
    """Whether ``value`` is valid Unicode text: UTF-8 can encode it (no lone surrogate)."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _shown(key: Any) -> str:
    """A key as it can be shown in an error's path (invalid Unicode escaped, never raised on)."""
    return str(key).encode("utf-8", "backslashreplace").decode()


_ORDER: Final = {"client_id": 1, "idempotency_key": 2, "transport": 3, "audience": 4, "options": 5}


def _channel_problem(name: Any, client: ClientConfig | None) -> str | None:
    """Why ``name`` cannot be one of the instruction's channels (None: it can)."""
    if name not in CHANNELS:
        return f"unknown channel {name!r}; expected one of {', '.join(CHANNELS)}"
    if client is not None and name not in client.channels:
        configured = ", ".join(client.channels) or "none"
        return f"channel {name!r} is not configured for client {client.client_id!r} (configured: {configured})"
    return None


def _document_rank(error: FieldError) -> int:
    top = error.field.split(".", 1)[0].split("[", 1)[0]
    return _ORDER.get(top, 0)  # the whole message and unknown top-level fields come first


class _Validator:
    def __init__(self, policy: ValidationPolicy) -> None:
        self.policy = policy
        self.errors: list[FieldError] = []
        #: transport.type was given but unusable: no channel-specific checks follow from it.
        self.bad_type = False
        self.found_channels: tuple[Channel, ...] = ()
        self.audience_count: int | None = None

    def err(self, field: str, error: str) -> None:
        self.errors.append(FieldError(field, error))

    def unknown(self, data: Mapping[str, Any], known: frozenset[str], prefix: str) -> None:
        for key in data:
            if key not in known:
                self.err(f"{prefix}{_shown(key)}", "unknown field")

    def text(self, value: str, path: str) -> bool:
        """Whether ``value`` is valid Unicode text (else an error names ``path``)."""
        if is_text(value):
            return True
        self.err(path, NOT_TEXT)
        return False

    def all_text(self, value: Any, path: str) -> bool:
        """Whether every string (and object key) within ``value`` is valid Unicode text; each
        one that is not is an error naming its own path. Iterative: nesting is bounded only
        by the JSON parser."""
        ok = True
        stack: list[tuple[Any, str]] = [(value, path)]
        while stack:
            item, where = stack.pop()
            if isinstance(item, str):
                ok = self.text(item, where) and ok
            elif isinstance(item, Mapping):
                for key, child in item.items():
                    if isinstance(key, str) and not is_text(key):
                        self.err(where, f"a key is {NOT_TEXT}")
                        ok = False
                        continue
                    stack.append((child, f"{where}.{key}"))
            elif isinstance(item, list | tuple):
                stack.extend((child, f"{where}[{i}]") for i, child in enumerate(item))
        return ok

    def optional_str(
        self, data: Mapping[str, Any], key: str, path: str, *, max_len: int
    ) -> str | None:
        value = data.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            self.err(path, "must be a string")
            return None
        if not self.text(value, path):
            return None
        if len(value) > max_len:
            self.err(path, f"must be at most {max_len} characters")
            return None
        return value

    # -- the instruction -------------------------------------------------------------------

    def recipient_steps(
        self, data: Any, out: list[Recipient], size: int
    ) -> Generator[None, None, None]:
        """Every entry of an audience whose shape :meth:`envelope` accepted (none otherwise),
        checked against the channels found, into ``out``; yields after every ``size`` entries
        checked, and stops after :data:`MAX_ERRORS` errors in all."""
        if self.audience_count is None:
            return
        for i, entry in enumerate(data["audience"]):
            recipient = self.recipient(entry, f"audience[{i}]", self.found_channels)
            if recipient is not None:
                out.append(recipient)
            if len(self.errors) >= MAX_ERRORS:
                self.err("audience", "too many errors; fix these and resubmit")
                break
            if (i + 1) % size == 0:
                yield

    def envelope(
        self, data: Any, client: ClientConfig | None, authenticated: str | None
    ) -> Envelope | None:
        """Everything but the recipients themselves (the audience's shape and size included)."""
        if not isinstance(data, Mapping):
            self.err("", "the instruction must be a JSON object")
            return None
        self.unknown(data, _TOP, "")
        client_id = self.client_id(data.get("client_id"), client, authenticated)
        idem = self.optional_str(data, "idempotency_key", "idempotency_key", max_len=255)
        if idem is not None and not idem.strip():
            self.err("idempotency_key", "must not be blank")
        transport = self.transport(data.get("transport"), client)
        fallback = self.fallback(data.get("options"), client)
        channels = self.found_channels = self.channels(transport, client, fallback)
        count = self.audience_count = self.audience_shape(data.get("audience"))
        options = self.options(data.get("options"), fallback)
        raw_options = data.get("options")
        high = isinstance(raw_options, Mapping) and raw_options.get("priority") == "high"
        if high and count is not None and count > MAX_PRIORITY_RECIPIENTS:
            self.err(
                "options.priority",
                f"'high' is for at most {MAX_PRIORITY_RECIPIENTS} "
                f"recipients (this audience has {count}); send a campaign as 'normal'",
            )
        if (
            self.errors
            or client_id is None
            or transport is None
            or count is None
            or options is None
        ):
            return None
        return Envelope(client_id, transport, channels, count, options, idem)

    def client_id(
        self, value: Any, client: ClientConfig | None, authenticated: str | None
    ) -> str | None:
        if value is None and authenticated is not None:
            value = authenticated
        if value is None:
            self.err("client_id", "required")
            return None
        if not isinstance(value, str) or not value:
            self.err("client_id", "must be a non-empty string")
            return None
        if not self.text(value, "client_id"):
            return None
        if authenticated is not None and value != authenticated:
            self.err("client_id", "does not match the client of the API key")
            return None
        if client is None or client.client_id != value:
            self.err("client_id", f"unknown client {value!r}")
            return None
        return value

    def transport(self, data: Any, client: ClientConfig | None) -> Transport | None:
        if data is None:
            self.err("transport", "required")
            return None
        if not isinstance(data, Mapping):
            self.err("transport", "must be an object")
            return None
        self.unknown(data, _TRANSPORT, "transport.")
        channel = self.channel_type(data.get("type"), client)
        subject = self.optional_str(data, "subject", "transport.subject", max_len=998)
        message = self.optional_str(data, "message", "transport.message", max_len=MAX_MESSAGE)
        file_url = self.optional_str(data, "fileUrl", "transport.fileUrl", max_len=2048)
        if file_url is not None:
            try:
                file_url = normalize_url(file_url, allow_http=True)
            except AddressError as exc:
                self.err("transport.fileUrl", str(exc))
        extras = self.extras(data.get("extras"))
        # Template mistakes are the sender's: refuse them now, not once per recipient later.
        html = extras.get("html") if isinstance(extras.get("html"), str) else None
        for path, template in (
            ("transport.message", message),
            ("transport.subject", subject),
            ("transport.extras.html", html),
        ):
            if template:
                try:
                    placeholders(template)
                except TemplateSyntaxError as exc:
                    self.err(path, str(exc))
        return Transport(
            type=channel, message=message, subject=subject, file_url=file_url, extras=extras
        )

    def channel_type(self, raw_type: Any, client: ClientConfig | None) -> Channel | None:
        if raw_type is None:
            return None
        problem = _channel_problem(raw_type, client)
        if problem is None:
            return cast(Channel, raw_type)
        self.err("transport.type", problem)
        self.bad_type = True
        return None

    def fallback(self, options: Any, client: ClientConfig | None) -> Fallback | None:
        """``options.fallback``: 2 or more distinct channels configured for the client, in the
        order they are tried, and an optional ``afterSeconds`` (``switchboard/fallback.py``)."""
        raw = options.get("fallback") if isinstance(options, Mapping) else None
        if raw is None:
            return None
        path = "options.fallback"
        if not isinstance(raw, Mapping):
            self.err(
                path, 'must be an object, e.g. {"channels": ["sms", "email"], "afterSeconds": 120}'
            )
            return None
        before = len(self.errors)
        self.unknown(raw, _FALLBACK, f"{path}.")
        channels = self.fallback_channels(raw.get("channels"), client)
        after = raw.get("afterSeconds")
        if after is not None and (
            isinstance(after, bool)
            or not isinstance(after, int)
            or not 1 <= after <= MAX_AFTER_SECONDS
        ):
            self.err(
                f"{path}.afterSeconds",
                f"must be a whole number of seconds from 1 to {MAX_AFTER_SECONDS} (a day)",
            )
        if len(self.errors) > before or channels is None:
            return None
        return Fallback(channels, after)

    def fallback_channels(
        self, raw: Any, client: ClientConfig | None
    ) -> tuple[Channel, ...] | None:
        path = "options.fallback.channels"
        if not isinstance(raw, list) or not 2 <= len(raw) <= len(CHANNELS):
            self.err(
                path, f"required: a list of 2 to {len(CHANNELS)} channels, tried in this order"
            )
            return None
        found: list[Channel] = []
        for i, name in enumerate(raw):
            problem = _channel_problem(name, client)
            if problem is None and name in found:
                problem = f"{name!r} is named twice: each channel is tried at most once"
            if problem is not None:
                self.err(f"{path}[{i}]", problem)
                continue
            found.append(cast(Channel, name))
        return tuple(found) if len(found) == len(raw) else None

    def extras(self, extras: Any) -> dict[str, Any]:
        if extras is None:
            return {}
        if not isinstance(extras, Mapping) or not all(isinstance(k, str) for k in extras):
            self.err("transport.extras", "must be an object")
            return {}
        if not self.all_text(extras, "transport.extras"):
            return {}
        template_vars = extras.get("template_vars")
        if template_vars is not None and not (
            isinstance(template_vars, Mapping)
            and all(
                isinstance(v, str | int | float | bool) or v is None for v in template_vars.values()
            )
        ):
            self.err(
                "transport.extras.template_vars",
                "must be an object of strings, numbers, booleans or null (null uses the placeholder's default)",
            )
        if extras.get("html") is not None and not isinstance(extras["html"], str):
            self.err("transport.extras.html", "must be a string")
        return dict(extras)

    def channels(
        self, transport: Transport | None, client: ClientConfig | None, fallback: Fallback | None
    ) -> tuple[Channel, ...]:
        if transport is None or client is None or self.bad_type:
            return ()
        if fallback is not None:
            if transport.type not in (None, fallback.channels[0]):
                self.err(
                    "transport.type",
                    f"must be {fallback.channels[0]!r}, the first of options.fallback.channels, "
                    "or left out",
                )
            channels: tuple[Channel, ...] = fallback.channels
        elif transport.type is not None:
            channels = (transport.type,)
        elif client.default_channels:
            channels = client.default_channels
        else:
            if not any(e.field == "transport.type" for e in self.errors):
                self.err(
                    "transport.type",
                    f"required: client {client.client_id!r} has no default channels",
                )
            return ()
        for channel in channels:
            self.content_for(channel, transport)
        return channels

    def content_for(self, channel: Channel, t: Transport) -> None:
        """What each channel needs to have something to send (a field already refused, e.g.
        as invalid text, is not reported missing as well)."""
        refused = {e.field for e in self.errors}
        before = len(self.errors)
        self.content_needs(channel, t)
        # Drop "required" errors for fields that already have one: the first says why.
        self.errors[before:] = [e for e in self.errors[before:] if e.field not in refused]

    def content_needs(self, channel: Channel, t: Transport) -> None:
        has_body = bool(t.message) or (
            isinstance(t.extras.get("html"), str) and bool(t.extras["html"])
        )
        if channel == "email":
            if not t.subject:
                self.err("transport.subject", "required for email")
            if not has_body:
                self.err("transport.message", "required for email (or extras.html)")
        elif channel in ("sms", "whatsapp", "voice"):
            if not t.message and not t.file_url and not t.extras.get("content_sid"):
                self.err("transport.message", f"required for {channel} (or fileUrl)")
            if channel == "sms" and t.message and len(t.message) > SMS_MAX_CHARS:
                self.err("transport.message", f"an SMS is at most {SMS_MAX_CHARS} characters")
        elif not t.message:  # push, slack
            self.err("transport.message", f"required for {channel}")

    # -- the audience ----------------------------------------------------------------------

    def audience_shape(self, data: Any) -> int | None:
        if data is None:
            self.err("audience", "required")
            return None
        if not isinstance(data, list):
            self.err("audience", "must be a list of addresses or recipient profiles")
            return None
        if not data:
            self.err("audience", "must have at least one recipient")
            return None
        if len(data) > self.policy.max_audience:
            self.err("audience", f"must have at most {self.policy.max_audience:,} recipients")
            return None
        return len(data)

    def recipient(self, entry: Any, path: str, channels: Sequence[Channel]) -> Recipient | None:
        if isinstance(entry, str):
            # isascii first: the common case costs nothing in a million-recipient audience.
            if not entry.isascii() and not self.text(entry, path):
                return None
            return self.bare_address(entry, path, channels)
        if not isinstance(entry, Mapping):
            self.err(path, "must be an address string or a recipient profile object")
            return None
        if not self.all_text(entry, path):
            return None  # no address check on text an address parser was never meant to see
        before = len(self.errors)
        self.unknown(entry, _PROFILE, f"{path}.")
        addresses: dict[str, str] = {}
        for key, normalize in NORMALIZERS.items():
            value = entry.get(key)
            if value is None:
                continue
            if not isinstance(value, str):
                self.err(f"{path}.{key}", "must be a string")
                continue
            try:
                addresses[key] = normalize(value)
            except AddressError as exc:
                self.err(f"{path}.{key}", str(exc))
        name = self.optional_str(entry, "name", f"{path}.name", max_len=200)
        locale = self.optional_str(entry, "locale", f"{path}.locale", max_len=35)
        timezone = self.optional_str(entry, "timezone", f"{path}.timezone", max_len=64)
        if timezone is not None and not is_zone_name(timezone):
            self.err(f"{path}.timezone", "not an IANA time zone name, e.g. America/Los_Angeles")
        raw_vars = entry.get("vars") or {}
        if not isinstance(raw_vars, Mapping) or not all(
            isinstance(v, str) for v in raw_vars.values()
        ):
            self.err(f"{path}.vars", "must be an object of strings")
            raw_vars = {}
        if (
            channels
            and not any(ADDRESS_FIELD[c] in addresses for c in channels)
            and len(self.errors) == before
        ):
            wanted = sorted({ADDRESS_FIELD[c] for c in channels})
            self.err(path, f"no address for {', '.join(channels)}: give {' or '.join(wanted)}")
        if len(self.errors) > before:
            return None
        return Recipient(
            addresses=addresses, name=name, timezone=timezone, locale=locale, vars=dict(raw_vars)
        )

    def bare_address(self, value: str, path: str, channels: Sequence[Channel]) -> Recipient | None:
        """A string is an address for the chosen channel(s). With several channels (client
        defaults) it is used for each channel whose kind of address it is."""
        if not channels:
            return None
        addresses: dict[str, str] = {}
        reasons: list[str] = []
        for field in _address_fields(tuple(channels)):
            try:
                addresses[field] = NORMALIZERS[field](value)
            except AddressError as exc:
                reasons.append(str(exc))
        if not addresses:
            self.err(
                path,
                reasons[0]
                if len(reasons) == 1
                else "not a valid address for " + ", ".join(channels),
            )
            return None
        return Recipient(addresses=addresses, given=value)

    # -- options ---------------------------------------------------------------------------

    def priority(self, value: Any) -> Priority:
        if value is None:
            return "normal"
        if value not in PRIORITIES:
            self.err("options.priority", f"must be one of {', '.join(PRIORITIES)}")
            return "normal"
        return cast(Priority, value)

    def flag(self, value: Any, path: str) -> bool:
        """An optional boolean (``null`` or absent: false)."""
        if value is None:
            return False
        if not isinstance(value, bool):
            self.err(path, "must be true or false")
            return False
        return value

    def options(self, data: Any, fallback: Fallback | None = None) -> Options | None:
        if data is None:
            return Options()
        if not isinstance(data, Mapping):
            self.err("options", "must be an object")
            return None
        self.unknown(data, _OPTIONS, "options.")
        before = len(self.errors)
        trigger: Trigger = "immediate"
        raw_trigger = data.get("trigger")
        if raw_trigger is not None:
            if raw_trigger in TRIGGERS:
                trigger = cast(Trigger, raw_trigger)
            else:
                self.err("options.trigger", f"must be one of {', '.join(TRIGGERS)}")
        scheduled_at = self.timestamp(data.get("scheduledTimestamp"))
        if (
            trigger == "scheduled"
            and scheduled_at is None
            and "options.scheduledTimestamp" not in {e.field for e in self.errors}
        ):
            self.err("options.scheduledTimestamp", "required when trigger is scheduled")
        if scheduled_at is not None and trigger != "scheduled" and raw_trigger in (None, *TRIGGERS):
            self.err("options.scheduledTimestamp", "only allowed with trigger 'scheduled'")
        retries = data.get("retries", 0)
        if retries is None:
            retries = 0
        if (
            isinstance(retries, bool)
            or not isinstance(retries, int)
            or not 0 <= retries <= MAX_RETRIES
        ):
            self.err("options.retries", f"must be a whole number from 0 to {MAX_RETRIES}")
            retries = 0
        intervals = self.intervals(data.get("retryIntervalMinutes"))
        webhook = self.optional_str(data, "webhookUrl", "options.webhookUrl", max_len=2048)
        if webhook is not None:
            try:
                webhook = normalize_url(webhook, allow_http=self.policy.allow_http_webhooks)
            except AddressError as exc:
                self.err("options.webhookUrl", str(exc))
        priority = self.priority(data.get("priority"))
        transactional = self.flag(data.get("transactional"), "options.transactional")
        expires_at, ttl = self.deadline(data, scheduled_at)
        if len(self.errors) > before:
            return None
        return Options(
            trigger,
            scheduled_at,
            retries,
            intervals,
            webhook,
            priority,
            transactional,
            expires_at,
            ttl,
            fallback,
        )

    def deadline(
        self, data: Mapping[str, Any], scheduled_at: datetime | None
    ) -> tuple[datetime | None, int | None]:
        """``expiresAt`` (RFC 3339 with an offset) or ``ttlSeconds`` (1 to 30 days), not both
        (``switchboard/deadline.py``). A deadline already passed is accepted: its deliveries
        end ``expired``, as an instruction that waited in the intake topic would."""
        raw_at, raw_ttl = data.get("expiresAt"), data.get("ttlSeconds")
        if raw_at is not None and raw_ttl is not None:
            self.err("options.ttlSeconds", "give expiresAt or ttlSeconds, not both")
            return None, None
        if raw_ttl is not None:
            if (
                isinstance(raw_ttl, bool)
                or not isinstance(raw_ttl, int)
                or not 1 <= raw_ttl <= MAX_TTL_SECONDS
            ):
                self.err(
                    "options.ttlSeconds",
                    f"must be a whole number of seconds from 1 to {MAX_TTL_SECONDS} (30 days)",
                )
                return None, None
            return None, raw_ttl
        if raw_at is None:
            return None, None
        parsed = None
        if isinstance(raw_at, str):
            with contextlib.suppress(ValueError):  # reported below, with the expected form
                parsed = datetime.fromisoformat(raw_at)
        if parsed is None or parsed.tzinfo is None:
            self.err(
                "options.expiresAt",
                "must be an RFC 3339 timestamp with an offset, e.g. 2026-12-06T10:00:00Z",
            )
            return None, None
        if scheduled_at is not None and parsed <= scheduled_at:
            self.err("options.expiresAt", "must be after scheduledTimestamp")
            return None, None
        return parsed, None

    def timestamp(self, value: Any) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, str):
            self.err("options.scheduledTimestamp", "must be an ISO 8601 string")
            return None
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            self.err(
                "options.scheduledTimestamp", "not an ISO 8601 timestamp, e.g. 2026-12-31T23:59:59Z"
            )
            return None
        # A timestamp without an offset is UTC (documented): the seed examples omit it.
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)

    def intervals(self, value: Any) -> tuple[float, ...]:
        if value is None:
            return (60.0,)
        items: list[Any]
        if isinstance(value, int | float) and not isinstance(value, bool):
            items = [value]
        elif isinstance(value, str):
            items = [part.strip() for part in value.split(",")]
        else:
            items = [None]
        out: list[float] = []
        for item in items:
            try:
                minutes = float(item)
            except (TypeError, ValueError):
                minutes = math.nan
            if not (math.isfinite(minutes) and 0 < minutes <= 7 * 24 * 60):
                self.err(
                    "options.retryIntervalMinutes",
                    "must be a comma list of minutes, each above 0 and at most 10080 (7 days), e.g. 60,180,600",
                )
                return (60.0,)
            out.append(minutes)
        return tuple(out)


@functools.lru_cache(maxsize=64)
def _address_fields(channels: tuple[Channel, ...]) -> tuple[str, ...]:
    """The address fields of ``channels``, each once, in order: the same for every recipient
    of an audience, so worked out once."""
    return tuple(dict.fromkeys(ADDRESS_FIELD[c] for c in channels))
