"""The options of a channel sent through ``provider: http``, checked when they are applied. Pure.

:meth:`GatewayConfig.parse` reads the channel's options (``clients.yaml``), reports every problem
at once with the option it concerns (``body.text: unknown placeholder {{bdy}}``) as a
:class:`~switchboard.errors.ConfigError`, and reads the declared secrets from the environment it
is given. ``switchboard clients apply`` and a starting worker build every channel's transport, so
a bad URL, template, path or missing variable stops the apply (or the start), never a send.

Secrets are read once, kept only in :attr:`GatewayConfig.secrets` (left out of its ``repr``),
and never put in an error: an error names the option or the variable, not its value.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal, cast
from urllib.parse import quote, urlencode, urlsplit

from switchboard.errors import ConfigError
from switchboard.gateway.response import Condition, ResponseRules, StatusRanges
from switchboard.gateway.template import Template, lookup, text_of

__all__ = ["CHANNELS", "AddressRule", "BulkMode", "GatewayConfig", "GatewayRequest"]

#: The channels a generic gateway sends: text to a phone number (``whatsapp:`` by prefix).
CHANNELS: Final = frozenset({"sms", "whatsapp"})
_KNOWN: Final = frozenset(
    {
        "url",
        "method",
        "format",
        "headers",
        "secrets",
        "from",
        "body",
        "address",
        "timeout",
        "max_in_flight",
        "bulk",
        "response",
    }
)
_METHODS: Final = ("POST", "PUT", "PATCH", "GET")
_FORMATS: Final = ("json", "form", "query")
_NAME: Final = re.compile(r"[A-Za-z0-9_\-]+")
_HEADER: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # an RFC 9110 token
_PATH: Final = re.compile(r"[^.\s]+(\.[^.\s]+)*")
_STATUS: Final = re.compile(r"([1-5])xx|([1-5]\d\d)(?:-([1-5]\d\d))?")
_NON_DIGITS: Final = re.compile(r"\D")
_DEFAULT_SUCCESS: Final = StatusRanges(((200, 299),))
_DEFAULT_RETRYABLE: Final = StatusRanges(((429, 429), (500, 599)))


@dataclass(frozen=True, slots=True)
class AddressRule:
    """How a recipient's address (E.164, ``+9779812345678``) is written for the gateway:
    ``strip`` removed from its start, then every non-digit removed when ``digits_only``, then
    ``prefix`` put in front (``whatsapp:``)."""

    prefix: str = ""
    strip: str = ""
    digits_only: bool = False

    def apply(self, address: str) -> str:
        out = address.removeprefix(self.strip) if self.strip else address
        if self.digits_only:
            out = _NON_DIGITS.sub("", out)
        return self.prefix + out


@dataclass(frozen=True, slots=True)
class BulkMode:
    """One request for up to ``max_addresses`` messages of the same text (module
    ``transports/http_gateway.py``): a message waits up to ``linger`` seconds for others.
    ``join``: the addresses as one string joined by it (``"98..,98.."``) instead of a list."""

    max_addresses: int
    linger: float = 0.05
    join: str | None = None


@dataclass(frozen=True, slots=True)
class GatewayRequest:
    """A rendered request, ready for an HTTP client. ``content`` is None for a query request."""

    method: str
    url: str
    headers: dict[str, str]
    content: bytes | None


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    channel: str
    url: Template
    method: str
    format: Literal["json", "form", "query"]
    headers: tuple[tuple[str, Template], ...]
    body: Template
    sender: str | None
    address: AddressRule
    timeout: float
    max_in_flight: int
    bulk: BulkMode | None
    rules: ResponseRules
    #: Secret name -> its value, read from the environment (``secrets: {token: SPARROW_TOKEN}``).
    secrets: Mapping[str, str] = field(repr=False, compare=False, default_factory=dict)

    @classmethod
    def parse(
        cls, channel: str, options: Mapping[str, Any], environ: Mapping[str, str]
    ) -> GatewayConfig:
        """Validate ``options`` for ``channel``.

        Raises:
            ConfigError: naming every problem, each with its option (``response.success[1]``).
        """
        if channel not in CHANNELS:
            raise ConfigError(f"http cannot send {channel}; it sends {', '.join(sorted(CHANNELS))}")
        problems: list[str] = []
        opts = {k: v for k, v in options.items() if v is not None}
        problems.extend(f"{k}: unknown option" for k in sorted(set(opts) - _KNOWN))
        secrets = _secrets(opts.get("secrets", {}), environ, problems)
        method = str(opts.get("method", "POST")).upper()
        if method not in _METHODS:
            problems.append(f"method: must be one of {', '.join(_METHODS)}")
        default_format = "query" if method == "GET" else "json"
        fmt = opts.get("format", default_format)
        if fmt not in _FORMATS:
            problems.append(f"format: must be one of {', '.join(_FORMATS)}")
            fmt = default_format
        elif method == "GET" and fmt != "query":
            problems.append("format: a GET request carries its fields in the query: format: query")
        url = _url(opts.get("url"), secrets, problems)
        headers = _headers(opts.get("headers", {}), secrets, problems)
        body = _body(opts.get("body", {}), fmt, secrets, problems)
        if not any(t.uses("to") for t in (url, body, *(h for _, h in headers))):
            problems.append("body: no {{to}}: the gateway would not know whom to send to")
        sender = opts.get("from")
        if sender is not None and not (isinstance(sender, str) and sender):
            problems.append("from: must be a string (the sender ID or number)")
        rules = _response(opts.get("response", {}), problems)
        bulk, rules = _bulk(opts.get("bulk"), rules, problems)
        address = _address(opts.get("address", {}), problems)
        timeout = _positive(opts, "timeout", 15.0, problems)
        max_in_flight = _count(opts, "max_in_flight", 50, 1, problems)
        if problems:
            raise ConfigError(
                f"invalid http options for {channel}:\n" + "\n".join(f"  {p}" for p in problems)
            )
        return cls(
            channel=channel,
            url=url,
            method=method,
            format=cast(Literal["json", "form", "query"], fmt),
            headers=headers,
            body=body,
            sender=cast(str | None, sender),
            address=address,
            timeout=timeout,
            max_in_flight=max_in_flight,
            bulk=bulk,
            rules=rules,
            secrets=secrets,
        )

    @property
    def names(self) -> frozenset[str]:
        """Every placeholder the URL, headers and body use."""
        out = self.url.names | self.body.names
        for _, template in self.headers:
            out |= template.names
        return out

    def group_key(self, values: Mapping[str, Any]) -> str:
        """Messages with the same key render the same request but for ``to``: a bulk request
        may carry them together. A template using a per-message field (``{{reference}}``)
        therefore sends one address per request."""
        used = sorted(n for n in self.names if n != "to" and not n.startswith("secrets."))
        return json.dumps([lookup(values, n) for n in used], default=str, sort_keys=True)

    def request(self, values: Mapping[str, Any]) -> GatewayRequest:
        """The request for ``values`` (one message, or a bulk request's ``to`` list)."""
        scope = {**values, "secrets": self.secrets}
        if (
            self.bulk is not None
            and self.bulk.join is not None
            and isinstance(scope.get("to"), list)
        ):
            scope["to"] = self.bulk.join.join(scope["to"])
        url = self.url.render_text(scope, lambda text: quote(text, safe=""))
        headers = {}
        for name, template in self.headers:
            value = template.render_text(scope)
            if value:
                headers[name] = value
        body = self.body.render(scope)
        typed = any(name.lower() == "content-type" for name in headers)
        if self.format == "json":
            if not typed:
                headers["Content-Type"] = "application/json"
            content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
            return GatewayRequest(self.method, url, headers, content)
        pairs = _pairs(body)
        if self.format == "form":
            if not typed:
                headers["Content-Type"] = "application/x-www-form-urlencoded"
            return GatewayRequest(self.method, url, headers, urlencode(pairs).encode())
        if pairs:
            url += ("&" if urlsplit(url).query else "?") + urlencode(pairs)
        return GatewayRequest(self.method, url, headers, None)


def _pairs(body: Any) -> list[tuple[str, str]]:
    """A flat mapping as form fields: a list repeats its key (``to=a&to=b``)."""
    pairs: list[tuple[str, str]] = []
    for key, value in body.items():
        for item in value if isinstance(value, list) else [value]:
            pairs.append((key, text_of(item)))
    return pairs


def _secrets(raw: Any, environ: Mapping[str, str], problems: list[str]) -> dict[str, str]:
    if not isinstance(raw, Mapping):
        problems.append("secrets: must map a name to the environment variable holding it")
        return {}
    out: dict[str, str] = {}
    for name, variable in raw.items():
        if not (isinstance(name, str) and _NAME.fullmatch(name)):
            problems.append(f"secrets.{name}: a name is letters, digits, _ and -")
        elif not (isinstance(variable, str) and variable):
            problems.append(f"secrets.{name}: must name an environment variable")
        elif not environ.get(variable):
            problems.append(f"secrets.{name}: names {variable}, which is not set")
        elif "\r" in environ[variable] or "\n" in environ[variable]:
            # Never a valid header value, nor a token; said without the value.
            problems.append(f"secrets.{name}: the value of {variable} holds a line break")
        else:
            out[name] = environ[variable]
    return out


def _url(raw: Any, secrets: Mapping[str, str], problems: list[str]) -> Template:
    if not (isinstance(raw, str) and raw):
        problems.append("url: required, the gateway's http(s) URL")
        return Template("", frozenset())
    template = Template.compile(raw, "url", secrets, problems)
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        problems.append("url: must be an http(s) URL with a host")
    elif "{{" in parts.netloc:
        problems.append("url: the host cannot hold a placeholder")
    elif "@" in parts.netloc:
        problems.append("url: credentials go in headers, from secrets, not in the URL")
    return template


def _headers(
    raw: Any, secrets: Mapping[str, str], problems: list[str]
) -> tuple[tuple[str, Template], ...]:
    if not isinstance(raw, Mapping):
        problems.append("headers: must map a header name to its value")
        return ()
    out = []
    for name, value in raw.items():
        if not (isinstance(name, str) and _HEADER.fullmatch(name)):
            problems.append(f"headers.{name}: not a valid header name")
        elif not isinstance(value, str | int | float) or isinstance(value, bool):
            problems.append(f"headers.{name}: must be a string")
        else:
            out.append((name, Template.compile(str(value), f"headers.{name}", secrets, problems)))
    return tuple(out)


def _body(raw: Any, fmt: str, secrets: Mapping[str, str], problems: list[str]) -> Template:
    if fmt != "json":
        if not isinstance(raw, Mapping):
            problems.append(f"body: with format {fmt}, a mapping of field to value")
            return Template({}, frozenset())
        for key, value in raw.items():
            items = value if isinstance(value, list) else [value]
            if any(isinstance(item, Mapping | list) for item in items):
                problems.append(
                    f"body.{key}: with format {fmt}, a field is a value or a list of values"
                )
    return Template.compile(raw, "body", secrets, problems)


def _address(raw: Any, problems: list[str]) -> AddressRule:
    if not isinstance(raw, Mapping) or not set(raw) <= {"prefix", "strip", "digits_only"}:
        problems.append("address: a mapping of prefix, strip and digits_only")
        return AddressRule()
    prefix, strip = raw.get("prefix", ""), raw.get("strip", "")
    digits_only = raw.get("digits_only", False)
    for key, value in (("prefix", prefix), ("strip", strip)):
        if not isinstance(value, str):
            problems.append(f"address.{key}: must be a string")
    if not isinstance(digits_only, bool):
        problems.append("address.digits_only: must be true or false")
    return AddressRule(str(prefix), str(strip), digits_only is True)


def _response(raw: Any, problems: list[str]) -> ResponseRules:
    known = {
        "success",
        "retryable",
        "success_when",
        "retryable_when",
        "message_id",
        "error",
        "error_code",
    }
    if not isinstance(raw, Mapping):
        problems.append("response: must be a mapping")
        return ResponseRules(_DEFAULT_SUCCESS, _DEFAULT_RETRYABLE)
    problems.extend(f"response.{k}: unknown option" for k in sorted(set(raw) - known))
    return ResponseRules(
        success=_statuses(raw.get("success"), "response.success", _DEFAULT_SUCCESS, problems),
        retryable=_statuses(
            raw.get("retryable"), "response.retryable", _DEFAULT_RETRYABLE, problems
        ),
        success_when=_condition(raw.get("success_when"), "response.success_when", problems),
        retryable_when=_condition(raw.get("retryable_when"), "response.retryable_when", problems),
        message_id=_path(raw.get("message_id"), "response.message_id", problems),
        error=_path(raw.get("error"), "response.error", problems),
        error_code=_path(raw.get("error_code"), "response.error_code", problems),
    )


def _bulk(
    raw: Any, rules: ResponseRules, problems: list[str]
) -> tuple[BulkMode | None, ResponseRules]:
    if raw is None:
        return None, rules
    known = {"max_addresses", "linger", "join", "results", "match", "message_id", "success_when"}
    if not isinstance(raw, Mapping):
        problems.append("bulk: must be a mapping with max_addresses")
        return None, rules
    problems.extend(f"bulk.{k}: unknown option" for k in sorted(set(raw) - known))
    size = raw.get("max_addresses")
    if not (isinstance(size, int) and not isinstance(size, bool) and 2 <= size <= 10_000):
        problems.append("bulk.max_addresses: required, a whole number from 2 to 10000")
        size = 2
    linger = raw.get("linger", 0.05)
    if isinstance(linger, bool) or not isinstance(linger, int | float) or not 0 <= linger <= 5:
        problems.append("bulk.linger: seconds from 0 to 5")
        linger = 0.05
    join = raw.get("join")
    if join is not None and not (isinstance(join, str) and join):
        problems.append('bulk.join: a separator such as ","')
        join = None
    results = _path(raw.get("results"), "bulk.results", problems)
    for key in ("match", "message_id", "success_when"):
        if key in raw and results is None:
            problems.append(f"bulk.{key}: reads an item of bulk.results, which is not set")
    rules = replace(
        rules,
        results=results,
        match=_path(raw.get("match"), "bulk.match", problems),
        result_id=_path(raw.get("message_id"), "bulk.message_id", problems),
        result_success_when=_condition(raw.get("success_when"), "bulk.success_when", problems),
    )
    return BulkMode(size, float(linger), join), rules


def _statuses(raw: Any, where: str, default: StatusRanges, problems: list[str]) -> StatusRanges:
    if raw is None:
        return default
    items = raw if isinstance(raw, list) else [raw]
    ranges: list[tuple[int, int]] = []
    for i, item in enumerate(items):
        match = (
            _STATUS.fullmatch(str(item))
            if isinstance(item, str | int) and not isinstance(item, bool)
            else None
        )
        if match is None:
            problems.append(f"{where}[{i}]: a status (429), a class (5xx) or a range (500-599)")
        elif match.group(1):
            hundred = int(match.group(1)) * 100
            ranges.append((hundred, hundred + 99))
        else:
            lo, hi = int(match.group(2)), int(match.group(3) or match.group(2))
            if hi < lo:
                problems.append(f"{where}[{i}]: the range ends before it starts")
            ranges.append((lo, hi))
    return StatusRanges(tuple(ranges))


def _condition(raw: Any, where: str, problems: list[str]) -> Condition | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or set(raw) != {"path", "equals"}:
        problems.append(f"{where}: {{path: <field of the JSON answer>, equals: <value or list>}}")
        return None
    path = _path(raw["path"], f"{where}.path", problems)
    values = raw["equals"] if isinstance(raw["equals"], list) else [raw["equals"]]
    if not values or not all(isinstance(v, str | int | float | bool) for v in values):
        problems.append(f"{where}.equals: a value or a list of values")
    return Condition(path or "", tuple(values)) if path else None


def _path(raw: Any, where: str, problems: list[str]) -> str | None:
    if raw is None:
        return None
    if not (isinstance(raw, str) and _PATH.fullmatch(raw)):
        problems.append(
            f"{where}: a path into the JSON answer, such as data.message_id or items.0.id"
        )
        return None
    return raw


def _positive(opts: Mapping[str, Any], key: str, default: float, problems: list[str]) -> float:
    value = opts.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        problems.append(f"{key}: must be a positive number of seconds")
        return default
    return float(value)


def _count(opts: Mapping[str, Any], key: str, default: int, least: int, problems: list[str]) -> int:
    value = opts.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        problems.append(f"{key}: must be a whole number, {least} or more")
        return default
    return value
