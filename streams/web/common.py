"""What every view shares: the error answer, authentication, small waits."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from aiohttp import web
from faust.web import Request, Response, View

from streams.app import Switchboard
from switchboard.clients import ClientConfig

__all__ = [
    "HTTPProblem",
    "authenticate",
    "confirmed",
    "errors_middleware",
    "iso",
    "problem",
    "session_uuid",
    "until",
]

log = logging.getLogger(__name__)


class HTTPProblem(Exception):
    """An HTTP error answer: ``status`` and the contract's ``{"errors": [...]}`` body."""

    def __init__(
        self, status: int, field: str, error: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(error)
        self.status = status
        self.body = {"errors": [{"field": field, "error": error}]}
        self.headers = headers or {}


def problem(view: View, exc: HTTPProblem) -> Response:
    return view.json(exc.body, status=exc.status, headers=exc.headers)


def authenticate(sb: Switchboard, request: Request) -> ClientConfig:
    """The client of the request's API key (``Authorization: Bearer <key>``)."""
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise HTTPProblem(401, "Authorization", "missing API key: send `Authorization: Bearer <key>`",
                          {"WWW-Authenticate": 'Bearer realm="switchboard"'})  # fmt: skip
    if not sb.clients.ready.is_set():
        raise HTTPProblem(
            503, "", "starting: client configuration not loaded yet", {"Retry-After": "2"}
        )
    client = sb.clients.authenticate(key.strip())
    if client is None:
        raise HTTPProblem(
            401,
            "Authorization",
            "unknown API key",
            {"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    return client


async def confirmed(sb: Switchboard, send: Awaitable[None]) -> None:
    """Await a command's write (``sb.command`` waits for the broker's acknowledgement)."""
    try:
        await asyncio.wait_for(send, sb.settings.produce_timeout)
    except Exception:  # noqa: BLE001
        raise HTTPProblem(
            503, "", "Kafka did not confirm the command; retry", {"Retry-After": "5"}
        ) from None


async def until(predicate: Callable[[], bool], seconds: float) -> None:
    """Wait until ``predicate()`` holds (a state change made by an agent), or answer 503."""
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise HTTPProblem(
                503,
                "",
                "the command was stored but not applied in time; retry",
                {"Retry-After": "2"},
            )
        await asyncio.sleep(0.02)


def session_uuid(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise HTTPProblem(404, "session_id", "no such session") from None


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def errors_middleware(sb: Switchboard) -> object:
    """The last line of defence of every view: an exception a view did not turn into an answer
    is logged (with its traceback, never echoed) and answered in the API's error shape: 503 with
    ``Retry-After`` while the worker is stopping (a load balancer tries another), else 500."""

    @web.middleware
    async def errors(request: web.Request, handler: object) -> web.StreamResponse:
        try:
            return await handler(request)  # type: ignore[operator,no-any-return]
        except (web.HTTPException, asyncio.CancelledError):
            raise
        except Exception:
            stopping = bool(sb.app.should_stop)
            log.exception("a view failed", extra={"path": request.path, "stopping": stopping})
            if stopping:
                body = {"errors": [{"field": "", "error": "this worker is stopping; retry"}]}
                return web.json_response(body, status=503, headers={"Retry-After": "1"})
            body = {"errors": [{"field": "", "error": "internal error; the worker's log says why"}]}
            return web.json_response(body, status=500)

    return errors
