"""Client configuration (README: "Configuration"): parsing, validation and API-key hashing. Pure.

A client's configuration arrives as YAML (``config/clients.yaml``, applied with
``switchboard clients apply``) and travels as JSON on the compacted ``<prefix>.clients`` topic,
keyed by client id. :func:`parse_client` accepts either form's mapping and reports every problem.

API keys are never stored: only ``sha256:<hex>`` digests are. :func:`api_key_digest` computes
one; lookups compare digests with :func:`hmac.compare_digest`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, cast

from switchboard.calltool.campaigns import InvalidCampaigns, parse_campaigns
from switchboard.errors import ConfigError, FieldError
from switchboard.instruction import CHANNELS, Channel
from switchboard.optout import DEFAULT_CHANNELS, PHONE_CHANNELS
from switchboard.quota import DEFAULT_LIMIT, RateLimit
from switchboard.zones import is_zone_name

__all__ = [
    "MAX_PROVIDERS",
    "ChannelConfig",
    "ClientConfig",
    "TimeWindow",
    "api_key_digest",
    "new_api_key",
    "parse_client",
    "parse_clients_document",
]

DAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_CLIENT_ID: Final = re.compile(r"[a-z0-9][a-z0-9_\-]{0,62}")
_DIGEST: Final = re.compile(r"sha256:[0-9a-f]{64}")
_HHMM: Final = re.compile(r"([01]\d|2[0-4]):([0-5]\d)")


def api_key_digest(key: str) -> str:
    """The stored form of an API key: ``sha256:`` and the hex digest of its UTF-8 bytes."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def new_api_key(client_id: str) -> str:
    """A new random API key (256 bits), prefixed for recognisability in secret scanners."""
    return f"sb_{client_id}_{secrets.token_urlsafe(32)}"


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    """How one client sends over one channel: the provider and its options (``from``, ...).

    Provider secrets are never here: options name environment variables instead (see the
    transports' docs), so the topic and the logs never carry them.
    """

    provider: str
    options: Mapping[str, Any] = field(default_factory=dict)
    #: The providers after this one when the channel lists ``providers`` (failover behind a
    #: circuit breaker, ``switchboard/circuit.py``); None for a channel of one ``provider``,
    #: which has no breaker. ``()``: a list of one, whose outages hold its sends.
    failover: tuple[ChannelConfig, ...] | None = None

    @property
    def providers(self) -> tuple[ChannelConfig, ...]:
        """Every provider of the channel, in order (this one first, without its failover)."""
        if self.failover is None:
            return (self,)
        return (ChannelConfig(self.provider, self.options), *self.failover)

    def to_json(self) -> dict[str, Any]:
        if self.failover is not None:
            return {"providers": [p.to_json() for p in self.providers]}
        return {"provider": self.provider, **self.options}


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """When a channel may send: ``days`` of the week, ``start``-``end`` local time (``end`` may be
    before ``start``: the window then crosses midnight), in ``timezone`` (an IANA name, or
    ``recipient``: the recipient's zone, else the phone number's, else the client's)."""

    days: tuple[str, ...]
    start: str
    end: str
    timezone: str

    def to_json(self) -> dict[str, Any]:
        return {
            "days": list(self.days),
            "start": self.start,
            "end": self.end,
            "timezone": self.timezone,
        }


