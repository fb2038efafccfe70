"""A local FCM HTTP v1 API with Google's OAuth token endpoint, as an aiohttp app on 127.0.0.1.

* ``POST /token``: the service-account flow (``grant_type`` jwt-bearer): the assertion must be an
  RS256 JWT signed by a registered account's key (found by ``kid``), with ``iss`` its
  ``client_email``, ``aud`` this endpoint and the ``firebase.messaging`` scope. Answers
  ``{"access_token", "expires_in", "token_type"}``, or ``{"error": "invalid_grant", ...}``.
* ``POST /v1/projects/{project}/messages:send``: needs a live ``Bearer`` token from ``/token``
  (else ``401 UNAUTHENTICATED``) and the configured project (else ``403 PERMISSION_DENIED``);
  checks the message as FCM does (a token, string data values); answers
  ``{"name": "projects/<p>/messages/<id>"}`` or FCM's error body with ``details[].errorCode``.

Tests script replies per registration token (:meth:`FakeFcmServer.script`): an FCM error code,
a delay, ``Retry-After``, or dropping the connection; they can revoke issued access tokens,
shorten their lifetime, or make the token endpoint fail. Requests are recorded.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web

from tests.fakes.local_http import serve, take_scripted
from tests.fakes.tls import ServiceAccount

__all__ = ["ERRORS", "FakeFcmServer", "FcmReply"]

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"

#: FCM errorCode -> (HTTP status, google.rpc status), as the v1 API answers them.
ERRORS: dict[str, tuple[int, str]] = {
    "UNSPECIFIED_ERROR": (500, "UNKNOWN"),
    "INVALID_ARGUMENT": (400, "INVALID_ARGUMENT"),
    "UNREGISTERED": (404, "NOT_FOUND"),
    "SENDER_ID_MISMATCH": (403, "PERMISSION_DENIED"),
    "QUOTA_EXCEEDED": (429, "RESOURCE_EXHAUSTED"),
    "UNAVAILABLE": (503, "UNAVAILABLE"),
    "INTERNAL": (500, "INTERNAL"),
    "THIRD_PARTY_AUTH_ERROR": (401, "UNAUTHENTICATED"),
}


@dataclass
class FcmReply:
    """How to answer a scripted registration token. ``times=None`` applies to every request."""

    error_code: str | None = None
    status: int | None = None  # default: ERRORS[error_code][0], or 200
    delay: float = 0.0
    retry_after: str | None = None
    drop: bool = False  # close the connection instead of answering
    raw: str | None = None  # a non-JSON body, as a proxy in front of FCM might send
    times: int | None = None


@dataclass
class _TokenFailure:
    status: int
    error: str
    times: int


@dataclass
class FakeFcmServer:
    project_id: str = "switchboard-test"
    token_lifetime: int = 3600
    accounts: dict[str, ServiceAccount] = field(default_factory=dict)  # by private_key_id
    token_requests: list[dict[str, Any]] = field(default_factory=list)  # verified JWT claims
    messages: list[dict[str, Any]] = field(default_factory=list)  # accepted or not
    issued: set[str] = field(default_factory=set)
    url: str = ""
    _scripts: dict[str, list[FcmReply]] = field(default_factory=dict)
    _token_failures: list[_TokenFailure] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    async def __aenter__(self) -> FakeFcmServer:
        app = web.Application()
        app.router.add_post("/token", self._token)
        app.router.add_post("/v1/projects/{project}/messages:send", self._send)
        self._runner, self.url = await serve(app)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def register(self, account: ServiceAccount) -> None:
        """Accept assertions signed by ``account``'s key."""
        self.accounts[account.info["private_key_id"]] = account

    def revoke_tokens(self) -> None:
        """Every access token issued so far stops working (a send gets 401 UNAUTHENTICATED)."""
        self.issued.clear()

    def fail_token_requests(
        self, error: str = "invalid_grant", status: int = 400, times: int = 1
    ) -> None:
        self._token_failures.append(_TokenFailure(status, error, times))

    def script(self, token: str, reply: FcmReply) -> None:
        """Answer messages to ``token`` with ``reply`` (replies queue up in order)."""
        self._scripts.setdefault(token, []).append(reply)

    def fail(self, token: str, error_code: str, **kwargs: Any) -> None:
        self.script(token, FcmReply(error_code=error_code, **kwargs))

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if self._token_failures:
            failure = self._token_failures[0]
            failure.times -= 1
            if failure.times <= 0:
                self._token_failures.pop(0)
            return _oauth_error(failure.status, failure.error, "scripted failure")
        if form.get("grant_type") != GRANT_TYPE:
            return _oauth_error(400, "unsupported_grant_type", "Invalid grant_type")
        assertion = form.get("assertion")
        if not isinstance(assertion, str):
            return _oauth_error(400, "invalid_request", "Missing assertion")
        try:
            account = self.accounts[jwt.get_unverified_header(assertion).get("kid", "")]
            claims: dict[str, Any] = jwt.decode(
                assertion,
                account.public_key,
                algorithms=["RS256"],
                audience=self.token_uri,
                options={"require": ["iss", "aud", "iat", "exp", "scope"]},
            )
        except (KeyError, jwt.PyJWTError):
            return _oauth_error(400, "invalid_grant", "Invalid JWT Signature.")
        if claims["iss"] != account.info["client_email"] or SCOPE not in claims["scope"].split():
            return _oauth_error(400, "invalid_scope", "Invalid OAuth scope or ID token audience.")
        self.token_requests.append(claims)
        token = f"ya29.fake-{next(self._ids)}"
        self.issued.add(token)
        return web.json_response(
            {"access_token": token, "expires_in": self.token_lifetime, "token_type": "Bearer"}
        )

    async def _send(self, request: web.Request) -> web.StreamResponse:
        authorization = request.headers.get("Authorization", "")
        try:
            body = await request.json()
        except ValueError:
            body = None
        self.messages.append(
            {"project": request.match_info["project"], "authorization": authorization, "body": body}
        )
        if authorization.removeprefix("Bearer ") not in self.issued:
            return _error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
        if request.match_info["project"] != self.project_id:
            return _error(
                403, "PERMISSION_DENIED", "Permission 'cloudmessaging.messages.create' denied"
            )
        message = body.get("message") if isinstance(body, dict) else None
        problem = _invalid(message)
        if problem:
            return _error(400, "INVALID_ARGUMENT", problem, "INVALID_ARGUMENT")
        assert isinstance(message, dict)
        reply = self._reply_for(message["token"])
        if reply is None:
            return self._accepted()
        if reply.drop:
            assert request.transport is not None
            request.transport.close()
            return web.Response()  # never written: the connection is gone
        if reply.delay:
            await asyncio.sleep(reply.delay)
        headers = {"Retry-After": reply.retry_after} if reply.retry_after else {}
        if reply.raw is not None:
            return web.Response(
                status=reply.status or 502,
                text=reply.raw,
                headers=headers,
                content_type="text/html",
            )
        if reply.error_code is None:
            return self._accepted()
        status, rpc = ERRORS.get(reply.error_code, (500, "UNKNOWN"))
        return _error(
            reply.status or status, rpc, f"scripted {reply.error_code}", reply.error_code, headers
        )

    def _accepted(self) -> web.Response:
        return web.json_response(
            {"name": f"projects/{self.project_id}/messages/0:{next(self._ids)}%fake"}
        )

    def _reply_for(self, token: str) -> FcmReply | None:
        return take_scripted(self._scripts, token)


def _invalid(message: Any) -> str | None:
    if not isinstance(message, dict):
        return 'Invalid JSON payload received. Unknown name "message".'
    if not isinstance(message.get("token"), str) or not message["token"]:
        return "Recipient of the message is not set."
    data = message.get("data", {})
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        return "Invalid value at 'message.data': data values must be strings."
    return None


def _error(
    status: int,
    rpc_status: str,
    message: str,
    error_code: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    error: dict[str, Any] = {"code": status, "message": message, "status": rpc_status}
    if error_code:
        error["details"] = [{"@type": _FCM_ERROR_TYPE, "errorCode": error_code}]
    return web.json_response({"error": error}, status=status, headers=headers)


def _oauth_error(status: int, error: str, description: str) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=status)
