"""Push notifications through Firebase Cloud Messaging's HTTP v1 API, with aiohttp.

Channel options (``channels.push`` of a client)::

    provider: fcm
    service_account_file: /run/secrets/acme-firebase.json   # a service-account key file, or
    service_account_env: ACME_FCM_SERVICE_ACCOUNT           # the variable holding its JSON
    project_id: acme-app            # default: the service account's project_id
    timeout: 10                     # seconds per HTTP request (token or send)
    base_url: https://fcm.googleapis.com   # tests only: a local FCM stand-in

The request is ``POST {base_url}/v1/projects/{project}/messages:send`` with
``{"message": {"token": to, "notification": {"title": subject, "body": body}, "data": ...}}``.
Extras shape it: ``data`` (a mapping; FCM takes only strings, so other values are sent as their
JSON text), ``android``, ``apns``, ``webpush`` and ``fcm_options`` (FCM's own objects, passed
through), and the provider-neutral ``priority`` (10 or ``high``; 5 or ``normal``),
``collapse_id`` and ``ttl`` (seconds), which fill ``android`` fields it does not set itself.

Authentication is Google's service-account flow, done here rather than with google-auth or
firebase-admin (both synchronous or heavy, stack notes section 5): an RS256 JWT signed with the
account's key, scope ``firebase.messaging``, is exchanged at the account's ``token_uri`` for an
access token. The token is cached and shared by concurrent sends (one exchange at a time) until
:data:`REFRESH_MARGIN` seconds before it expires; a send answered ``401 UNAUTHENTICATED`` fetches
a new one and is tried once more.

Guarantees and failure modes:

* An accepted message is reported as ``delivered`` (FCM reports no device delivery to the sender, so this is final),
  with FCM's message ``name`` as the provider message id.
* ``UNREGISTERED`` raises :class:`SuppressedError`: the token is no longer valid.
  ``INVALID_ARGUMENT``, ``SENDER_ID_MISMATCH``, ``THIRD_PARTY_AUTH_ERROR`` (FCM's credentials
  for APNs or web push are wrong) and other 4xx raise :class:`PermanentError`.
  ``QUOTA_EXCEEDED``/429, ``UNAVAILABLE``, ``INTERNAL`` and other 5xx raise
  :class:`RetryableError`, with ``Retry-After`` (seconds or an HTTP date) as ``retry_after``.
  The code is FCM's ``errorCode``, else the error's ``status``, else ``http-<status>``.
* The token endpoint refusing the account (``invalid_grant``, ...) raises
  :class:`PermanentError`: nothing will work until the credentials are fixed. Its 5xx and 429
  are retryable.
* A refused or dropped connection, or no answer within ``timeout``, raises
  :class:`RetryableError`; FCM may then have accepted the message, so it can arrive twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from switchboard.errors import ConfigError
from switchboard.retry import retry_after_seconds
from transports.base import OutboundMessage, SendResult, final_check
from transports.errors import PermanentError, RetryableError, SuppressedError, TransportError

__all__ = ["FcmTransport", "build_request", "classify"]

DEFAULT_BASE_URL: Final = "https://fcm.googleapis.com"
SCOPE: Final = "https://www.googleapis.com/auth/firebase.messaging"
GRANT_TYPE: Final = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: Seconds before expiry at which a cached access token is replaced (google-auth uses 225).
REFRESH_MARGIN: Final = 240.0
_ASSERTION_LIFETIME: Final = 3600
_RETRYABLE: Final = frozenset({"QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL"})
_PASSTHROUGH: Final = ("android", "apns", "webpush", "fcm_options")
_ANDROID_PRIORITY: Final = {
    10: "HIGH",
    "10": "HIGH",
    "high": "HIGH",
    5: "NORMAL",
    "5": "NORMAL",
    "normal": "NORMAL",
}


def build_request(message: OutboundMessage) -> dict[str, Any]:
    """The ``messages:send`` body for one message. Pure; raises PermanentError for bad input."""
    token = message.to.strip()
    if not token or any(c.isspace() for c in token):
        raise PermanentError("not an FCM registration token", code="INVALID_ARGUMENT")
    extras = message.extras
    body: dict[str, Any] = {"token": token}
    notification = {k: v for k, v in (("title", message.subject), ("body", message.body)) if v}
    if notification:
        body["notification"] = notification
    data = _data(extras.get("data"))
    if data:
        body["data"] = data
    if not notification and not data:
        raise PermanentError("a push needs a title, a body or data", code="empty-push")
    for name in _PASSTHROUGH:
        value = extras.get(name)
        if value is not None:
            if not isinstance(value, Mapping):
                raise _bad_extra(name, "a mapping (FCM's own object)")
            body[name] = dict(value)
    android = {**_android_defaults(extras), **body.get("android", {})}
    if android:
        body["android"] = android
    return {"message": body}


def classify(status: int, body: Any, retry_after: float | None = None) -> TransportError:
    """The error for an FCM answer other than 200, from its HTTP status and error body."""
    error = body.get("error") if isinstance(body, Mapping) else None
    error = error if isinstance(error, Mapping) else {}
    details = error.get("details")
    fcm_codes = [
        d["errorCode"]
        for d in (details if isinstance(details, list) else [])
        if isinstance(d, Mapping) and isinstance(d.get("errorCode"), str)
    ]
    code = next(iter(fcm_codes), None) or str(error.get("status") or f"http-{status}")
    text = f"FCM {status} {code}"
    if isinstance(error.get("message"), str):
        text = f"{text}: {error['message'][:200]}"
    if code == "UNREGISTERED":
        return SuppressedError(f"{text} (the token is no longer valid)", code=code)
    if code in _RETRYABLE or status == 429 or status >= 500:
        return RetryableError(text, code=code, retry_after=retry_after)
    return PermanentError(text, code=code)


@dataclass(frozen=True, slots=True)
class _AccessToken:
    value: str
    refresh_at: float  # time.monotonic()


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    body: Any
    retry_after: float | None


class FcmTransport:
    name = "fcm"

    def __init__(self, options: Mapping[str, Any]) -> None:
        account = _load_service_account(options)
        self.client_email: str = account["client_email"]
        self.token_uri: str = account["token_uri"]
        self._key_id: str | None = account.get("private_key_id")
        self._private_key = _load_private_key(account["private_key"])
        project = options.get("project_id") or account.get("project_id")
        if not isinstance(project, str) or not project:
            raise ConfigError("push over fcm needs project_id (or one in the service account)")
        self.project_id = project
        base_url = str(options.get("base_url") or DEFAULT_BASE_URL).rstrip("/")
        self.send_url = f"{base_url}/v1/projects/{project}/messages:send"
        self.timeout = float(options.get("timeout", 10))
        self._session: aiohttp.ClientSession | None = None
        self._token: _AccessToken | None = None
        self._token_lock = asyncio.Lock()

    def _ensure_session(self) -> aiohttp.ClientSession:
        # Built on first use: an aiohttp session belongs to the loop it was created in.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout), raise_for_status=False
            )
        return self._session

    async def send(self, message: OutboundMessage) -> SendResult:
        body = build_request(message)
        session = self._ensure_session()
        token = await self._access_token(session)
        await final_check(message)  # after the wait for an access token
        reply = await self._post_message(session, token, body)
        if reply.status == 401 and classify(401, reply.body).code == "UNAUTHENTICATED":
            # Our access token was refused (revoked, or expired early): fetch one, try once more.
            token = await self._access_token(session, refused=token)
            reply = await self._post_message(session, token, body)
        if reply.status != 200:
            raise classify(reply.status, reply.body, reply.retry_after)
        name = reply.body.get("name") if isinstance(reply.body, Mapping) else None
        if not isinstance(name, str):
            raise RetryableError("FCM answered 200 without a message name", code="fcm-bad-response")
        # FCM v1 reports no device receipts: its acceptance is the last word, so it is final.
        return SendResult(
            name, "delivered", {"receipt": "accepted by FCM; device delivery is not reported"}
        )

    async def _post_message(
        self, session: aiohttp.ClientSession, token: str, body: dict[str, Any]
    ) -> _Reply:
        return await self._request(
            session, "FCM", self.send_url, json=body, headers={"Authorization": f"Bearer {token}"}
        )

    async def _access_token(
        self, session: aiohttp.ClientSession, refused: str | None = None
    ) -> str:
        """The cached access token, or a new one; ``refused`` is one the API just rejected."""
        async with self._token_lock:
            cached = self._token
            if (
                cached is not None
                and cached.value != refused
                and time.monotonic() < cached.refresh_at
            ):
                return cached.value
            self._token = await self._fetch_token(session)
            return self._token.value

    async def _fetch_token(self, session: aiohttp.ClientSession) -> _AccessToken:
        now = int(time.time())
        claims = {
            "iss": self.client_email,
            "scope": SCOPE,
            "aud": self.token_uri,
            "iat": now,
            "exp": now + _ASSERTION_LIFETIME,
        }
        headers = {"kid": self._key_id} if self._key_id else None
        assertion = jwt.encode(claims, self._private_key, algorithm="RS256", headers=headers)
        started = time.monotonic()
        reply = await self._request(
            session,
            "OAuth",
            self.token_uri,
            data={"grant_type": GRANT_TYPE, "assertion": assertion},
        )
        body = reply.body if isinstance(reply.body, Mapping) else {}
        if reply.status != 200:
            error = body.get("error")
            code = error if isinstance(error, str) else f"oauth-http-{reply.status}"
            text = f"Google OAuth refused the service account {self.client_email}: {code}"
            if isinstance(body.get("error_description"), str):
                text = f"{text} ({body['error_description'][:200]})"
            if reply.status == 429 or reply.status >= 500:
                raise RetryableError(text, code=code, retry_after=reply.retry_after)
            raise PermanentError(text, code=code)
        value, expires_in = body.get("access_token"), body.get("expires_in", 3600)
        if not isinstance(value, str) or not isinstance(expires_in, int | float):
            raise RetryableError("Google OAuth answered without a token", code="oauth-bad-response")
        return _AccessToken(value, started + float(expires_in) - REFRESH_MARGIN)

    async def _request(
        self, session: aiohttp.ClientSession, service: str, url: str, **kwargs: Any
    ) -> _Reply:
        """POST, and read the answer as JSON (None if it is not JSON). Network errors raise."""
        try:
            async with session.post(url, **kwargs) as response:
                text = await response.text()
                retry_after = retry_after_seconds(response.headers.get("Retry-After"))
                status = response.status
        except TimeoutError:
            raise RetryableError(
                f"{service} did not answer within {self.timeout:g}s",
                code=f"{service.lower()}-timeout",
            ) from None
        except aiohttp.ClientError as exc:
            raise RetryableError(
                f"cannot reach {service} ({type(exc).__name__})",
                code=f"{service.lower()}-connection",
            ) from None
        try:
            body = json.loads(text) if text else None
        except ValueError:
            body = None
        return _Reply(status, body, retry_after)

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


def _load_service_account(options: Mapping[str, Any]) -> dict[str, Any]:
    path, env = options.get("service_account_file"), options.get("service_account_env")
    if bool(path) == bool(env):
        raise ConfigError(
            "push over fcm needs exactly one of service_account_file and service_account_env"
        )
    if path:
        where = f"service_account_file {path}"
        try:
            with open(str(path), encoding="utf-8") as file:
                text = file.read()
        except OSError as exc:
            raise ConfigError(f"fcm {where}: cannot read it ({exc})") from None
    else:
        where = f"service_account_env {env}"
        text = os.environ.get(str(env), "")
        if not text:
            raise ConfigError(f"fcm service_account_env names {env}, which is not set")
    try:
        account = json.loads(text)
    except ValueError:
        raise ConfigError(f"fcm {where}: not JSON") from None
    if not isinstance(account, dict):
        raise ConfigError(f"fcm {where}: not a service-account key (a JSON object)")
    missing = [
        k
        for k in ("client_email", "private_key", "token_uri")
        if not isinstance(account.get(k), str)
    ]
    if missing:
        raise ConfigError(f"fcm {where}: the service account has no {', '.join(missing)}")
    return account


def _load_private_key(pem: str) -> rsa.RSAPrivateKey:
    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        raise ConfigError("fcm: the service account's private_key is not a PEM key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError("fcm: the service account's private_key is not an RSA key")
    return key


def _bad_extra(name: str, expected: str) -> PermanentError:
    return PermanentError(f"extras.{name}: must be {expected}", code="bad-extras")


def _data(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise _bad_extra("data", "a mapping with string keys")
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}


def _android_defaults(extras: Mapping[str, Any]) -> dict[str, Any]:
    """FCM's android fields for the provider-neutral extras shared with APNs."""
    android: dict[str, Any] = {}
    priority = extras.get("priority")
    if priority is not None:
        try:
            android["priority"] = _ANDROID_PRIORITY[priority]
        except (KeyError, TypeError):
            raise _bad_extra("priority", "10 or high, 5 or normal") from None
    collapse_id = extras.get("collapse_id")
    if collapse_id is not None:
        if not isinstance(collapse_id, str) or not collapse_id:
            raise _bad_extra("collapse_id", "a string")
        android["collapse_key"] = collapse_id
    ttl = extras.get("ttl")
    if ttl is not None:
        if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl < 0:
            raise _bad_extra("ttl", "a whole number of seconds, 0 or more")
        android["ttl"] = f"{ttl}s"
    return android