@dataclass(frozen=True, slots=True)
class ClientConfig:
    client_id: str
    api_key_digests: tuple[str, ...] = ()
    webhook_secret: str | None = None
    #: During a rotation, the secret being retired: webhooks are signed with both.
    previous_webhook_secret: str | None = None
    default_channels: tuple[Channel, ...] = ()
    channels: Mapping[Channel, ChannelConfig] = field(default_factory=dict)
    time_windows: Mapping[Channel, TimeWindow] = field(default_factory=dict)
    timezone: str = "UTC"
    service_managers: tuple[str, ...] | None = None
    help_text: str | None = None
    #: The call tool's campaigns (README: "The call tool"), checked by switchboard.calltool.campaigns.
    campaigns: Mapping[str, Any] = field(default_factory=dict)
    #: Send API requests per second and burst, per worker (``rate_limit: {per_second, burst}``).
    rate_limit: RateLimit = DEFAULT_LIMIT
    #: The phone channels on which a number's opt-out (STOP, a provider's "unsubscribed") holds:
    #: every channel that reaches the number unless narrowed (``optout_channels``; sms always).
    optout_channels: frozenset[str] = DEFAULT_CHANNELS

    def accepts_key(self, key: str) -> bool:
        """Whether ``key`` is one of this client's API keys (constant-time per digest)."""
        digest = api_key_digest(key)
        found = False
        for stored in self.api_key_digests:
            found |= hmac.compare_digest(stored, digest)
        return found

    def to_json(self) -> dict[str, Any]:
        """The topic form: the same mapping :func:`parse_client` reads."""
        out: dict[str, Any] = {
            "api_keys": list(self.api_key_digests),
            "default_channels": list(self.default_channels),
            "channels": {ch: cfg.to_json() for ch, cfg in self.channels.items()},
            "time_windows": {ch: w.to_json() for ch, w in self.time_windows.items()},
            "timezone": self.timezone,
        }
        if self.webhook_secret is not None:
            out["webhook_secret"] = self.webhook_secret
        if self.previous_webhook_secret is not None:
            out["previous_webhook_secret"] = self.previous_webhook_secret
        if self.service_managers is not None:
            out["service_managers"] = list(self.service_managers)
        if self.help_text is not None:
            out["help_text"] = self.help_text
        if self.campaigns:
            out["campaigns"] = dict(self.campaigns)
        if self.optout_channels != DEFAULT_CHANNELS:
            out["optout_channels"] = sorted(self.optout_channels)
        if self.rate_limit != DEFAULT_LIMIT:
            out["rate_limit"] = {
                "per_second": self.rate_limit.per_second,
                "burst": self.rate_limit.burst,
            }
        return out


_KNOWN_KEYS: Final = frozenset(
    {
        "api_keys",
        "webhook_secret",
        "default_channels",
        "channels",
        "time_windows",
        "timezone",
        "service_managers",
        "help_text",
        "campaigns",
        "rate_limit",
        "previous_webhook_secret",
        "optout_channels",
    }
)


def parse_client(client_id: str, data: Any) -> ClientConfig:
    """Build a :class:`ClientConfig`; raise :class:`ConfigError` naming every problem."""
    errors: list[FieldError] = []
    p = f"clients.{client_id}"
    if not isinstance(client_id, str) or not _CLIENT_ID.fullmatch(client_id):
        errors.append(
            FieldError(
                p, "a client id is 1-63 characters of a-z 0-9 _ -, starting with a letter or digit"
            )
        )
    if not isinstance(data, Mapping):
        raise ConfigError(f"{p}: must be a mapping")
    errors.extend(FieldError(f"{p}.{k}", "unknown setting") for k in data if k not in _KNOWN_KEYS)
    keys = _api_keys(data.get("api_keys", []), f"{p}.api_keys", errors)
    secret = _secret(data, "webhook_secret", p, errors)
    previous = _secret(data, "previous_webhook_secret", p, errors)
    channels = _channels(data.get("channels", {}), f"{p}.channels", errors)
    defaults = _string_list(data.get("default_channels", []), f"{p}.default_channels", errors)
    for i, name in enumerate(defaults):
        if name not in channels:
            errors.append(
                FieldError(
                    f"{p}.default_channels[{i}]",
                    f"channel {name!r} is not configured under channels",
                )
            )
        elif name in defaults[:i]:
            errors.append(
                FieldError(
                    f"{p}.default_channels[{i}]",
                    f"channel {name!r} is listed twice: it would send twice",
                )
            )
    timezone = data.get("timezone", "UTC")
    if not is_zone_name(timezone):
        errors.append(FieldError(f"{p}.timezone", "not an IANA time zone name"))
    windows = _windows(data.get("time_windows", {}), channels, f"{p}.time_windows", errors)
    managers = None
    if "service_managers" in data:
        managers = tuple(_string_list(data["service_managers"], f"{p}.service_managers", errors))
    help_text = data.get("help_text")
    if help_text is not None and not isinstance(help_text, str):
        errors.append(FieldError(f"{p}.help_text", "must be a string"))
    rate_limit = _rate_limit(data.get("rate_limit"), f"{p}.rate_limit", errors)
    optout_channels = _optout_channels(data.get("optout_channels"), f"{p}.optout_channels", errors)
    campaigns = data.get("campaigns", {})
    if not isinstance(campaigns, Mapping):
        errors.append(FieldError(f"{p}.campaigns", "must be a mapping of campaign id to campaign"))
        campaigns = {}
    else:
        try:
            parse_campaigns(campaigns, f"{p}.campaigns")
        except InvalidCampaigns as exc:
            errors.extend(exc.errors)
    if errors:
        raise ConfigError(
            "invalid client configuration:\n" + "\n".join(f"  {e.field}: {e.error}" for e in errors)
        )
    return ClientConfig(
        client_id=client_id,
        api_key_digests=tuple(keys),
        webhook_secret=secret,
        previous_webhook_secret=previous,
        default_channels=tuple(cast(Channel, d) for d in defaults),
        channels=channels,
        time_windows=windows,
        timezone=timezone,
        service_managers=managers,
        help_text=help_text,
        campaigns=dict(campaigns),
        rate_limit=rate_limit,
        optout_channels=optout_channels,
    )


