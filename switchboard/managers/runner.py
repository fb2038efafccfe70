"""Service managers: extensions that hook into sending (README: "Service managers"). Pure.

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

Rules (:class:`ServiceManagers`):

* **Which managers.** ``SERVICE_MANAGERS`` (a comma list without spaces, in order) is the global
  list; a client's ``service_managers`` list, when not ``None``, *replaces* it (an empty list
  means none). Names resolve to the built-ins (:mod:`switchboard.managers.builtin`) and to the
  Python entry points of group ``switchboard.service_managers`` (:class:`Registry`); an
  unknown name is a :class:`~switchboard.errors.ConfigError` naming the known ones. One
  instance per name serves every client and every concurrent call, so a manager keeps no
  per-recipient memory in itself, only in :class:`ManagerState`.
* **Order and merge.** Managers run one after the other, in the listed order. For
  ``on_message_send`` each one sees, in ``ctx.values``, what the earlier ones returned, merged
  (for the same key the later one wins), and the message as they left it. The recognised keys
  ``sender``, ``messaging_service_sid`` and ``send_as_mms`` are also applied to the message as
  soon as a manager returns them, so the message and the values never disagree.
* **Failures are contained.** A hook that raises, returns something of the wrong type, or
  outlasts the runner's timeout is recorded as a :class:`ManagerError` (manager, hook, message)
  in the outcome, for the status event's ``detail``; it is logged with its traceback. A failed
  ``on_message_send`` is undone: the message is restored to what it was before that hook, and
  the send goes on with what the other managers produced, so a broken manager never loses a
  message. A failed ``on_session_start`` scrubs and blocks nothing (fail-open). Cancellation
  (a stopping worker) is never swallowed.

State (:class:`ManagerState`): ``get`` is a synchronous local read of replicated state and
``put`` a write that goes through Kafka and shows on every worker shortly after (``None``
deletes). Values are JSON values. Reads can lag writes by about a second, also on the worker
that wrote, so a manager's "only if absent" rule is best-effort across workers: two writers
within that window may both see nothing, and the later write wins. :class:`MemoryState` is the
in-memory implementation (tests, library use); :class:`KeyValueState` maps the protocol onto
any bytes table with ``get``/``put`` (``streams.replica.KeyValueReplica``).
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from importlib import metadata as importlib_metadata
from types import MappingProxyType
from typing import Any, ClassVar, Final, Literal, Protocol, cast, get_args, runtime_checkable

from switchboard.clients import ClientConfig
from switchboard.errors import ConfigError
from switchboard.instruction import Channel
from switchboard.records import DispatchJob, Report

__all__ = [
    "DETAIL_KEY",
    "ENTRY_POINT_GROUP",
    "HOOKS",
    "Block",
    "BytesTable",
    "CarrierInfo",
    "EntryPointLike",
    "HookName",
    "HookOutcome",
    "KeyValueState",
    "ManagerError",
    "ManagerFactory",
    "ManagerState",
    "MemoryState",
    "OptOutContext",
    "Registry",
    "ReportContext",
    "Scrub",
    "Scrubbed",
    "SendContext",
    "SendMessage",
    "SendOutcome",
    "ServiceManager",
    "ServiceManagerBase",
    "ServiceManagers",
    "SessionCompleteContext",
    "SessionStartContext",
    "SessionStartOutcome",
    "SessionStartResult",
    "UnknownServiceManager",
    "carrier_from_detail",
    "channel_options",
    "check_names",
    "hooks_of",
    "parse_manager_list",
]

log = logging.getLogger(__name__)

#: The entry point group third-party distributions register their managers under: the entry
#: point's name is the manager's name, its object a :data:`ManagerFactory` (usually the class).
ENTRY_POINT_GROUP: Final = "switchboard.service_managers"

HookName = Literal[
    "on_message_send", "on_delivery_report", "on_opt_out", "on_session_start",
    "on_session_complete",
]  # fmt: skip
HOOKS: Final[tuple[HookName, ...]] = get_args(HookName)

#: The key of a status event's ``detail`` that lists the hooks that failed.
DETAIL_KEY: Final = "service_manager_errors"

#: Returned keys that are also fields of :class:`SendMessage`, with the types they must have.
_MESSAGE_KEYS: Final[Mapping[str, tuple[type, ...]]] = {
    "sender": (str, type(None)),
    "messaging_service_sid": (str, type(None)),
    "send_as_mms": (bool,),
}
_ERROR_CHARS: Final = 300  # an error message in a status event stays short


# -- state -----------------------------------------------------------------------------------


class ManagerState(Protocol):
    """Replicated key-value memory of service managers, one namespace per purpose.

    ``get`` reads this worker's local copy (fast, synchronous, possibly a second behind);
    ``put`` writes through Kafka and returns once the write is durable, not once it is
    visible here. ``None`` deletes. Values are JSON values (``str``, numbers, ``bool``,
    ``None``, lists, objects with string keys); a tuple comes back as a list.
    """

    def get(self, namespace: str, key: str) -> Any | None: ...

    async def put(self, namespace: str, key: str, value: Any | None) -> None: ...


def _to_json(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"service manager state holds JSON values only: {exc}") from None


class MemoryState:
    """:class:`ManagerState` in memory: writes are visible at once, and lost with the object.

    Values are stored as JSON text, exactly as the replicated implementation stores them, so
    code that works here works there: a value that is not JSON is refused at ``put`` (a
    ``TypeError``), and ``get`` answers a fresh copy that the caller may change freely.
    """

    def __init__(self) -> None:
        self._data: dict[tuple[str, str], str] = {}

    def get(self, namespace: str, key: str) -> Any | None:
        raw = self._data.get((namespace, key))
        return None if raw is None else json.loads(raw)

    async def put(self, namespace: str, key: str, value: Any | None) -> None:
        if value is None:
            self._data.pop((namespace, key), None)
        else:
            self._data[(namespace, key)] = _to_json(value)

    def namespace(self, namespace: str) -> dict[str, Any]:
        """A copy of every entry of ``namespace``, by key."""
        return {k: json.loads(v) for (ns, k), v in self._data.items() if ns == namespace}

    def __len__(self) -> int:
        return len(self._data)


class BytesTable(Protocol):
    """What :class:`KeyValueState` needs of a table: ``streams.replica.KeyValueReplica`` fits."""

    def get(self, key: bytes) -> bytes | None: ...

    async def put(self, key: bytes, value: bytes | None) -> object: ...


class KeyValueState:
    """:class:`ManagerState` over a replicated bytes table.

    The table key is ``<prefix><namespace>/<key>`` in UTF-8 and the value JSON in UTF-8, so the
    topic stays readable with any console consumer. A namespace is non-empty and has no ``/``,
    which keeps keys of different namespaces apart.
    """

    def __init__(self, table: BytesTable, *, prefix: str = "") -> None:
        self._table = table
        self._prefix = prefix

    def _key(self, namespace: str, key: str) -> bytes:
        if not namespace or "/" in namespace:
            raise ValueError(f"a state namespace is non-empty and has no '/': {namespace!r}")
        return f"{self._prefix}{namespace}/{key}".encode()

    def get(self, namespace: str, key: str) -> Any | None:
        raw = self._table.get(self._key(namespace, key))
        return None if raw is None else json.loads(raw)

    async def put(self, namespace: str, key: str, value: Any | None) -> None:
        encoded = None if value is None else _to_json(value).encode()
        await self._table.put(self._key(namespace, key), encoded)


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


class EntryPointLike(Protocol):
    """What :class:`Registry` uses of an ``importlib.metadata.EntryPoint``."""

    @property
    def name(self) -> str: ...

    @property
    def value(self) -> str: ...

    def load(self) -> Any: ...


class UnknownServiceManager(ConfigError):
    """A manager name that is neither built in nor an installed entry point."""


def _problems(names: Sequence[str], known: Iterable[str]) -> list[str]:
    known_set = set(known)
    problems: list[str] = []
    seen: set[str] = set()
    for name in names:
        if not name:
            problems.append("an empty name (two commas in a row, or a comma at an end)")
        elif name in seen:
            problems.append(f"{name!r} is listed twice")
        elif name not in known_set:
            problems.append(f"unknown service manager {name!r}")
        seen.add(name)
    if any(p.startswith("unknown") for p in problems):
        problems.append(f"known service managers: {', '.join(sorted(known_set)) or 'none'}")
    return problems


def check_names(names: Sequence[str], known: Iterable[str], *, where: str) -> tuple[str, ...]:
    """``names`` as a tuple, or :class:`UnknownServiceManager` naming every problem (unknown,
    empty or repeated names) and the known names. ``where`` prefixes the message."""
    problems = _problems(names, known)
    if problems:
        raise UnknownServiceManager(f"{where}: " + "; ".join(problems))
    return tuple(names)


def parse_manager_list(
    value: str | None, known: Iterable[str], *, where: str = "SERVICE_MANAGERS"
) -> tuple[str, ...]:
    """Parse ``SERVICE_MANAGERS``: names separated by commas, without spaces, in order.

    Unset or empty is no managers. Spaces are refused rather than trimmed (the documented form
    has none, and a space is more often a paste error than intent). Raises
    :class:`UnknownServiceManager` (a :class:`ConfigError`) naming every problem.
    """
    if value is None or value == "":
        return ()
    if any(ch.isspace() for ch in value):
        raise UnknownServiceManager(
            f"{where}: a comma list without spaces, e.g. sticky-sender,numpicker-basic; "
            f"got {value!r}"
        )
    return check_names(value.split(","), known, where=where)


class Registry:
    """Which manager names exist, and how to build each: built-ins, then entry points.

    Entry points (group :data:`ENTRY_POINT_GROUP`) are discovered once, at construction, and
    loaded only when a name is used, so a broken plug-in that nobody enables costs nothing.
    A plug-in cannot replace a built-in: an entry point with a built-in's name is ignored (and
    logged). Two distributions offering the same name make that name unusable (a
    :class:`ConfigError` when it is used) rather than one silently winning.
    """

    def __init__(
        self,
        builtins: Mapping[str, ManagerFactory] | None = None,
        entry_points: Iterable[EntryPointLike] | None = None,
    ) -> None:
        if builtins is None:
            # Imported here: the built-ins import this module.
            from switchboard.managers.builtin import BUILTINS

            builtins = BUILTINS
        self._builtins = dict(builtins)
        if entry_points is None:
            entry_points = importlib_metadata.entry_points(group=ENTRY_POINT_GROUP)
        self._entry_points: dict[str, list[EntryPointLike]] = {}
        for ep in entry_points:
            if ep.name in self._builtins:
                log.warning(
                    "entry point ignored: it has a built-in service manager's name",
                    extra={"manager": ep.name, "entry_point": ep.value},
                )
                continue
            self._entry_points.setdefault(ep.name, []).append(ep)

    def names(self) -> tuple[str, ...]:
        """Every known name: the built-ins, then the entry points, each sorted."""
        return (*sorted(self._builtins), *sorted(self._entry_points))

    def create(self, name: str, options: Mapping[str, Any] | None = None) -> ServiceManager:
        """A new manager ``name`` built with ``options``; :class:`ConfigError` if it cannot be."""
        factory = self._factory(name)
        try:
            manager = factory(dict(options or {}))
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(
                f"service manager {name!r} could not be created: {type(exc).__name__}: {exc} "
                "(a manager factory takes one argument, the options mapping)"
            ) from exc
        if not isinstance(manager, ServiceManager):
            raise ConfigError(
                f"service manager {name!r}: its factory returned {type(manager).__name__}, "
                "which has no name and metadata()"
            )
        if manager.name != name:
            raise ConfigError(
                f"service manager {name!r}: the object it builds is named {manager.name!r}; "
                "the names must match (errors and state are reported by name)"
            )
        for hook in HOOKS:
            method = getattr(manager, hook, None)
            if method is not None and not inspect.iscoroutinefunction(method):
                raise ConfigError(f"service manager {name!r}: {hook} must be an async method")
        return manager

    def _factory(self, name: str) -> ManagerFactory:
        if name in self._builtins:
            return self._builtins[name]
        candidates = self._entry_points.get(name)
        if not candidates:
            raise UnknownServiceManager(
                f"unknown service manager {name!r}; known: {', '.join(self.names()) or 'none'}"
            )
        if len(candidates) > 1:
            values = ", ".join(ep.value for ep in candidates)
            raise ConfigError(
                f"service manager {name!r} is offered by several entry points ({values}); "
                "uninstall all but one"
            )
        ep = candidates[0]
        try:
            loaded = ep.load()
        except Exception as exc:
            raise ConfigError(
                f"service manager {name!r} (entry point {ep.value}) failed to load: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if not callable(loaded):
            raise ConfigError(f"service manager {name!r}: entry point {ep.value} is not callable")
        return cast(ManagerFactory, loaded)


# -- outcomes --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ManagerError:
    """A hook that failed: which manager, which hook, and why (for the status ``detail``)."""

    manager: str
    hook: HookName
    error: str

    @classmethod
    def of(cls, manager: str, hook: HookName, exc: BaseException) -> ManagerError:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return cls(manager, hook, text[:_ERROR_CHARS])

    def as_dict(self) -> dict[str, str]:
        return {"manager": self.manager, "hook": self.hook, "error": self.error}

    def __str__(self) -> str:
        """``<manager>.<hook>: <error>``, as listed in a status event's detail."""
        return f"{self.manager}.{self.hook}: {self.error}"


