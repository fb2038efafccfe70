"""Checking ``X-Twilio-Signature`` on the requests Twilio makes to Switchboard.

Twilio signs every webhook request (TwiML fetches, status callbacks, inbound messages) with
HMAC-SHA1 of the *exact URL it requested* followed by the sorted POST parameters, keyed by the
account's auth token (``twilio.request_validator.RequestValidator``). So the check needs the
URL as Twilio saw it, not as this worker sees it:

* the scheme, host and any path prefix come from ``SWITCHBOARD_PUBLIC_URL`` (Twilio calls the
  public address; a proxy in front may terminate TLS, change the port or strip a prefix);
* the path and query come from the request's **raw** path (``request.raw_path``: the request
  line's bytes). ``request.path`` is decoded (``%2F`` becomes ``/``, ``%7E`` becomes ``~``), so a
  URL rebuilt from it breaks the signature of a perfectly valid request; ``request.url`` carries
  this worker's own scheme, host and port, and its encoding is yarl's business, not Twilio's.

:func:`public_url` builds that URL; :func:`signature_valid` is the pure check; and
:func:`verified_params` reads a request's parameters and checks them in one go.

Guarantees and failure modes:
    * A missing or empty header, a signature over another URL or other parameters, or a body
      that does not match its ``bodySHA256`` (JSON webhooks) is invalid: ``None`` / ``False``,
      never an exception. The caller answers 403 and changes nothing.
    * Both forms of the URL Twilio may have signed, with and without the default port, are
      accepted (the SDK's validator tries both).
    * The auth token is only used as an HMAC key; it is never logged or echoed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from aiohttp import web
from multidict import MultiDict, MultiDictProxy
from twilio.request_validator import (
    SIGNATURE_HEADER,
    SIGNATURE_SETTINGS_HEADER,
    RequestValidator,
    get_signature_algorithm,
)

__all__ = ["SIGNATURE_HEADER", "Params", "public_url", "signature_valid", "verified_params"]

Params = MultiDictProxy[str]
"""A request's form parameters (repeated names keep every value), as Twilio signed them."""

_JSON: Final = "application/json"


def public_url(public_base: str, raw_path: str) -> str:
    """The URL Twilio requested: ``public_base`` (``SWITCHBOARD_PUBLIC_URL``, any trailing ``/``
    dropped) followed by the raw path and query the worker received.

    Raises:
        ValueError: ``raw_path`` does not start with ``/`` (not a path Twilio could have called).
    """
    if not raw_path.startswith("/"):
        raise ValueError(f"not a request path: {raw_path!r}")
    return public_base.rstrip("/") + raw_path


def signature_valid(
    url: str,
    params: Mapping[str, str] | MultiDict[str] | MultiDictProxy[str] | str,
    signature: str | None,
    auth_token: str,
    *,
    settings_header: str | None = None,
) -> bool:
    """Whether ``signature`` is Twilio's signature of ``url`` and ``params`` under ``auth_token``.

    ``params`` is the form (every value of a repeated name counts) or, for a JSON body, the body
    text, checked against the URL's ``bodySHA256``. ``settings_header`` is the value of
    ``X-Twilio-Webhooks-Signature-Settings`` when present (it names the HMAC algorithm).
    """
    if not signature or not auth_token:
        return False
    if isinstance(params, str) and "bodySHA256=" not in url:
        # A body without the URL's digest of it: the SDK's validator would index the text as
        # if it were a mapping (TypeError). Nothing signed it as Twilio signs JSON: invalid.
        return False
    algorithm = get_signature_algorithm(settings_header)
    validator = RequestValidator(auth_token)
    try:
        return bool(validator.validate(url, params, signature, algorithm))
    except (TypeError, ValueError, KeyError, UnicodeError):
        return False  # whatever the input, an invalid signature, never an exception


async def verified_params(request: web.Request, public_base: str, auth_token: str) -> Params | None:
    """The request's Twilio parameters when its signature is valid, else None.

    A POST's parameters are its form body (``application/x-www-form-urlencoded``); a GET's are in
    the query, which is part of the signed URL, so the signed parameter list is empty. A JSON
    POST is checked through ``bodySHA256`` and yields no form parameters.
    """
    url = public_url(public_base, request.raw_path)
    signature = request.headers.get(SIGNATURE_HEADER)
    settings = request.headers.get(SIGNATURE_SETTINGS_HEADER)
    if request.method == "GET":
        ok = signature_valid(url, {}, signature, auth_token, settings_header=settings)
        return MultiDictProxy(MultiDict(request.query)) if ok else None
    if request.content_type == _JSON:
        body = (await request.read()).decode("utf-8", errors="replace")
        ok = signature_valid(url, body, signature, auth_token, settings_header=settings)
        return MultiDictProxy(MultiDict[str]()) if ok else None
    form = await request.post()
    params = MultiDict[str]((k, v) for k, v in form.items() if isinstance(v, str))
    ok = signature_valid(url, params, signature, auth_token, settings_header=settings)
    return MultiDictProxy(params) if ok else None
