"""The six built-in service managers (README: "Service managers"). Pure.

Each is a :class:`~switchboard.managers.hooks.ServiceManagerBase` built from its options (given
per name to :class:`~switchboard.managers.runner.ServiceManagers`; an unknown option is a
``ConfigError``). State keys start with the client id, so clients never share memory.

``numpicker-basic`` (on_message_send; option ``channels``, default sms, whatsapp, voice)
    When no sender is chosen yet (no number and no Messaging Service, neither on the message nor
    returned by an earlier manager) and the channel's ``from`` is a pool of numbers, picks one
    for the recipient by rendezvous hashing (:func:`pick_sender`): the same recipient always
    gets the same number, recipients spread evenly over the pool, the pool's order does not
    matter, and adding or removing a number moves only the recipients that number gains or
    loses. Keeps no state.

``sticky-sender`` (on_message_send, on_delivery_report, on_opt_out; option ``channels``)
    Remembers, per client, channel and recipient (namespace ``sticky-sender``), the number a
    message was **delivered** from: only on a ``delivered`` report without an error code that
    names its sender, and never replacing a remembered number, except one that has left the
    channel's ``from`` pool (a stale number is treated as absent, for sending and for
    remembering). On send it returns the remembered number when no sender is chosen yet, so
    listed before ``numpicker-basic`` it wins, and listed after it never applies. An opt-out
    forgets the recipient (as Spoke's does): a later delivery remembers afresh. Across workers
    "never replacing" holds up to the state's replication lag (about a second).

``mms-when-cheaper`` (on_message_send; option ``ratio``, default
:data:`switchboard.segments.MMS_COST_RATIO`)
    For an ``sms`` without media, sets ``message.send_as_mms`` when the text's exact segment
    count is strictly greater than ``ratio`` (:func:`switchboard.segments.should_send_as_mms`).
    The text counted is what the Twilio transport sends: a ``file_url`` that is not media is
    appended to the body as a link (:func:`sms_text`). Keeps no state.

``scrub-bad-mobilenums`` (on_session_start; options ``lookup`` (required), ``channels``
(default sms), ``concurrency`` (default 8))
    Before a session sends, every distinct phone number without a cached line type is looked
    up through the client's :class:`~switchboard.managers.lookup.LineTypeLookup` (``lookup`` is
    a callable ``(ClientConfig) -> LineTypeLookup | None``; ``None``: the client has no lookup,
    and only cached answers apply), at most ``concurrency`` at a time. Every answer (``unknown``
    too) is cached per client and number forever (namespace ``line-type``), and a cached number
    is never looked up again. Landlines and invalid numbers are scrubbed, with the reason.
    A lookup that fails leaves its number in (fail-open: a missed scrub costs one failed SMS,
    a wrong one loses a recipient) and uncached, so the next session tries again; a ``config``
    failure (bad credentials) stops the session's remaining lookups. The session's ``detail``
    counts the lookups and failures. A cache write that fails still scrubs for this session.

``carrier-lookup`` (on_delivery_report; option ``channels``)
    Records the recipient's carrier (namespace ``carrier``, per client and number) when a
    report's detail carries it (:func:`~switchboard.managers.hooks.carrier_from_detail`):
    newly reported fields replace older ones, and nothing is written when nothing changed, so
    a steady carrier costs no write per message.

``per-client-messageservices`` (on_message_send; sms and whatsapp)
    When the channel has a ``messaging_service_sid``, sends through it: sets
    ``message.messaging_service_sid`` and clears ``message.sender``, so Twilio picks the number
    from the service's pool. Listed after a number picker it overrides the pick; listed before,
    the pickers see a sender chosen and do nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar, Final, cast
from urllib.parse import urlsplit

from switchboard.clients import ClientConfig
from switchboard.errors import ConfigError
from switchboard.instruction import CHANNELS
from switchboard.managers.hooks import (
    ManagerFactory,
    OptOutContext,
    ReportContext,
    Scrub,
    SendContext,
    SendMessage,
    ServiceManagerBase,
    SessionStartContext,
    SessionStartResult,
    channel_options,
)
from switchboard.managers.lookup import LINE_TYPES, LineType, LineTypeLookup, LookupFailed
from switchboard.managers.state import ManagerState
from switchboard.segments import MMS_COST_RATIO, should_send_as_mms

__all__ = [
    "BUILTINS",
    "CARRIER_NAMESPACE",
    "LINE_TYPE_NAMESPACE",
    "PHONE_CHANNELS",
    "SCRUB_REASONS",
    "STICKY_NAMESPACE",
    "CarrierLookup",
    "MmsWhenCheaper",
    "NumpickerBasic",
    "PerClientMessageServices",
    "ScrubBadMobileNums",
    "StickySender",
    "carrier_key",
    "has_media",
    "line_type_key",
    "pick_sender",
    "sender_pool",
    "sms_text",
    "sticky_key",
]

log = logging.getLogger(__name__)

PHONE_CHANNELS: Final = ("sms", "whatsapp", "voice")
STICKY_NAMESPACE: Final = "sticky-sender"
LINE_TYPE_NAMESPACE: Final = "line-type"
CARRIER_NAMESPACE: Final = "carrier"

#: Why scrub-bad-mobilenums removes a number, by line type (the caller reports it suppressed).
SCRUB_REASONS: Final[Mapping[LineType, str]] = {
    "landline": "landline: cannot receive SMS (line type lookup)",
    "invalid": "invalid: no such phone number (line type lookup)",
}

_WHATSAPP: Final = "whatsapp:"
# The Twilio transport's rule for a file that is sent as media (transports/twilio.py _is_media):
# kept in step by hand, since this pure module cannot import the transport.
_IMAGE_EXTENSIONS: Final = (".jpg", ".jpeg", ".png", ".gif")


# -- helpers ---------------------------------------------------------------------------------


def sticky_key(client_id: str, channel: str, address: str) -> str:
    return f"{client_id}/{channel}/{address}"


def line_type_key(client_id: str, address: str) -> str:
    return f"{client_id}/{address}"


def carrier_key(client_id: str, address: str) -> str:
    return f"{client_id}/{address}"


def sender_pool(client: ClientConfig, channel: str) -> tuple[str, ...]:
    """The channel's ``from`` numbers, in order without repeats (one string: a pool of one)."""
    raw = channel_options(client, channel).get("from")
    values: Iterable[Any] = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else []
    return tuple(dict.fromkeys(v for v in values if isinstance(v, str) and v))


