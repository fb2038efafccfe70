"""Which service managers exist, and how each is built: the built-ins, then the Python entry
points of group ``switchboard.service_managers`` (:class:`Registry`); and the checks of the
lists that name them (``SERVICE_MANAGERS``, a client's ``service_managers``). Pure.

An unknown name is an :class:`UnknownServiceManager` (a
:class:`~switchboard.errors.ConfigError`) naming the known ones.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata as importlib_metadata
from typing import Any, Final, Protocol, cast

from switchboard.errors import ConfigError
from switchboard.managers.builtin import BUILTINS
from switchboard.managers.hooks import HOOKS, ManagerFactory, ServiceManager

__all__ = [
    "ENTRY_POINT_GROUP",
    "EntryPointLike",
    "Registry",
    "UnknownServiceManager",
    "check_names",
    "parse_manager_list",
]

log = logging.getLogger(__name__)

#: The entry point group third-party distributions register their managers under: the entry
#: point's name is the manager's name, its object a :data:`ManagerFactory` (usually the class).
ENTRY_POINT_GROUP: Final = "switchboard.service_managers"


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
