"""What a service manager is, and what its hooks receive (README: "Service managers"). Pure.

A service manager is an object with a ``name``, a ``metadata()`` and any subset of five async
hooks. Each hook receives one context (a frozen dataclass) carrying the client's configuration,
the channel and a :class:`ManagerState` handle, the only place a manager may keep memory:

=========================  =====================================================================
hook                       called by, and what its answer does
=========================  =====================================================================
``on_message_send``        dispatch, just before the provider call. May change ``ctx.message``
                           (a :class:`SendMessage`) in place and return values such as
                           ``{"sender": "+1..."}``; see :meth:`ServiceManagers.run_send`.
``on_delivery_report``     the report agent, for every report of a delivery (answer ignored).
``on_opt_out``             when a recipient opts out (answer ignored).
``on_session_start``       the session agent, before fan-out. May answer a
                           :class:`SessionStartResult`: addresses to scrub (each with a reason)
                           or a reason to block the whole session.
``on_session_complete``    when every delivery of a session is final (answer ignored).
=========================  =====================================================================

:class:`ServiceManager` is the protocol every manager meets; :class:`ServiceManagerBase` a
convenient base class. How managers are found is :mod:`switchboard.managers.registry`, how their
hooks are called :mod:`switchboard.managers.runner`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any, ClassVar, Final, Literal, Protocol, cast, get_args, runtime_checkable

from switchboard.clients import ClientConfig
from switchboard.errors import ConfigError
from switchboard.instruction import Channel
from switchboard.managers.state import ManagerState
from switchboard.records import DispatchJob, Report

__all__ = [
    "HOOKS",
    "CarrierInfo",
    "HookName",
    "ManagerFactory",
    "OptOutContext",
    "ReportContext",
    "Scrub",
    "SendContext",
    "SendMessage",
    "ServiceManager",
    "ServiceManagerBase",
    "SessionCompleteContext",
    "SessionStartContext",
    "SessionStartResult",
    "carrier_from_detail",
    "channel_options",
    "hooks_of",
]

HookName = Literal[
    "on_message_send",
    "on_delivery_report",
    "on_opt_out",
    "on_session_start",
    "on_session_complete",
]
HOOKS: Final[tuple[HookName, ...]] = get_args(HookName)


# -- what the hooks receive ------------------------------------------------------------------


def channel_options(client: ClientConfig, channel: str) -> Mapping[str, Any]:
    """The provider options of ``client``'s ``channel`` (``from``, ...); empty if unconfigured."""
    config = client.channels.get(cast(Channel, channel))
    return config.options if config is not None else {}


@dataclass(slots=True)
class SendMessage:
    """The outgoing message as ``on_message_send`` hooks see and change it (mutable).

    ``sender`` and ``messaging_service_sid`` are ``None`` until a manager chooses one; the
    transport then applies its own default (for Twilio: the channel's Messaging Service, else
    its first ``from``). ``send_as_mms`` asks the provider to deliver the text as one MMS.
    """

    channel: str
    body: str | None
    subject: str | None = None
    file_url: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    sender: str | None = None
    messaging_service_sid: str | None = None
    send_as_mms: bool = False

    @classmethod
    def from_job(cls, job: DispatchJob) -> SendMessage:
        # A deep copy: a hook changing extras in place must not change the (frozen) job.
        extras = copy.deepcopy(dict(job.extras))
        return cls(
            channel=job.channel,
            body=job.message,
            subject=job.subject,
            file_url=job.file_url,
            extras=extras,
            send_as_mms=extras.get("send_as_mms") is True,
        )

    def transport_fields(self) -> dict[str, Any]:
        """The fields of ``transports.base.OutboundMessage`` this message sets, for
        ``dataclasses.replace(outbound, **message.transport_fields())``.

        ``send_as_mms`` travels as ``extras.send_as_mms`` (understood by the Twilio transport);
        ``messaging_service_sid`` as ``extras.messaging_service_sid`` (an OutboundMessage has no
        such field).
        """
        extras = dict(self.extras)
        if self.send_as_mms:
            extras["send_as_mms"] = True
        else:
            extras.pop("send_as_mms", None)
        if self.messaging_service_sid is not None:
            extras["messaging_service_sid"] = self.messaging_service_sid
        return {
            "body": self.body,
            "subject": self.subject,
            "file_url": self.file_url,
            "extras": extras,
            "sender": self.sender,
        }

    def _snapshot(self) -> SendMessage:
        return replace(self, extras=copy.deepcopy(self.extras))

    def _restore(self, snapshot: SendMessage) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(snapshot, f.name))


_EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class SendContext:
    """``on_message_send``: one message to one address, just before the provider call."""

    client: ClientConfig
    channel: str
    state: ManagerState
    #: The recipient's address on the channel (E.164 for phone channels). Not to be changed.
    address: str
    message: SendMessage
    session_id: str = ""
    attempt: int = 1
    #: What the managers before this one returned, merged (later wins); read-only.
    values: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)

    @classmethod
    def for_job(cls, job: DispatchJob, client: ClientConfig, state: ManagerState) -> SendContext:
        return cls(
            client=client,
            channel=job.channel,
            state=state,
            address=job.address,
            message=SendMessage.from_job(job),
            session_id=job.session_id,
            attempt=job.attempt,
        )

    @property
    def sender_chosen(self) -> bool:
        """Whether a sender is chosen: a number, or a Messaging Service (which picks one)."""
        return (
            self.message.sender is not None
            or self.message.messaging_service_sid is not None
            or self.values.get("sender") is not None
            or self.values.get("messaging_service_sid") is not None
        )

    @property
    def channel_options(self) -> Mapping[str, Any]:
        return channel_options(self.client, self.channel)


@dataclass(frozen=True, slots=True)
class CarrierInfo:
    """A recipient's carrier as a provider reported it: a name, and/or its MCC and MNC."""

    name: str | None = None
    mcc: str | None = None
    mnc: str | None = None

    def as_dict(self) -> dict[str, str]:
        return {k: v for k in ("name", "mcc", "mnc") if (v := getattr(self, k)) is not None}


def _text(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value).strip()
    return text or None


def carrier_from_detail(detail: Mapping[str, Any]) -> CarrierInfo | None:
    """The carrier a report's ``detail`` carries, or ``None``. Never raises.

    Recognised: ``carrier``, either a name or an object with ``name`` / ``carrier_name``,
    ``mobile_country_code`` / ``mcc`` and ``mobile_network_code`` / ``mnc`` (as Twilio Lookup
    answers); else, at the top level, ``carrier_name`` or ``carrierName`` (Bandwidth),
    ``mcc`` / ``mobile_country_code`` and ``mnc`` / ``mobile_network_code``. Codes are kept as
    text (``"016"``: a leading zero matters in an MNC).
    """
    nested = detail.get("carrier")
    inner: Mapping[str, Any] = nested if isinstance(nested, Mapping) else {}

    def first(*places: tuple[Mapping[str, Any], tuple[str, ...]]) -> str | None:
        for source, keys in places:
            for key in keys:
                if (value := _text(source.get(key))) is not None:
                    return value
        return None

    info = CarrierInfo(
        name=_text(nested)  # a bare name; None for an object
        or first((inner, ("name", "carrier_name")), (detail, ("carrier_name", "carrierName"))),
        mcc=first(
            (inner, ("mobile_country_code", "mcc")), (detail, ("mcc", "mobile_country_code"))
        ),
        mnc=first(
            (inner, ("mobile_network_code", "mnc")), (detail, ("mnc", "mobile_network_code"))
        ),
    )
    return info if info.as_dict() else None


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportContext:
    """``on_delivery_report``: what a provider (or Switchboard) reported of one delivery."""

    client: ClientConfig
    channel: str
    state: ManagerState
    address: str
    status: str
    session_id: str = ""
    provider_message_id: str | None = None
    error_code: str | None = None
    #: The number (or other sender) the message went out from, when known.
    sender: str | None = None
    detail: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    occurred_at: float = 0.0

    @classmethod
    def from_report(
        cls,
        report: Report,
        client: ClientConfig,
        state: ManagerState,
        *,
        sender: str | None = None,
    ) -> ReportContext:
        """The context for ``report``; ``sender`` defaults to the detail's ``sender`` or
        ``from`` / ``From`` (Twilio's callback field), since a :class:`Report` has no sender."""
        if sender is None:
            for key in ("sender", "from", "From"):
                if isinstance(value := report.detail.get(key), str) and value:
                    sender = value
                    break
        return cls(
            client=client,
            channel=report.channel,
            state=state,
            address=report.address,
            status=report.status,
            session_id=report.session_id,
            provider_message_id=report.provider_message_id,
            error_code=report.error_code,
            sender=sender,
            detail=MappingProxyType(dict(report.detail)),
            occurred_at=report.occurred_at,
        )

    @property
    def carrier(self) -> CarrierInfo | None:
        """The recipient's carrier, when the report's detail carries it."""
        return carrier_from_detail(self.detail)