def _errors_detail(errors: tuple[ManagerError, ...]) -> dict[str, Any]:
    # Plain strings: a status event's detail holds lists of plain values only (Avro).
    return {DETAIL_KEY: [str(e) for e in errors]} if errors else {}


@dataclass(frozen=True, slots=True)
class HookOutcome:
    """The outcome of a hook whose answer is not used: which managers ran, and the errors."""

    ran: tuple[str, ...] = ()
    errors: tuple[ManagerError, ...] = ()

    @property
    def detail(self) -> dict[str, Any]:
        """``{DETAIL_KEY: [...]}`` when a hook failed, else ``{}``: merge it into ``detail``."""
        return _errors_detail(self.errors)


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """After ``on_message_send``: the message to send (the context's own, changed in place),
    the merged values, which managers ran without error, and the errors."""

    message: SendMessage
    values: Mapping[str, Any]
    ran: tuple[str, ...] = ()
    errors: tuple[ManagerError, ...] = ()

    @property
    def detail(self) -> dict[str, Any]:
        return _errors_detail(self.errors)


@dataclass(frozen=True, slots=True)
class Scrubbed:
    """A scrubbed address, with the reason and the manager that scrubbed it."""

    address: str
    reason: str
    manager: str


@dataclass(frozen=True, slots=True)
class Block:
    manager: str
    reason: str


