"""The one-click unsubscribe endpoint of bulk email (RFC 8058; ``switchboard/unsubscribe.py``).

``GET /v1/unsubscribe?t=<token>``
    A small confirmation page with one button, which POSTs the one-click form. It changes
    nothing: mail scanners and link previews fetch every URL of a message, and an unsubscribe on
    GET would unsubscribe whoever's mail they scanned.

``POST /v1/unsubscribe?t=<token>`` with the form ``List-Unsubscribe=One-Click``
    What a mail client sends for its "Unsubscribe" button (urlencoded or multipart, both as RFC
    8058 allows). The address the token names is recorded as opted out of the client's bulk
    email on the ``<prefix>.optouts`` topic (keyed per client and address like every opt-out),
    and only once the broker confirmed it (``acks=all``) is it answered 200; a later send to it
    is ``suppressed`` (code ``opted-out``). 503 with ``Retry-After`` when Kafka did not confirm
    within ``SWITCHBOARD_PRODUCE_TIMEOUT`` (the client retries; a repeat is harmless).

Failure modes: 404 when the deployment has no unsubscribe links (``SWITCHBOARD_PUBLIC_URL`` or
``SWITCHBOARD_UNSUBSCRIBE_SECRET`` unset); 403 for a token this deployment did not sign (nothing
is recorded); 400 for a POST without the one-click field, 413 for a body over 4 kB, 415 for a
body that is not a form. The secret, and the token, are never logged or echoed.
"""

from __future__ import annotations

import asyncio
import html
import logging
import time
from typing import Final, cast

from aiohttp import web
from faust.web import Request, Response, View

from streams.app import Switchboard
from streams.dispatch import optout_record
from switchboard import optout, unsubscribe

__all__ = ["register"]

log = logging.getLogger(__name__)

#: A one-click POST is one short field; this bounds what anyone can make the worker read.
MAX_BODY: Final = 4096
_FORMS: Final = ("application/x-www-form-urlencoded", "multipart/form-data")
_NO_STORE: Final = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
    # The page is inert: no script, no style from elsewhere, a form that posts only here.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
}


def register(sb: Switchboard) -> None:
    app = sb.app
    assert unsubscribe.PATH == "/v1/unsubscribe"  # the links' path, and this route's

    @app.page("/v1/unsubscribe", name="unsubscribe")
    class Unsubscribe(View):
        async def get(self, request: Request) -> Response:
            found = _verified(sb, self, cast(web.Request, request))
            if not isinstance(found, tuple):  # faust's Response is not the class views answer
                return found
            _, address = found
            return self.html(
                _page(
                    "Unsubscribe",
                    f"Stop bulk email to <b>{html.escape(address)}</b>?",
                    '<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
                    '<button type="submit">Unsubscribe</button></form>',
                ),
                headers=dict(_NO_STORE),
            )

        async def post(self, request: Request) -> Response:
            return await _one_click(sb, self, cast(web.Request, request))


def _verified(sb: Switchboard, view: View, request: web.Request) -> tuple[str, str] | Response:
    """The (client, address) the request's token names, or the answer refusing it."""
    links = sb.settings.unsubscribe_links
    if links is None:
        return view.text("unsubscribe links are not enabled on this deployment", status=404)
    found = unsubscribe.verify(links[1], request.query.get("t", ""))
    if found is None:
        sb.metrics.rejections.labels("unsubscribe-signature").inc()
        return view.text("this unsubscribe link is not valid", status=403)
    return found


async def _one_click(sb: Switchboard, view: View, request: web.Request) -> Response:
    found = _verified(sb, view, request)
    if not isinstance(found, tuple):
        return found
    client_id, address = found
    mime = (request.headers.get("Content-Type") or "").partition(";")[0].strip().lower()
    if mime not in _FORMS:
        return view.text(
            f"send the form {unsubscribe.ONE_CLICK} (urlencoded or multipart)", status=415
        )
    if (request.content_length or 0) > MAX_BODY:
        return view.text(f"the body is larger than {MAX_BODY:,} bytes", status=413)
    try:
        body = await request.read()
        if len(body) > MAX_BODY:
            return view.text(f"the body is larger than {MAX_BODY:,} bytes", status=413)
        form = await request.post()
    except (ValueError, LookupError, AssertionError):  # not text in its charset, bad multipart
        return view.text("the form cannot be read", status=400)
    name, _, value = unsubscribe.ONE_CLICK.partition("=")
    if form.get(name) != value:
        return view.text(f"a one-click unsubscribe posts {unsubscribe.ONE_CLICK}", status=400)
    record = optout_record("unsubscribe", "list-unsubscribe one-click", "email")
    timeout = sb.settings.produce_timeout
    try:
        # Durable once put() returns; it then waits (up to the same time) until this worker's
        # replica has it, as an SMS STOP does, so a send this worker makes next honours it.
        async with asyncio.timeout(2 * timeout):
            await sb.optouts.put(optout.key(client_id, address), record, wait_applied=timeout)
    except Exception as exc:  # noqa: BLE001 - not durable: the mail client must retry
        log.error(
            "unsubscribe not recorded: Kafka did not confirm it",
            extra={"client_id": client_id, "error": type(exc).__name__},
        )
        return view.text("not recorded; retry", status=503, headers={"Retry-After": "5"})
    sb.metrics.optouts.labels("unsubscribe").inc()
    log.info("email unsubscribe recorded", extra={"client_id": client_id})
    client = sb.clients.get(client_id)
    if client is not None:
        await sb.managers.opted_out(client, "email", address, reason="unsubscribe", at=time.time())
    return view.html(
        _page("Unsubscribed", f"<b>{html.escape(address)}</b> will get no more bulk email.", ""),
        headers=dict(_NO_STORE),
    )


def _page(title: str, text: str, form: str) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        '<meta name="viewport" content="width=device-width"></head>'
        f'<body style="font-family:sans-serif;max-width:32em;margin:3em auto"><h1>{title}</h1>'
        f"<p>{text}</p>{form}</body></html>"
    )
