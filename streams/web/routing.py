"""Answering a request on the worker that holds its state, through rebalances and restarts.

A session's (or a call's) rows live on the worker that owns the partition of its key. A request
that reaches another worker is forwarded there *with its body* (Faust's ``table_route`` drops
bodies, and answers a worker that is still starting with a 500), with its headers and raw path,
so the owner checks the same API key or Twilio signature over the same URL.

:func:`placement` says where a key's rows are right now:

* ``HERE``: this worker owns the partition as active, and its tables are recovered and settled;
* a URL: another worker owns it, per the group's last assignment;
* ``None``: nobody can say yet: partitions are moving (a worker joined, stopped or died), or
  this worker's tables are still being recovered.

:func:`on_owner` turns that into the answer: ``None`` when this worker must answer itself, the
owner's answer when it forwarded the request, and ``503`` with ``Retry-After`` when the placement
does not settle within :data:`SETTLE_WAIT` seconds, or when a forwarded request arrives at a
worker that is not (or not yet) the owner. A request is forwarded at most once
(``X-Switchboard-Forwarded``), so two workers with different views of the assignment never pass
a request back and forth. Nothing is ever answered from a table this worker does not own: a
missing row there means "not here", not "does not exist".
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Final, Literal

import aiohttp
from aiohttp import web
from aiokafka.partitioner import murmur2
from faust.types import TP, TableT
from faust.web import Response, View
from yarl import URL

from streams.app import Switchboard
from streams.web.common import HTTPProblem

__all__ = ["FORWARDED_HEADER", "HERE", "SETTLE_WAIT", "on_owner", "partition_of", "placement"]

log = logging.getLogger(__name__)

FORWARDED_HEADER: Final = "X-Switchboard-Forwarded"
HERE: Final = "here"
#: Seconds a request waits for partitions to settle before it answers 503 (a rebalance after a
#: worker joins or stops takes about a second; after a crash, up to the session timeout).
SETTLE_WAIT: Final = 5.0
_HOP_HEADERS: Final = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade"}
)
_RELAYED_HEADERS: Final = ("Retry-After", "WWW-Authenticate")


def partition_of(key: bytes, partitions: int) -> int:
    """The partition of ``key``, as Kafka's default partitioner (murmur2) chooses it."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


def placement(
    sb: Switchboard, table: TableT[bytes, bytes], key: str
) -> Literal["here"] | URL | None:
    """Where ``key``'s rows of ``table`` are now (see the module docs)."""
    app = sb.app
    topic = table.changelog_topic.get_topic_name()
    tp = TP(topic, partition_of(key.encode(), sb.settings.partitions))
    assignor: Any = app.assignor
    recovery = getattr(app.tables, "recovery", None)
    settled = not app.rebalancing and not (recovery is not None and recovery.in_recovery)
    try:
        if tp in assignor.assigned_actives():
            return HERE if settled else None
        if not settled:
            return None
        url = assignor._tps_url.get(tp)  # the group's last assignment (no public accessor)
    except Exception:  # noqa: BLE001 - an assignor still starting has nothing to say yet
        return None
    if url is None:
        return None
    owner = URL(url)
    here = URL(str(app.conf.canonical_url))
    if (owner.host, owner.port) == (here.host, here.port):
        return None  # the assignment says this worker, yet it holds no such partition: moving
    return owner


async def settled_placement(
    sb: Switchboard, table: TableT[bytes, bytes], key: str, wait: float = SETTLE_WAIT
) -> Literal["here"] | URL | None:
    """:func:`placement`, waiting up to ``wait`` seconds for it to be known."""
    deadline = time.monotonic() + wait
    where = placement(sb, table, key)
    while where is None and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        where = placement(sb, table, key)
    return where


def _moving() -> HTTPProblem:
    return HTTPProblem(
        503, "", "partitions are moving between workers; retry", {"Retry-After": "1"}
    )


async def on_owner(
    sb: Switchboard,
    view: View,
    request: web.Request,
    table: TableT[bytes, bytes],
    key: str,
    body: bytes | None = None,
) -> Response | None:
    """``None`` when this worker holds ``key``'s rows and must answer; else the owner's answer.

    Raises:
        HTTPProblem: 503 with ``Retry-After`` when the owner is unknown after
            :data:`SETTLE_WAIT` seconds, unreachable, or when a forwarded request reached a
            worker that does not hold the rows (the assignment moved under it).
    """
    forwarded = bool(request.headers.get(FORWARDED_HEADER))
    where = await settled_placement(sb, table, key, SETTLE_WAIT if not forwarded else 2.0)
    if where == HERE:
        return None
    if where is None or forwarded:
        raise _moving()
    assert isinstance(where, URL)
    url = URL(str(where).rstrip("/") + request.raw_path, encoded=True)
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
    headers[FORWARDED_HEADER] = "1"
    data = body if body is not None else (await request.read() if request.can_read_body else None)
    try:
        async with asyncio.timeout(sb.settings.produce_timeout + 20):
            async with sb.app.http_client.request(
                request.method, url, headers=headers, data=data
            ) as answer:
                payload = await answer.read()
    except (aiohttp.ClientError, OSError, TimeoutError, RuntimeError) as exc:
        # RuntimeError: the HTTP client is closed (this worker is stopping).
        log.warning(
            "forwarding to the partition's owner failed",
            extra={"owner": str(where), "error": repr(exc)},
        )
        raise HTTPProblem(
            503,
            "",
            "the worker holding this request's state is unreachable; retry",
            {"Retry-After": "1"},
        ) from None
    relayed = {h: answer.headers[h] for h in _RELAYED_HEADERS if h in answer.headers}
    return view.bytes(
        payload, content_type=answer.content_type, status=answer.status, headers=relayed
    )