@dataclass(frozen=True, slots=True)
class SessionStartOutcome:
    """After ``on_session_start``: scrubs in audience order (one per address: the first
    manager's reason), the blocks, each manager's ``detail``, and the errors."""

    scrubbed: tuple[Scrubbed, ...] = ()
    blocks: tuple[Block, ...] = ()
    details: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: _EMPTY)
    ran: tuple[str, ...] = ()
    errors: tuple[ManagerError, ...] = ()

    @property
    def blocked(self) -> bool:
        return bool(self.blocks)

    @property
    def block_reason(self) -> str | None:
        if not self.blocks:
            return None
        return "; ".join(f"{b.manager}: {b.reason}" for b in self.blocks)

    def scrub_reasons(self) -> dict[str, Scrubbed]:
        """The scrubbed addresses, by address."""
        return {s.address: s for s in self.scrubbed}

    @property
    def detail(self) -> dict[str, Any]:
        """For the status events: each manager's ``detail`` under its name (a map of plain
        values, as a status event's detail can hold), and the errors."""
        out: dict[str, Any] = {name: dict(v) for name, v in self.details.items()}
        return out | _errors_detail(self.errors)


# -- the runner ------------------------------------------------------------------------------


async def _call(hook: Callable[[Any], Any], ctx: object, seconds: float | None) -> Any:
    awaitable = hook(ctx)
    if not inspect.isawaitable(awaitable):
        raise TypeError("the hook is not async (it must be an async method)")
    # asyncio.timeout, not wait_for: the hook runs in the caller's task, with its context
    # (Faust's current event, which decides where a table write goes).
    scope = asyncio.timeout(seconds)
    try:
        async with scope:
            return await awaitable
    except TimeoutError:
        if scope.expired():
            raise TimeoutError(f"did not finish within {seconds:g}s") from None
        raise