def _bare(number: str) -> str:
    return number.removeprefix(_WHATSAPP)


def _in_pool(number: str, pool: Sequence[str]) -> bool:
    bare = _bare(number)
    return any(_bare(p) == bare for p in pool)


def pick_sender(pool: Sequence[str], address: str) -> str:
    """The pool's number for ``address``: the one with the highest hash of (number, address).

    Rendezvous hashing: deterministic across processes (BLAKE2b, not Python's salted
    ``hash``), even over the pool, independent of the pool's order, and minimal movement when
    the pool changes. ``ValueError`` for an empty pool.
    """
    if not pool:
        raise ValueError("no numbers to pick from")

    def weight(number: str) -> tuple[bytes, str]:
        digest = hashlib.blake2b(f"{number}\x00{address}".encode(), digest_size=8).digest()
        return digest, number

    return max(pool, key=weight)


def has_media(message: SendMessage) -> bool:
    """Whether the Twilio transport sends ``message.file_url`` as media (an MMS): with
    ``extras.media`` when it is a bool, else by an image extension."""
    if not message.file_url:
        return False
    flag = message.extras.get("media")
    if isinstance(flag, bool):
        return flag
    return urlsplit(message.file_url).path.lower().endswith(_IMAGE_EXTENSIONS)


def sms_text(message: SendMessage) -> str:
    """The text an SMS carries: the body, and a non-media ``file_url`` appended as a link."""
    body = message.body or ""
    if message.file_url and not has_media(message):
        return f"{body}\n{message.file_url}" if body else message.file_url
    return body