def _api_keys(value: Any, where: str, errors: list[FieldError]) -> list[str]:
    keys = _string_list(value, where, errors)
    for i, key in enumerate(keys):
        if not _DIGEST.fullmatch(key):
            errors.append(
                FieldError(
                    f"{where}[{i}]",
                    "must be sha256:<64 hex digits>; store digests, never keys (see `switchboard clients add-key`)",
                )
            )
    return keys


def _channels(raw: Any, where: str, errors: list[FieldError]) -> dict[Channel, ChannelConfig]:
    if not isinstance(raw, Mapping):
        errors.append(FieldError(where, "must be a mapping of channel to settings"))
        return {}
    channels: dict[Channel, ChannelConfig] = {}
    for name, cfg in raw.items():
        if name not in CHANNELS:
            errors.append(
                FieldError(
                    f"{where}.{name}", f"unknown channel; expected one of {', '.join(CHANNELS)}"
                )
            )
        elif isinstance(cfg, Mapping) and "providers" in cfg:
            config = _providers(cfg, f"{where}.{name}", errors)
            if config is not None:
                channels[cast(Channel, name)] = config
        elif (provider := _provider(cfg, f"{where}.{name}", errors)) is not None:
            channels[cast(Channel, name)] = provider
    return channels


#: The most providers one channel may list.
MAX_PROVIDERS: Final = 5


def _provider(cfg: Any, where: str, errors: list[FieldError]) -> ChannelConfig | None:
    if (
        not isinstance(cfg, Mapping)
        or not isinstance(cfg.get("provider"), str)
        or not cfg["provider"]
    ):
        errors.append(
            FieldError(where, "must be a mapping with a provider, e.g. {provider: sandbox}")
        )
        return None
    return ChannelConfig(cfg["provider"], {k: v for k, v in cfg.items() if k != "provider"})


def _providers(
    cfg: Mapping[str, Any], where: str, errors: list[FieldError]
) -> ChannelConfig | None:
    """``{providers: [{provider: ...}, ...]}``: failover in this order, behind circuit breakers."""
    listed = cfg["providers"]
    if set(cfg) != {"providers"}:
        errors.append(
            FieldError(
                where,
                "a channel with providers has no other keys: give each provider's options in its entry",
            )
        )
        return None
    if not isinstance(listed, list) or not 1 <= len(listed) <= MAX_PROVIDERS:
        errors.append(
            FieldError(
                f"{where}.providers",
                f"must be a list of 1 to {MAX_PROVIDERS} providers, tried in order",
            )
        )
        return None
    parsed = [_provider(item, f"{where}.providers[{i}]", errors) for i, item in enumerate(listed)]
    if any(p is None for p in parsed):
        return None
    first, *rest = cast(list[ChannelConfig], parsed)
    return ChannelConfig(first.provider, first.options, tuple(rest))


def _windows(
    raw: Any, channels: Mapping[Channel, ChannelConfig], where: str, errors: list[FieldError]
) -> dict[Channel, TimeWindow]:
    if not isinstance(raw, Mapping):
        errors.append(FieldError(where, "must be a mapping of channel to window"))
        return {}
    windows: dict[Channel, TimeWindow] = {}
    for name, value in raw.items():
        window = _parse_window(value, f"{where}.{name}", errors)
        if name not in channels:
            errors.append(FieldError(f"{where}.{name}", "no such configured channel"))
        elif window is not None:
            windows[cast(Channel, name)] = window
    return windows