@dataclass(frozen=True, slots=True, kw_only=True)
class OptOutContext:
    """``on_opt_out``: ``address`` asked not to be contacted on ``channel`` any more."""

    client: ClientConfig
    channel: str
    state: ManagerState
    address: str
    #: The sender the recipient answered (e.g. the number they texted STOP to), when known.
    sender: str | None = None
    session_id: str | None = None
    reason: str | None = None
    occurred_at: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionStartContext:
    """``on_session_start``: a session is about to send to ``addresses`` on ``channel``.

    The caller may pass the whole audience at once or one chunk at a time: the built-in
    managers decide per address, so either gives the same scrubs.
    """

    client: ClientConfig
    channel: str
    state: ManagerState
    session_id: str
    #: The addresses still in (the runner removes those an earlier manager scrubbed).
    addresses: Sequence[str]


@dataclass(frozen=True, slots=True)
class Scrub:
    """Remove ``address`` from the session, because of ``reason`` (reported ``suppressed``)."""

    address: str
    reason: str


@dataclass(frozen=True, slots=True)
class SessionStartResult:
    """What ``on_session_start`` answers: scrubs, a block (the session must not send, for
    ``block``'s reason), and ``detail`` (JSON facts for the session's status event)."""

    scrub: tuple[Scrub, ...] = ()
    block: str | None = None
    detail: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionCompleteContext:
    """``on_session_complete``: every delivery of the session is final.

    A session spans its ``channels`` (it has no single channel), and ``counts`` are its final
    deliveries by status, as in the ``completed`` status event.
    """

    client: ClientConfig
    state: ManagerState
    session_id: str
    channels: tuple[str, ...]
    counts: Mapping[str, int]
    deliveries: int


# -- managers --------------------------------------------------------------------------------


@runtime_checkable
class ServiceManager(Protocol):
    """A service manager: a ``name``, ``metadata()``, and any subset of the hooks in
    :data:`HOOKS` as async methods (they are optional, so not part of this protocol)."""

    @property
    def name(self) -> str: ...

    def metadata(self) -> dict[str, Any]: ...


#: Builds a manager from its options. A manager class whose ``__init__`` takes the options
#: mapping is one.
ManagerFactory = Callable[[Mapping[str, Any]], ServiceManager]


def hooks_of(manager: object) -> tuple[HookName, ...]:
    """The hooks ``manager`` implements, in :data:`HOOKS` order."""
    return tuple(h for h in HOOKS if callable(getattr(manager, h, None)))


class ServiceManagerBase:
    """A convenient base: keeps ``options`` and answers ``metadata()`` from class attributes.

    ``OPTIONS`` names the accepted option keys (``None``: not checked); an unknown key is a
    :class:`ConfigError`, so a typo in the configuration does not silently do nothing.
    """

    name: str = ""
    display_name: str = ""
    description: str = ""
    #: Whether the manager can make Switchboard spend money (paid lookups, costlier messages).
    can_spend_money: bool = False
    OPTIONS: ClassVar[frozenset[str] | None] = None

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        self.options: dict[str, Any] = dict(options or {})
        if self.OPTIONS is not None and (unknown := set(self.options) - self.OPTIONS):
            known = ", ".join(sorted(self.OPTIONS)) or "none"
            raise ConfigError(
                f"service manager {self.name}: unknown option(s) {', '.join(sorted(unknown))}; "
                f"known: {known}"
            )

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "display_name": self.display_name or self.name,
            "description": self.description,
            "can_spend_money": self.can_spend_money,
            "hooks": list(hooks_of(self)),
        }