def _channels(name: str, options: Mapping[str, Any], default: Sequence[str]) -> frozenset[str]:
    raw = options.get("channels", list(default))
    if not isinstance(raw, list | tuple) or not all(c in CHANNELS for c in raw):
        raise ConfigError(
            f"service manager {name}: channels must be a list of {', '.join(CHANNELS)}"
        )
    return frozenset(raw)


# -- numpicker-basic -------------------------------------------------------------------------


class NumpickerBasic(ServiceManagerBase):
    name = "numpicker-basic"
    display_name = "Basic number picker"
    description = (
        "Picks a sender from the channel's pool of numbers when no other manager chose one: "
        "the same recipient always gets the same number, spread evenly over the pool."
    )
    OPTIONS: ClassVar[frozenset[str] | None] = frozenset({"channels"})

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        self.channels = _channels(self.name, self.options, PHONE_CHANNELS)

    async def on_message_send(self, ctx: SendContext) -> Mapping[str, Any] | None:
        if ctx.channel not in self.channels or ctx.sender_chosen:
            return None  # a fallback: a choice made before is never changed
        pool = sender_pool(ctx.client, ctx.channel)
        if not pool:
            return None
        return {"sender": pick_sender(pool, ctx.address)}


# -- sticky-sender ---------------------------------------------------------------------------


class StickySender(ServiceManagerBase):
    name = "sticky-sender"
    display_name = "Sticky sender"
    description = (
        "Remembers the number a recipient was last successfully reached from, and sends to "
        "them from it again."
    )
    OPTIONS: ClassVar[frozenset[str] | None] = frozenset({"channels"})

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        self.channels = _channels(self.name, self.options, PHONE_CHANNELS)

    def _remembered(
        self, state: ManagerState, client: ClientConfig, channel: str, address: str
    ) -> str | None:
        """The remembered number, unless it has left the channel's pool (then: none)."""
        stored = state.get(STICKY_NAMESPACE, sticky_key(client.client_id, channel, address))
        sender = stored.get("sender") if isinstance(stored, Mapping) else None
        if not isinstance(sender, str) or not sender:
            return None
        pool = sender_pool(client, channel)
        # With no pool (a Messaging Service only), any number the service used is valid.
        return sender if not pool or _in_pool(sender, pool) else None

    async def on_message_send(self, ctx: SendContext) -> Mapping[str, Any] | None:
        if ctx.channel not in self.channels or ctx.sender_chosen:
            return None
        sender = self._remembered(ctx.state, ctx.client, ctx.channel, ctx.address)
        return {"sender": sender} if sender is not None else None

    async def on_delivery_report(self, ctx: ReportContext) -> None:
        if (
            ctx.channel not in self.channels
            or ctx.status != "delivered"
            or ctx.error_code
            or not ctx.sender
        ):
            return
        if self._remembered(ctx.state, ctx.client, ctx.channel, ctx.address) is not None:
            return  # never replace a remembered number
        pool = sender_pool(ctx.client, ctx.channel)
        if pool and not _in_pool(ctx.sender, pool):
            return  # not one of the client's numbers (any more): nothing to stick to
        await ctx.state.put(
            STICKY_NAMESPACE,
            sticky_key(ctx.client.client_id, ctx.channel, ctx.address),
            {"sender": ctx.sender, "delivered_at": ctx.occurred_at},
        )

    async def on_opt_out(self, ctx: OptOutContext) -> None:
        if ctx.channel not in self.channels:
            return
        key = sticky_key(ctx.client.client_id, ctx.channel, ctx.address)
        if ctx.state.get(STICKY_NAMESPACE, key) is not None:  # no write when nothing is kept
            await ctx.state.put(STICKY_NAMESPACE, key, None)


# -- mms-when-cheaper ------------------------------------------------------------------------


