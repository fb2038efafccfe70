"""The memory of service managers: the :class:`ManagerState` protocol and its implementations.
Pure.

State (:class:`ManagerState`): ``get`` is a synchronous local read of replicated state and
``put`` a write that goes through Kafka and shows on every worker shortly after (``None``
deletes). Values are JSON values. Reads can lag writes by about a second, also on the worker
that wrote, so a manager's "only if absent" rule is best-effort across workers: two writers
within that window may both see nothing, and the later write wins. :class:`MemoryState` is the
in-memory implementation (tests, library use); :class:`KeyValueState` maps the protocol onto
any bytes table with ``get``/``put`` (``streams.replica.KeyValueReplica``).
"""

from __future__ import annotations

import json
from typing import Any, Protocol

__all__ = ["BytesTable", "KeyValueState", "ManagerState", "MemoryState"]


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
