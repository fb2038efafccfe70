"""Running service managers' hooks: :class:`ServiceManagers` picks a client's managers and calls
their hooks in order, merging what they return and containing their failures. Pure.

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
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Final

from switchboard.clients import ClientConfig
from switchboard.managers.hooks import (
    HookName,
    OptOutContext,
    ReportContext,
    SendContext,
    SendMessage,
    ServiceManager,
    SessionCompleteContext,
    SessionStartContext,
    SessionStartResult,
)
from switchboard.managers.registry import (
    Registry,
    UnknownServiceManager,
    check_names,
    parse_manager_list,
)

__all__ = [
    "DETAIL_KEY",
    "Block",
    "HookOutcome",
    "ManagerError",
    "Scrubbed",
    "SendOutcome",
    "ServiceManagers",
    "SessionStartOutcome",
]

log = logging.getLogger(__name__)

#: The key of a status event's ``detail`` that lists the hooks that failed.
DETAIL_KEY: Final = "service_manager_errors"

#: Returned keys that are also fields of :class:`SendMessage`, with the types they must have.
_MESSAGE_KEYS: Final[Mapping[str, tuple[type, ...]]] = {
    "sender": (str, type(None)),
    "messaging_service_sid": (str, type(None)),
    "send_as_mms": (bool,),
}
_ERROR_CHARS: Final = 300  # an error message in a status event stays short
_EMPTY: Final[Mapping[str, Any]] = MappingProxyType({})


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
        #: Whether a list of managers implements a hook (:meth:`wants`), by list and hook.
        self._wants: dict[tuple[tuple[str, ...], HookName], bool] = {}

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
            check_names(
                names, self.registry.names(), where=f"clients.{client.client_id}.service_managers"
            )
            managers = self._lists[names] = self._build(names)
        return list(managers)

    def wants(self, client: ClientConfig, hook: HookName) -> bool:
        """``has_hook(for_client(client), hook)``, remembered per manager list and hook: asked
        for every delivery (before its send, after its report), and a list's managers never
        change. Raises :class:`ConfigError` as :meth:`for_client` does."""
        names = self.names if client.service_managers is None else client.service_managers
        found = self._wants.get((names, hook))
        if found is None:
            found = self._wants[(names, hook)] = self.has_hook(self.for_client(client), hook)
        return found

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