class MmsWhenCheaper(ServiceManagerBase):
    name = "mms-when-cheaper"
    display_name = "MMS when cheaper"
    description = (
        "Sends a text as one MMS when its SMS segments cost more than an MMS (more segments "
        "than the cost ratio), unless it already has media."
    )
    can_spend_money = True  # an MMS is dearer than a short SMS; a wrong ratio costs money
    OPTIONS: ClassVar[frozenset[str] | None] = frozenset({"ratio"})

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        ratio = self.options.get("ratio", MMS_COST_RATIO)
        if (
            isinstance(ratio, bool)
            or not isinstance(ratio, int | float)
            or not math.isfinite(ratio)
            or ratio <= 0
        ):
            raise ConfigError(
                f"service manager {self.name}: ratio must be a finite number above 0 (the "
                f"price of an MMS in SMS segments), not {ratio!r}"
            )
        self.ratio = float(ratio)

    async def on_message_send(self, ctx: SendContext) -> Mapping[str, Any] | None:
        message = ctx.message
        if ctx.channel != "sms" or message.send_as_mms:
            return None
        if should_send_as_mms(sms_text(message), self.ratio, has_media(message)):
            message.send_as_mms = True
            return {"send_as_mms": True}
        return None


# -- scrub-bad-mobilenums --------------------------------------------------------------------


LookupProvider = Callable[[ClientConfig], LineTypeLookup | None]


def _cached_line_type(value: Any) -> LineType | None:
    kind = value.get("line_type") if isinstance(value, Mapping) else value
    return kind if isinstance(kind, str) and kind in LINE_TYPES else None


class ScrubBadMobileNums(ServiceManagerBase):
    name = "scrub-bad-mobilenums"
    display_name = "Scrub numbers that cannot receive SMS"
    description = (
        "Before a session starts, looks up the line type of numbers not seen before (cached "
        "per client forever) and removes landlines and invalid numbers."
    )
    can_spend_money = True  # every lookup is billed
    OPTIONS: ClassVar[frozenset[str] | None] = frozenset({"lookup", "channels", "concurrency"})

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        lookup = self.options.get("lookup")
        if not callable(lookup):
            raise ConfigError(
                f"service manager {self.name}: option lookup is required: a callable taking "
                "the client's configuration and answering its LineTypeLookup (or None)"
            )
        self.lookup_for = cast(LookupProvider, lookup)
        self.channels = _channels(self.name, self.options, ("sms",))
        concurrency = self.options.get("concurrency", 8)
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ConfigError(f"service manager {self.name}: concurrency must be an integer >= 1")
        self.concurrency = concurrency

    async def on_session_start(self, ctx: SessionStartContext) -> SessionStartResult | None:
        if ctx.channel not in self.channels:
            return None
        client_id = ctx.client.client_id
        known: dict[str, LineType] = {}
        unknown: list[str] = []
        for address in dict.fromkeys(ctx.addresses):
            if not address.startswith("+"):
                continue  # not a phone number: nothing to look up
            cached = _cached_line_type(
                ctx.state.get(LINE_TYPE_NAMESPACE, line_type_key(client_id, address))
            )
            if cached is None:
                unknown.append(address)
            else:
                known[address] = cached
        detail: dict[str, Any] = {"cached": len(known), "looked_up": 0}
        if unknown:
            lookup = self.lookup_for(ctx.client)
            if lookup is None:
                detail["not_looked_up"] = len(unknown)
            else:
                found = await self._look_up(lookup, unknown, ctx.state, client_id, detail)
                known.update(found)
        scrub = tuple(
            Scrub(address, reason)
            for address in dict.fromkeys(ctx.addresses)
            if address in known and (reason := SCRUB_REASONS.get(known[address])) is not None
        )
        return SessionStartResult(scrub=scrub, detail=detail)

    async def _look_up(
        self,
        lookup: LineTypeLookup,
        numbers: list[str],
        state: ManagerState,
        client_id: str,
        detail: dict[str, Any],
    ) -> dict[str, LineType]:
        found: dict[str, LineType] = {}
        failures: list[LookupFailed] = []
        cache_failures = 0
        stop = False
        pending: Iterator[str] = iter(numbers)  # shared by the workers: each takes the next

        async def worker() -> None:
            nonlocal stop, cache_failures
            for number in pending:
                if stop:
                    return
                try:
                    kind = await lookup.line_type(number)
                    if kind not in LINE_TYPES:
                        raise TypeError(f"the lookup answered {kind!r}, not a line type")
                except LookupFailed as exc:
                    failures.append(exc)
                    # Bad credentials fail every number alike: stop paying for the attempts.
                    stop = stop or exc.kind == "config"
                    continue
                except Exception as exc:
                    log.warning("line type lookup raised", exc_info=exc)
                    failures.append(LookupFailed(f"{type(exc).__name__}: {exc}", kind="retryable"))
                    continue
                found[number] = kind
                try:
                    await state.put(
                        LINE_TYPE_NAMESPACE,
                        line_type_key(client_id, number),
                        {"line_type": kind, "looked_up_at": time.time()},
                    )
                except Exception as exc:
                    # The answer still counts for this session; only the next one pays again.
                    log.warning("line type not cached", exc_info=exc)
                    cache_failures += 1

        async with asyncio.TaskGroup() as group:
            for _ in range(min(self.concurrency, len(numbers))):
                group.create_task(worker())
        detail["looked_up"] = len(found)
        if failures:
            first = failures[0]
            detail["lookup_failures"] = len(failures)
            detail["first_failure"] = f"{first.kind} {first.code or '-'}: {first.message}"[:300]
        if stop:
            detail["not_looked_up"] = len(numbers) - len(found) - len(failures)
        if cache_failures:
            detail["cache_write_failures"] = cache_failures
        return found


