"""A local APNs: HTTP/2 over TLS on 127.0.0.1, built on asyncio and ``h2``.

It speaks the provider API as Apple documents it, closely enough for aioapns to be tested
unchanged:

* ``POST /3/device/<hex token>`` with ``apns-topic``, ``apns-id`` (echoed back, generated when
  absent) and ``authorization: bearer <ES256 JWT>``; the JWT is verified with the test key's
  public half (``iss`` = team id, ``kid`` = key id, ``iat`` under an hour old);
* ``200`` with ``apns-id``, or an error status with ``{"reason": ...}`` (and ``timestamp`` for
  410), sent as one DATA frame, as aioapns expects;
* no ALPN is required (aioapns offers none and speaks HTTP/2 straight after the handshake).

Tests script replies per device token (:meth:`FakeApnsServer.script`): an error reason, a delay,
or dropping the connection after accepting the request. Every request is recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RequestReceived,
    StreamEnded,
    StreamReset,
)
from h2.exceptions import H2Error

from tests.fakes.local_http import take_scripted
from tests.fakes.tls import ApnsKey, Pki

__all__ = ["STATUS_FOR_REASON", "ApnsReply", "ApnsRequest", "FakeApnsServer"]

#: Apple's documented status for each ``reason``.
STATUS_FOR_REASON: dict[str, int] = {
    "BadCollapseId": 400,
    "BadDeviceToken": 400,
    "BadExpirationDate": 400,
    "BadMessageId": 400,
    "BadPriority": 400,
    "BadTopic": 400,
    "DeviceTokenNotForTopic": 400,
    "DuplicateHeaders": 400,
    "IdleTimeout": 400,
    "InvalidPushType": 400,
    "MissingDeviceToken": 400,
    "MissingTopic": 400,
    "PayloadEmpty": 400,
    "TopicDisallowed": 400,
    "BadCertificate": 403,
    "BadCertificateEnvironment": 403,
    "ExpiredProviderToken": 403,
    "Forbidden": 403,
    "InvalidProviderToken": 403,
    "MissingProviderToken": 403,
    "BadPath": 404,
    "MethodNotAllowed": 405,
    "ExpiredToken": 410,
    "Unregistered": 410,
    "PayloadTooLarge": 413,
    "TooManyProviderTokenUpdates": 429,
    "TooManyRequests": 429,
    "InternalServerError": 500,
    "ServiceUnavailable": 503,
    "Shutdown": 503,
}

_TOKEN = re.compile(r"[0-9a-fA-F]{64,200}")
_MAX_PAYLOAD = 4096


@dataclass
class ApnsReply:
    """How to answer a scripted device token. ``times=None`` applies to every request."""

    reason: str | None = None
    status: int | None = None  # default: STATUS_FOR_REASON[reason], or 200
    delay: float = 0.0
    drop: bool = False  # close the connection instead of answering
    headers: dict[str, str] = field(default_factory=dict)
    times: int | None = None


@dataclass(frozen=True)
class ApnsRequest:
    token: str
    headers: dict[str, str]
    payload: Any
    claims: dict[str, Any] | None


class FakeApnsServer:
    def __init__(self, pki: Pki, key: ApnsKey, *, topics: tuple[str, ...] = ("com.example.app",)):
        self.pki = pki
        self.key = key
        self.topics = topics
        self.host = "127.0.0.1"
        self.port = 0
        self.requests: list[ApnsRequest] = []
        self.connections_made = 0
        self._scripts: dict[str, list[ApnsReply]] = {}
        self._server: asyncio.Server | None = None
        self._live: set[_ApnsConnection] = set()

    async def __aenter__(self) -> FakeApnsServer:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _ApnsConnection(self), self.host, 0, ssl=self.pki.server_context()
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for connection in list(self._live):
            connection.close()
        await self._server.wait_closed()
        # Let the closed TLS transports finish, so none is left for the garbage collector.
        for _ in range(50):
            if not self._live:
                break
            await asyncio.sleep(0.01)

    def script(self, token: str, reply: ApnsReply) -> None:
        """Answer requests for ``token`` with ``reply`` (replies queue up in order)."""
        self._scripts.setdefault(token.lower(), []).append(reply)

    def fail(self, token: str, reason: str, **kwargs: Any) -> None:
        self.script(token, ApnsReply(reason=reason, **kwargs))

    def _reply_for(self, token: str) -> ApnsReply | None:
        return take_scripted(self._scripts, token.lower())

    def answer(self, headers: dict[str, str], body: bytes) -> tuple[ApnsReply | None, str | None]:
        """Check one request as APNs would: ``(scripted reply, or None; error reason, or None)``."""
        path = headers.get(":path", "")
        token = path.removeprefix("/3/device/")
        claims = self._claims(headers.get("authorization"))
        try:
            payload = json.loads(body) if body else None
        except ValueError:
            payload = None
        self.requests.append(ApnsRequest(token, headers, payload, claims))
        if headers.get(":method") != "POST":
            return None, "MethodNotAllowed"
        if not path.startswith("/3/device/"):
            return None, "BadPath"
        if "authorization" not in headers:
            return None, "MissingProviderToken"
        if claims is None:
            return None, "InvalidProviderToken"
        if time.time() - claims["iat"] > 3600:
            return None, "ExpiredProviderToken"
        if not headers.get("apns-topic"):
            return None, "MissingTopic"
        if headers["apns-topic"] not in self.topics:
            return None, "TopicDisallowed"
        if not _TOKEN.fullmatch(token):
            return None, "BadDeviceToken"
        if not body:
            return None, "PayloadEmpty"
        if len(body) > _MAX_PAYLOAD:
            return None, "PayloadTooLarge"
        return self._reply_for(token), None

    def _claims(self, authorization: str | None) -> dict[str, Any] | None:
        if not authorization or not authorization.lower().startswith("bearer "):
            return None
        token = authorization[len("bearer ") :]
        try:
            header = jwt.get_unverified_header(token)
            claims: dict[str, Any] = jwt.decode(
                token,
                self.key.public_key,
                algorithms=["ES256"],
                options={"require": ["iss", "iat"], "verify_iat": False},
            )
        except jwt.PyJWTError:
            return None
        if header.get("kid") != self.key.key_id or claims["iss"] != self.key.team_id:
            return None
        return claims


class _ApnsConnection(asyncio.Protocol):
    """One client connection: an h2 server-side state machine fed from the TLS transport."""

    def __init__(self, server: FakeApnsServer) -> None:
        self.server = server
        self.h2 = H2Connection(H2Configuration(client_side=False, header_encoding="utf-8"))
        self.transport: asyncio.Transport | None = None
        self.requests: dict[int, tuple[dict[str, str], bytearray]] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.connections_made += 1
        self.server._live.add(self)
        self.h2.initiate_connection()
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._live.discard(self)
        for task in self.tasks:
            task.cancel()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def flush(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(self.h2.data_to_send())

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except H2Error:
            self.flush()
            self.close()
            return
        for event in events:
            if isinstance(event, RequestReceived):
                assert event.stream_id is not None
                assert event.headers is not None
                self.requests[event.stream_id] = (
                    {str(k): str(v) for k, v in event.headers},
                    bytearray(),
                )
            elif isinstance(event, DataReceived):
                assert event.stream_id is not None
                assert event.data is not None
                self.requests[event.stream_id][1].extend(event.data)
                self.h2.acknowledge_received_data(
                    event.flow_controlled_length or 0, event.stream_id
                )
            elif isinstance(event, StreamEnded):
                assert event.stream_id is not None
                self.on_request(event.stream_id)
            elif isinstance(event, StreamReset):
                self.requests.pop(event.stream_id or 0, None)
            elif isinstance(event, ConnectionTerminated):
                self.close()
        self.flush()

    def on_request(self, stream_id: int) -> None:
        headers, body = self.requests.pop(stream_id)
        reply, reason = self.server.answer(headers, bytes(body))
        apns_id = headers.get("apns-id") or str(uuid.uuid4()).upper()
        if reply is None:
            self.respond(stream_id, apns_id, reason, None, {})
            return
        if reply.drop:
            self.close()
            return
        status = reply.status or STATUS_FOR_REASON.get(reply.reason or "", 200)
        if reply.delay:
            task = asyncio.get_running_loop().create_task(
                self.respond_later(
                    reply.delay, stream_id, apns_id, reply.reason, status, reply.headers
                )
            )
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        else:
            self.respond(stream_id, apns_id, reply.reason, status, reply.headers)

    async def respond_later(
        self,
        delay: float,
        stream_id: int,
        apns_id: str,
        reason: str | None,
        status: int,
        headers: dict[str, str],
    ) -> None:
        await asyncio.sleep(delay)
        self.respond(stream_id, apns_id, reason, status, headers)
        self.flush()

    def respond(
        self,
        stream_id: int,
        apns_id: str,
        reason: str | None,
        status: int | None,
        extra: dict[str, str],
    ) -> None:
        if status is None:
            status = STATUS_FOR_REASON.get(reason or "", 200) if reason else 200
        headers = [(":status", str(status)), ("apns-id", apns_id), *extra.items()]
        # A stream the client reset (a send it gave up on) cannot be answered; that is fine.
        with contextlib.suppress(H2Error):
            if reason is None:
                self.h2.send_headers(stream_id, headers, end_stream=True)
                return
            body: dict[str, Any] = {"reason": reason}
            if status == 410:
                body["timestamp"] = int(time.time() * 1000)
            self.h2.send_headers(stream_id, [*headers, ("content-type", "application/json")])
            self.h2.send_data(stream_id, json.dumps(body).encode(), end_stream=True)
