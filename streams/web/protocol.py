"""The HTTP server's answer to a request it cannot even parse.

aiohttp answers a malformed request (a control byte in a header, a bad request line) before any
view or middleware sees it: it logs the parser's exception with its traceback and answers 400
with the exception's text, and that text quotes the offending line whole, so an
``Authorization: Bearer <key>`` header ending in a stray byte came back in the body (and went to
the log). :func:`install` makes this worker's server answer such requests in the API's error
shape with a fixed description that quotes nothing, and log one line with the exception's type
only. (The log's :class:`switchboard.logs.RedactingFilter` is the second line of defence, for
every other logger.)

Guarantees: a 4xx the parser raises is answered ``{"errors": [{"field": "", "error": ...}]}``
and the connection closed; no byte of the request appears in the body or in the log line.
A 5xx keeps aiohttp's own handling (its body is a fixed text; its traceback goes through the
redacting filter).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_runner import AppRunner
from aiohttp.web_server import Server

from streams.app import Switchboard

__all__ = ["install"]


class _RequestHandler(RequestHandler):
    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            return super().handle_error(request, status, exc, message)
        kind = type(exc).__name__ if exc is not None else "BadHttpMessage"
        # No exc_info: the traceback's message is the parser's, which quotes the raw line.
        self.logger.warning(
            "malformed HTTP request refused", extra={"status": status, "error": kind}
        )
        if request.writer.output_size > 0:  # as aiohttp: the connection is broken anyway
            raise ConnectionError("response already started; cannot answer the error")
        error = (
            f"malformed HTTP request ({kind}): the request line or a header is not valid HTTP/1.1"
        )
        response = web.json_response({"errors": [{"field": "", "error": error}]}, status=status)
        response.force_close()
        return response


class _Server(Server):
    def __call__(self) -> RequestHandler:
        return _RequestHandler(self, loop=self._loop, **self._kwargs)


class _Runner(AppRunner):
    async def _make_server(self) -> Server:
        server = await super()._make_server()
        # The application builds a plain Server (no hook for the handler class); this one
        # only differs in the handler it makes for each connection.
        server.__class__ = _Server
        return server


def install(sb: Switchboard) -> None:
    """Serve ``sb``'s web app with :class:`_RequestHandler` (before the web server starts)."""
    web_driver: Any = sb.app.web
    # Faust's aiohttp driver builds its AppRunner in its constructor and starts it later: it is
    # replaced by the same runner with the same options, making the handlers above.
    web_driver._runner = _Runner(web_driver.web_app, access_log=None)