# -- carrier-lookup --------------------------------------------------------------------------


class CarrierLookup(ServiceManagerBase):
    name = "carrier-lookup"
    display_name = "Carrier lookup"
    description = "Records a recipient's carrier when a delivery report carries it."
    OPTIONS: ClassVar[frozenset[str] | None] = frozenset({"channels"})

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        self.channels = _channels(self.name, self.options, PHONE_CHANNELS)

    async def on_delivery_report(self, ctx: ReportContext) -> None:
        if ctx.channel not in self.channels:
            return
        carrier = ctx.carrier
        if carrier is None:
            return
        key = carrier_key(ctx.client.client_id, ctx.address)
        old = ctx.state.get(CARRIER_NAMESPACE, key)
        old_fields = (
            {k: v for k in ("name", "mcc", "mnc") if isinstance(v := old.get(k), str)}
            if isinstance(old, Mapping)
            else {}
        )
        merged = old_fields | carrier.as_dict()
        if merged != old_fields:  # a write per change, not per message
            await ctx.state.put(CARRIER_NAMESPACE, key, merged | {"seen_at": ctx.occurred_at})


# -- per-client-messageservices --------------------------------------------------------------


class PerClientMessageServices(ServiceManagerBase):
    name = "per-client-messageservices"
    display_name = "Per-client Messaging Services"
    description = (
        "Sends through the client's Twilio Messaging Service (messaging_service_sid) instead "
        "of a single number: Twilio picks the number from the service's pool."
    )
    OPTIONS: ClassVar[frozenset[str] | None] = frozenset()

    async def on_message_send(self, ctx: SendContext) -> Mapping[str, Any] | None:
        if ctx.channel not in ("sms", "whatsapp"):
            return None  # Messaging Services send messages, not calls
        sid = ctx.channel_options.get("messaging_service_sid")
        if not isinstance(sid, str) or not sid:
            return None
        ctx.message.messaging_service_sid = sid
        ctx.message.sender = None
        return {"messaging_service_sid": sid, "sender": None}


#: The built-in managers by name; :class:`~switchboard.managers.registry.Registry` starts from it.
BUILTINS: Final[Mapping[str, ManagerFactory]] = {
    cls.name: cls
    for cls in (
        NumpickerBasic,
        StickySender,
        MmsWhenCheaper,
        ScrubBadMobileNums,
        CarrierLookup,
        PerClientMessageServices,
    )
}
