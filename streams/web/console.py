"""The web console (README: "The console"): a page, its two JSON/SSE endpoints, its files.

``GET /console``
    The page (``streams/web/console_assets/``: plain HTML, CSS and one script, no build step).
    It holds no data: the script asks the API for everything, with the API key the person
    typed in.

``GET /console/api/sessions?limit=``
    The signed-in client's most recent sessions (newest first), each as ``GET /v1/sessions/{id}``
    describes it without its recipients. Every worker answers for its own partitions: the worker
    asked scans its part of the sessions table and asks the others for theirs (a request is
    forwarded once, with ``X-Switchboard-Forwarded``). The cost is a scan of the sessions
    table's keys per call, yielding to the event loop every :data:`SCAN_SLICE` keys; the page
    calls it when it opens and when a session it does not list yet shows up.

``GET /console/api/events[?session=]``
    ``text/event-stream``: an ``hello`` event once the stream follows the status topic, then an
    ``activity`` event at most every :data:`FLUSH` seconds while the client's sessions change
    (:class:`~switchboard.console.Activity`: per session, how many events of each status, and
    the newest events), and a comment every :data:`KEEPALIVE` seconds otherwise. Only the
    signed-in client's events are ever sent (:func:`~switchboard.console.visible`). The status
    topic is read only while at least one stream is open (``streams/console_feed.py``).

Sign-in: the API key is sent as ``Authorization: Bearer`` on every request, the event stream
included (the script reads it with ``fetch``, not ``EventSource``, which cannot send a header).
It is never in a URL, a cookie or a log line; the page keeps it in the tab's
``sessionStorage``, gone when the tab closes. There is no operator key: a key sees only its own
client's sessions, here as everywhere in the API. Bad or missing keys answer 401, as the API does.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime
from importlib import resources
from typing import Any, Final

import aiohttp
from aiohttp import web
from yarl import URL

from streams.app import Switchboard
from streams.console_feed import StatusFeed
from streams.sessions import load_session
from streams.web.common import HTTPProblem, authenticate, session_uuid
from streams.web.routing import FORWARDED_HEADER
from streams.web.sessions import session_document
from switchboard.console import recent
from switchboard.records import SessionState

__all__ = ["FLUSH", "KEEPALIVE", "register"]

log = logging.getLogger(__name__)

#: Seconds between two ``activity`` events of a stream (a burst is folded into one).
FLUSH: Final = 0.5
#: Seconds of silence after which a stream sends a comment (proxies close idle connections).
KEEPALIVE: Final = 15.0
#: Sessions table keys scanned between two yields to the event loop.
SCAN_SLICE: Final = 1000
MAX_LIST: Final = 200

_ASSETS: Final = {
    "console.js": "application/javascript",
    "console.css": "text/css",
}
#: The page runs only its own script and style, and talks only to this worker.
_HEADERS: Final = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _asset(name: str) -> bytes:
    return resources.files("streams.web").joinpath("console_assets", name).read_bytes()


def register(sb: Switchboard) -> StatusFeed:
    """Add the console's routes to the worker's web server; returns its feed (stopped with the
    worker)."""
    feed = StatusFeed(sb.settings)
    router = sb.app.web.web_app.router  # type: ignore[attr-defined]
    page = _asset("index.html")
    assets = {name: _asset(name) for name in _ASSETS}

    async def index(request: web.Request) -> web.StreamResponse:
        return web.Response(body=page, content_type="text/html", charset="utf-8", headers=_HEADERS)

    async def asset(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in assets:
            raise web.HTTPNotFound()
        return web.Response(
            body=assets[name], content_type=_ASSETS[name], charset="utf-8", headers=_HEADERS
        )

    async def sessions(request: web.Request) -> web.StreamResponse:
        try:
            client = authenticate(sb, request)  # type: ignore[arg-type]
            limit = _limit(request)
            local = await _local_sessions(sb, client.client_id, limit)
            partial = False
            if not request.headers.get(FORWARDED_HEADER):
                others, partial = await _other_workers_sessions(sb, request, limit)
                local.extend(others)
        except HTTPProblem as exc:
            return web.json_response(exc.body, status=exc.status, headers=exc.headers)
        chosen = recent(((_created(doc), doc["session_id"]) for doc in local), limit)
        by_id = {doc["session_id"]: doc for doc in local}
        return web.json_response({"sessions": [by_id[sid] for sid in chosen], "partial": partial})

    async def events(request: web.Request) -> web.StreamResponse:
        return await _events(sb, feed, request)

    router.add_get("/console", index)
    router.add_get("/console/", index)
    router.add_get("/console/static/{name}", asset)
    router.add_get("/console/api/sessions", sessions)
    router.add_get("/console/api/events", events)

    async def stop_feed(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        feed.stop()

    sb.app.on_before_shutdown.connect(stop_feed)
    return feed


async def _events(sb: Switchboard, feed: StatusFeed, request: web.Request) -> web.StreamResponse:
    """``GET /console/api/events`` (module docs)."""
    try:
        client = authenticate(sb, request)  # type: ignore[arg-type]
        only = request.query.get("session")
        session_id = session_uuid(only) if only else None
    except HTTPProblem as exc:
        return web.json_response(exc.body, status=exc.status, headers=exc.headers)
    sub = feed.subscribe(client.client_id, session_id)
    try:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
                "X-Content-Type-Options": "nosniff",
            }
        )
        await response.prepare(request)
        await response.write(b"retry: 2000\n\n")
        await _until_ready(feed, sb)
        await response.write(_sse("hello", {"client_id": client.client_id, "session": session_id}))
        quiet = 0.0
        while not sb.app.should_stop and not _gone(request):
            update = await sub.next_update(KEEPALIVE / 3)
            if update is not None:
                await response.write(_sse("activity", update))
                quiet = 0.0
                await asyncio.sleep(FLUSH)  # fold the next burst into one update
            else:
                quiet += KEEPALIVE / 3
                if quiet >= KEEPALIVE:
                    await response.write(b": keep-alive\n\n")
                    quiet = 0.0
    except (ConnectionResetError, aiohttp.ClientConnectionResetError):
        pass  # the page closed
    finally:
        sub.close()
    return response


def _gone(request: web.Request) -> bool:
    """The page closed (aiohttp does not cancel a handler whose client left)."""
    return request.transport is None or request.transport.is_closing()


def _sse(event: str, data: Any) -> bytes:
    return (
        f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'), default=str)}\n\n".encode()
    )


async def _until_ready(feed: StatusFeed, sb: Switchboard) -> None:
    """Wait until the feed follows the topic (a second or so the first time)."""
    while not feed.ready.is_set() and not sb.app.should_stop:
        try:
            await asyncio.wait_for(feed.ready.wait(), 1.0)
        except TimeoutError:
            continue


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", "50")[:10]
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIST:
        raise HTTPProblem(400, "limit", f"limit must be a whole number from 1 to {MAX_LIST}")
    return int(raw)


def _created(doc: dict[str, Any]) -> float:
    try:
        return datetime.fromisoformat(str(doc.get("created_at"))).timestamp()
    except ValueError:
        return 0.0


async def _local_sessions(sb: Switchboard, client_id: str, limit: int) -> list[dict[str, Any]]:
    """This worker's ``limit`` newest sessions of ``client_id`` (its active partitions),
    described without their recipients. A scan of the table's keys: audience chunks,
    idempotency records and purge markers have a ``:`` in theirs, session ids never do."""
    found: dict[str, SessionState] = {}
    for n, raw in enumerate(sb.tables.sessions, 1):
        if n % SCAN_SLICE == 0:
            await asyncio.sleep(0)
        key = raw.decode() if isinstance(raw, bytes | bytearray) else str(raw)
        if ":" in key:
            continue
        state = load_session(sb, key)
        if state is not None and state.client_id == client_id:
            found[key] = state
    docs = []
    for session_id in recent(((s.created_at, k) for k, s in found.items()), limit):
        doc = session_document(sb, found[session_id], 0, 0)
        del doc["recipients"], doc["next_offset"]
        docs.append(doc)
    return docs


async def _other_workers_sessions(
    sb: Switchboard, request: web.Request, limit: int
) -> tuple[list[dict[str, Any]], bool]:
    """The other workers' parts of the list, and whether one of them did not answer."""
    here = URL(str(sb.app.conf.canonical_url))
    try:
        urls = {URL(str(u)) for u in sb.app.assignor._tps_url.values()}  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - an assignor still starting knows no other worker
        urls = set()
    others = sorted(str(u).rstrip("/") for u in urls if (u.host, u.port) != (here.host, here.port))
    headers = {"Authorization": request.headers.get("Authorization", ""), FORWARDED_HEADER: "1"}

    async def ask(base: str) -> list[dict[str, Any]] | None:
        try:
            async with asyncio.timeout(10):
                async with sb.app.http_client.get(
                    f"{base}/console/api/sessions?limit={limit}", headers=headers
                ) as answer:
                    if answer.status != 200:
                        return None
                    body = await answer.json()
        except (aiohttp.ClientError, OSError, TimeoutError, RuntimeError, ValueError):
            return None
        return [d for d in body.get("sessions", []) if isinstance(d, dict)]

    answers = await asyncio.gather(*(ask(base) for base in others))
    merged = [doc for part in answers if part for doc in part]
    return merged, any(part is None for part in answers)
