"""What the fake providers share: serving an aiohttp app on loopback, and scripted replies.

* :func:`serve` starts an app on ``127.0.0.1`` at a free port and returns its runner and base
  URL. ``handler_cancellation`` is on, so a delayed answer stops when the client hangs up (what a
  client's timeout looks like to a real provider).
* :func:`take_scripted` takes the reply scripted for a key, counting its uses: a reply with
  ``times`` answers that many requests and is then dropped; ``times=None`` answers all of them.
"""

from __future__ import annotations

import ssl
from typing import Protocol, TypeVar

from aiohttp import web

__all__ = ["Scripted", "serve", "take_scripted"]


class Scripted(Protocol):
    times: int | None


R = TypeVar("R", bound=Scripted)


async def serve(
    app: web.Application, ssl_context: ssl.SSLContext | None = None
) -> tuple[web.AppRunner, str]:
    """Serve ``app`` on loopback; ``(runner, "http[s]://127.0.0.1:<port>")``. Stop it with
    ``await runner.cleanup()``."""
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context).start()
    host, port = runner.addresses[0][:2]
    scheme = "https" if ssl_context is not None else "http"
    return runner, f"{scheme}://{host}:{port}"


def take_scripted(scripts: dict[str, list[R]], key: str) -> R | None:
    """The first reply scripted for ``key`` (``None`` when there is none), counted as used."""
    queue = scripts.get(key)
    if not queue:
        return None
    reply = queue[0]
    if reply.times is not None:
        reply.times -= 1
        if reply.times <= 0:
            queue.pop(0)
    return reply