def parse_clients_document(doc: Any) -> dict[str, ClientConfig]:
    """Parse a whole ``clients.yaml`` document (``{"clients": {id: config}}``)."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("clients"), Mapping):
        raise ConfigError("a clients file must have a top-level `clients:` mapping")
    problems: list[str] = []
    parsed: dict[str, ClientConfig] = {}
    for client_id, data in doc["clients"].items():
        try:
            parsed[str(client_id)] = parse_client(str(client_id), data)
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError("\n".join(problems))
    return parsed


def _rate_limit(raw: Any, where: str, errors: list[FieldError]) -> RateLimit:
    if raw is None:
        return DEFAULT_LIMIT
    problem = "must be {per_second: <number above 0>, burst: <whole number, 1 or more>}"
    if not isinstance(raw, Mapping) or not set(raw) <= {"per_second", "burst"}:
        errors.append(FieldError(where, problem))
        return DEFAULT_LIMIT
    per_second, burst = raw.get("per_second"), raw.get("burst")
    if not (
        isinstance(per_second, int | float) and not isinstance(per_second, bool) and per_second > 0
    ):
        errors.append(FieldError(f"{where}.per_second", problem))
        return DEFAULT_LIMIT
    if not (isinstance(burst, int) and not isinstance(burst, bool) and burst >= 1):
        errors.append(FieldError(f"{where}.burst", problem))
        return DEFAULT_LIMIT
    return RateLimit(float(per_second), burst)


def _optout_channels(raw: Any, where: str, errors: list[FieldError]) -> frozenset[str]:
    """``optout_channels``: a list of phone channels that includes sms (an SMS STOP must stop at
    least SMS: carriers require it, and would block the sends anyway)."""
    if raw is None:
        return DEFAULT_CHANNELS
    names = _string_list(raw, where, errors)
    unknown = [name for name in names if name not in PHONE_CHANNELS]
    if unknown:
        errors.append(
            FieldError(
                where,
                f"unknown phone channel(s) {', '.join(map(repr, unknown))}; "
                f"use {', '.join(PHONE_CHANNELS)}",
            )
        )
        return DEFAULT_CHANNELS
    if isinstance(raw, list) and "sms" not in names:
        errors.append(FieldError(where, "must include sms: a number's STOP always stops its SMS"))
        return DEFAULT_CHANNELS
    return frozenset(names)


def _secret(data: Mapping[str, Any], key: str, where: str, errors: list[FieldError]) -> str | None:
    value = data.get(key)
    if value is not None and not _is_webhook_secret(value):
        errors.append(
            FieldError(
                f"{where}.{key}",
                "must be whsec_ followed by a base64 secret of at least 16 bytes (Standard Webhooks)",
            )
        )
        return None
    return value if isinstance(value, str) else None


def _is_webhook_secret(secret: Any) -> bool:
    if not isinstance(secret, str) or not secret.startswith("whsec_"):
        return False
    try:
        return len(base64.b64decode(secret[len("whsec_") :], validate=True)) >= 16
    except (binascii.Error, ValueError):
        return False


def _string_list(value: Any, where: str, errors: list[FieldError]) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        errors.append(FieldError(where, "must be a list of strings"))
        return []
    return list(value)


def _parse_window(raw: Any, where: str, errors: list[FieldError]) -> TimeWindow | None:
    if not isinstance(raw, Mapping):
        errors.append(FieldError(where, "must be a mapping with days, start, end and timezone"))
        return None
    before = len(errors)
    days = _string_list(raw.get("days", list(DAYS)), f"{where}.days", errors)
    errors.extend(
        FieldError(f"{where}.days", f"unknown day {d!r}; use {', '.join(DAYS)}")
        for d in days
        if d not in DAYS
    )
    if raw.get("days") == []:
        errors.append(
            FieldError(
                f"{where}.days",
                "must name at least one day: a window that never opens would hold messages forever",
            )
        )
    if len(set(days)) != len(days):
        errors.append(FieldError(f"{where}.days", "lists a day twice"))
    start, end = raw.get("start", "00:00"), raw.get("end", "24:00")
    for key, value in (("start", start), ("end", end)):
        if (
            not isinstance(value, str)
            or not _HHMM.fullmatch(value)
            or (value.startswith("24") and value != "24:00")
        ):
            errors.append(FieldError(f"{where}.{key}", "must be HH:MM between 00:00 and 24:00"))
    zone = raw.get("timezone", "recipient")
    if zone != "recipient" and not is_zone_name(zone):
        errors.append(
            FieldError(f"{where}.timezone", "must be `recipient` or an IANA time zone name")
        )
    unknown = set(raw) - {"days", "start", "end", "timezone"}
    errors.extend(FieldError(f"{where}.{k}", "unknown setting") for k in sorted(unknown))
    if len(errors) > before:
        return None
    return TimeWindow(tuple(days), start, end, zone)
