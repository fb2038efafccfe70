"""What every view shares: the error answer, authentication, small waits."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Final

from aiohttp import web
from faust.web import Request, Response, View

from streams.app import Switchboard
from switchboard.clients import ClientConfig
from switchboard.errors import DecodeFailed
from switchboard.validation import is_text
from switchboard.wire import json_object

__all__ = [
    "MAX_TWILIO_BODY",
    "HTTPProblem",
    "authenticate",
    "confirmed",
    "errors_middleware",
    "header_text",
    "iso",
    "problem",
    "problem_text",
    "read_body",
    "read_json_object",
    "session_uuid",
    "twilio_form",
    "until",
]

log = logging.getLogger(__name__)


class HTTPProblem(Exception):
    """An HTTP error answer: ``status`` and the contract's ``{"errors": [...]}`` body, with
    ``more`` fields beside ``errors`` (e.g. the ``session_id`` a 503 may have opened)."""

    def __init__(
        self,
        status: int,
        field: str,
        error: str,
        headers: dict[str, str] | None = None,
        more: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(error)
        self.status = status
        self.body: dict[str, Any] = {"errors": [{"field": field, "error": error}], **(more or {})}
        self.headers = headers or {}


def problem(view: View, exc: HTTPProblem) -> Response:
    return view.json(exc.body, status=exc.status, headers=exc.headers)


def header_text(request: Request | web.Request, name: str) -> str | None:
    """The value of header ``name``, or None when absent.

    Raises:
        HTTPProblem: 400 when the value is not UTF-8 text. aiohttp decodes header bytes with
            ``surrogateescape``, so a stray byte becomes a lone surrogate that no encoder (JSON,
            Avro, the API key's digest) accepts later; it is refused here, and never echoed.
    """
    value = request.headers.get(name)
    if value is not None and not is_text(value):
        raise HTTPProblem(400, name, f"the {name} header is not UTF-8 text")
    return value


def problem_text(view: View, exc: HTTPProblem) -> Response:
    """``exc`` as a plain-text answer: what Twilio's webhooks get (they show text in the debugger)."""
    return view.text(exc.body["errors"][0]["error"], status=exc.status, headers=exc.headers)


def authenticate(sb: Switchboard, request: Request) -> ClientConfig:
    """The client of the request's API key (``Authorization: Bearer <key>``)."""
    scheme, _, key = (header_text(request, "Authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise HTTPProblem(
            401,
            "Authorization",
            "missing API key: send `Authorization: Bearer <key>`",
            {"WWW-Authenticate": 'Bearer realm="switchboard"'},
        )
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


async def read_body(request: Request | web.Request, limit: int) -> bytes:
    """The request's body, read at most ``limit`` bytes far.

    Raises:
        HTTPProblem: 413 as soon as the body (announced or read) is larger than ``limit``.
    """
    too_large = HTTPProblem(413, "", f"the request body is larger than {limit:,} bytes")
    length = request.headers.get("Content-Length")
    if length is not None and length.isdigit() and len(length) < 20 and int(length) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):  # type: ignore[union-attr]
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _is_json(content_type: str) -> bool:
    mime = content_type.partition(";")[0].strip().lower()
    return mime == "application/json" or (
        mime.startswith("application/") and mime.endswith("+json")
    )


async def read_json_object(
    request: Request | web.Request, limit: int
) -> tuple[bytes, dict[str, Any]]:
    """The request's body and the JSON object it holds.

    Raises:
        HTTPProblem: 415 when ``Content-Type`` is missing or not JSON (``application/json`` or
            ``application/*+json``): a form or text body is refused before it is read, rather
            than guessed at; 413 over ``limit`` bytes; 400 when the body is not one strict JSON
            object (see :func:`switchboard.wire.json_object`: never another exception).
    """
    content_type = request.headers.get("Content-Type")
    if content_type is None or not _is_json(content_type):
        seen = (
            "no Content-Type" if content_type is None else "Content-Type " + repr(content_type[:80])
        )
        raise HTTPProblem(
            415,
            "Content-Type",
            f"the body must be JSON: send Content-Type: application/json ({seen} was sent)",
        )
    body = await read_body(request, limit)
    try:
        return body, json_object(body)
    except DecodeFailed as exc:
        raise HTTPProblem(400, "", f"the request body: {exc.errors[0].error}") from None


#: The largest body a Twilio webhook may have. Twilio's requests are a few kilobytes (an
#: inbound SMS of 1,600 characters with every parameter is under 8 kB); the cap bounds what an
#: unsigned request can make this worker read, and record on the rejected topic.
MAX_TWILIO_BODY: Final = 32 * 1024
_FORM: Final = "application/x-www-form-urlencoded"


async def twilio_form(request: web.Request) -> None:
    """Check that ``request`` is shaped like a Twilio webhook, and read its form.

    Raises:
        HTTPProblem: 415 unless the body is ``application/x-www-form-urlencoded`` (Twilio's
            webhooks for messages and calls always are: JSON and multipart are refused before
            they are read); 413 over :data:`MAX_TWILIO_BODY`; 400 when the form is not text in
            its charset. After it returned, ``request.read()`` and ``request.post()`` answer
            from what was read.
    """
    mime = (request.headers.get("Content-Type") or "").partition(";")[0].strip().lower()
    if mime != _FORM:
        raise HTTPProblem(415, "Content-Type", f"a Twilio webhook is sent as {_FORM}")
    if (request.content_length or 0) > MAX_TWILIO_BODY:
        raise HTTPProblem(413, "", f"the request body is larger than {MAX_TWILIO_BODY:,} bytes")
    try:
        body = await request.read()  # bounded by the server's client_max_size besides
        if len(body) > MAX_TWILIO_BODY:
            raise HTTPProblem(413, "", f"the request body is larger than {MAX_TWILIO_BODY:,} bytes")
        await request.post()
    except (ValueError, LookupError):  # UnicodeDecodeError, an unknown charset
        raise HTTPProblem(400, "", "the form is not text in its charset") from None


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