def _send_values(result: Any) -> dict[str, Any]:
    """A send hook's answer as a dict; ``TypeError`` for anything but a mapping or ``None``."""
    if result is None:
        return {}
    if not isinstance(result, Mapping) or not all(isinstance(k, str) for k in result):
        raise TypeError(
            f"on_message_send returned {type(result).__name__}; expected a mapping with "
            "string keys, or None"
        )
    for key, types in _MESSAGE_KEYS.items():
        if key in result and not isinstance(result[key], types):
            wanted = " or ".join("None" if t is type(None) else t.__name__ for t in types)
            raise TypeError(
                f"on_message_send returned {key}={result[key]!r}; {key} must be {wanted}"
            )
    return dict(result)


class ServiceManagers:
    """The enabled service managers, and the runners that call their hooks.

    ``names`` is the global list (``SERVICE_MANAGERS``, see :meth:`from_setting`), ``options``
    each manager's options by name (for every manager a client might enable, too).
    Construction builds the global list's managers, so a bad name or option stops the worker
    at start; managers only a client names are built on first use and kept.

    ``timeout`` bounds each call of ``on_message_send``, ``on_delivery_report``,
    ``on_opt_out`` and ``on_session_complete`` (seconds; ``None``: unbounded);
    ``session_start_timeout`` bounds ``on_session_start`` (unbounded by default: scrubbing a
    large audience takes as long as its lookups).
    """

    def __init__(
        self,
        names: Sequence[str] = (),
        *,
        options: Mapping[str, Mapping[str, Any]] | None = None,
        registry: Registry | None = None,
        timeout: float | None = 10.0,
        session_start_timeout: float | None = None,
    ) -> None:
        self.registry = registry if registry is not None else Registry()
        known = self.registry.names()
        self.names = check_names(names, known, where="SERVICE_MANAGERS")
        self._options = {name: dict(opts) for name, opts in (options or {}).items()}
        if unknown := sorted(set(self._options) - set(known)):
            raise UnknownServiceManager(
                f"options given for unknown service manager(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        self.timeout = timeout
        self.session_start_timeout = session_start_timeout
        self._instances: dict[str, ServiceManager] = {}
        self._lists: dict[tuple[str, ...], tuple[ServiceManager, ...]] = {}
        self._lists[self.names] = self._build(self.names)

    @classmethod
    def from_setting(
        cls,
        value: str | None,
        *,
        options: Mapping[str, Mapping[str, Any]] | None = None,
        registry: Registry | None = None,
        timeout: float | None = 10.0,
        session_start_timeout: float | None = None,
    ) -> ServiceManagers:
        """Build from the ``SERVICE_MANAGERS`` value (see :func:`parse_manager_list`)."""
        registry = registry if registry is not None else Registry()
        return cls(
            parse_manager_list(value, registry.names()),
            options=options,
            registry=registry,
            timeout=timeout,
            session_start_timeout=session_start_timeout,
        )

    def _build(self, names: tuple[str, ...]) -> tuple[ServiceManager, ...]:
        managers: list[ServiceManager] = []
        for name in names:
            manager = self._instances.get(name)
            if manager is None:
                manager = self._instances[name] = self.registry.create(
                    name, self._options.get(name, {})
                )
            managers.append(manager)
        return tuple(managers)

    def check_client(self, client: ClientConfig) -> None:
        """Raise :class:`ConfigError` if ``client``'s list cannot be used (an unknown or
        repeated name, or a manager that cannot be built): call it when a client's
        configuration is applied, so :meth:`for_client` does not fail later."""
        self.for_client(client)

    def for_client(self, client: ClientConfig) -> list[ServiceManager]:
        """The managers for ``client``, in order: its own list when it has one (which replaces
        the global list), else the global list. Raises :class:`ConfigError` for a client list
        naming an unknown manager (see :meth:`check_client`)."""
        names = self.names if client.service_managers is None else client.service_managers
        managers = self._lists.get(names)
        if managers is None:
            check_names(names, self.registry.names(), where=f"clients.{client.client_id}.service_managers")  # fmt: skip
            managers = self._lists[names] = self._build(names)
        return list(managers)

    @staticmethod
    def has_hook(managers: Sequence[ServiceManager], hook: HookName) -> bool:
        """Whether any of ``managers`` implements ``hook``: check it before building a costly
        context (e.g. looking up a report's sender) that nothing would read."""
        return any(callable(getattr(m, hook, None)) for m in managers)

    def _failed(self, manager: ServiceManager, hook: HookName, exc: Exception) -> ManagerError:
        error = ManagerError.of(manager.name, hook, exc)
        log.warning(
            "service manager hook failed",
            extra={"manager": manager.name, "hook": hook, "error": error.error},
            exc_info=None if isinstance(exc, TimeoutError) else exc,
        )
        return error

    async def run_send(self, managers: Sequence[ServiceManager], ctx: SendContext) -> SendOutcome:
        """Run ``on_message_send`` of ``managers`` in order on ``ctx`` (see the module rules).

        Each hook gets ``ctx`` with ``values`` = the merge of ``ctx.values`` and what the
        earlier hooks returned. The outcome's ``message`` is ``ctx.message``, changed in place.
        """
        values: dict[str, Any] = dict(ctx.values)
        ran: list[str] = []
        errors: list[ManagerError] = []
        for manager in managers:
            hook = getattr(manager, "on_message_send", None)
            if not callable(hook):
                continue
            snapshot = ctx.message._snapshot()
            try:
                view = replace(ctx, values=MappingProxyType(dict(values)))
                returned = _send_values(await _call(hook, view, self.timeout))
            except Exception as exc:  # noqa: BLE001 - a manager's failure must not stop the send
                # Undo what the failed hook did to the message: the send goes on with what
                # the other managers produced, never with half of this one's changes.
                ctx.message._restore(snapshot)
                errors.append(self._failed(manager, "on_message_send", exc))
                continue
            for key in _MESSAGE_KEYS.keys() & returned.keys():
                setattr(ctx.message, key, returned[key])
            values.update(returned)
            ran.append(manager.name)
        return SendOutcome(ctx.message, MappingProxyType(values), tuple(ran), tuple(errors))

    async def _run_plain(
        self, managers: Sequence[ServiceManager], hook_name: HookName, ctx: object
    ) -> HookOutcome:
        ran: list[str] = []
        errors: list[ManagerError] = []
        for manager in managers:
            hook = getattr(manager, hook_name, None)
            if not callable(hook):
                continue
            try:
                await _call(hook, ctx, self.timeout)
            except Exception as exc:  # noqa: BLE001 - reported; the other managers still run
                errors.append(self._failed(manager, hook_name, exc))
                continue
            ran.append(manager.name)
        return HookOutcome(tuple(ran), tuple(errors))

    async def run_delivery_report(
        self, managers: Sequence[ServiceManager], ctx: ReportContext
    ) -> HookOutcome:
        """Run ``on_delivery_report`` of ``managers`` in order; errors are captured."""
        return await self._run_plain(managers, "on_delivery_report", ctx)

    async def run_opt_out(
        self, managers: Sequence[ServiceManager], ctx: OptOutContext
    ) -> HookOutcome:
        """Run ``on_opt_out`` of ``managers`` in order; errors are captured."""
        return await self._run_plain(managers, "on_opt_out", ctx)

    async def run_session_complete(
        self, managers: Sequence[ServiceManager], ctx: SessionCompleteContext
    ) -> HookOutcome:
        """Run ``on_session_complete`` of ``managers`` in order; errors are captured."""
        return await self._run_plain(managers, "on_session_complete", ctx)

    async def run_session_start(
        self, managers: Sequence[ServiceManager], ctx: SessionStartContext
    ) -> SessionStartOutcome:
        """Run ``on_session_start`` of ``managers`` in order and merge their answers.

        * Scrubs are merged: an address scrubbed by any manager is out, with the first
          manager's reason. Each later manager sees only the addresses still in (so a paid
          lookup is not spent on an address already removed). Scrubs of addresses not in
          ``ctx.addresses`` are ignored.
        * Any block wins. Once a manager blocks, the later ones are not called: their scrubs
          no longer matter, and some cost money.
        * A failing hook scrubs and blocks nothing (fail-open) and is reported.
        """
        remaining = list(dict.fromkeys(ctx.addresses))  # in order, without repeats
        scrubbed: dict[str, Scrubbed] = {}
        blocks: list[Block] = []
        details: dict[str, Mapping[str, Any]] = {}
        ran: list[str] = []
        errors: list[ManagerError] = []
        for manager in managers:
            hook = getattr(manager, "on_session_start", None)
            if not callable(hook):
                continue
            view = replace(ctx, addresses=tuple(remaining))
            try:
                result = await _call(hook, view, self.session_start_timeout)
                if result is not None and not isinstance(result, SessionStartResult):
                    raise TypeError(
                        f"on_session_start returned {type(result).__name__}; expected a "
                        "SessionStartResult or None"
                    )
            except Exception as exc:  # noqa: BLE001 - fail-open: the session still starts
                errors.append(self._failed(manager, "on_session_start", exc))
                continue
            ran.append(manager.name)
            if result is None:
                continue
            if result.detail:
                details[manager.name] = MappingProxyType(dict(result.detail))
            still_in = set(remaining)
            for scrub in result.scrub:
                if scrub.address in still_in and scrub.address not in scrubbed:
                    scrubbed[scrub.address] = Scrubbed(scrub.address, scrub.reason, manager.name)
            remaining = [a for a in remaining if a not in scrubbed]
            if result.block is not None:
                blocks.append(Block(manager.name, result.block))
                break
        order = {address: i for i, address in enumerate(dict.fromkeys(ctx.addresses))}
        return SessionStartOutcome(
            scrubbed=tuple(sorted(scrubbed.values(), key=lambda s: order[s.address])),
            blocks=tuple(blocks),
            details=MappingProxyType(details),
            ran=tuple(ran),
            errors=tuple(errors),
        )
