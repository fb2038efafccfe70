"""Push notifications to Apple devices over APNs (HTTP/2), with aioapns and token authentication.

Channel options (``channels.push`` of a client)::

    provider: apns
    key_path: /run/secrets/AuthKey_ABC123DEFG.p8   # the .p8 signing key file, or
    key_env: ACME_APNS_KEY                         # the variable holding the key's PEM text
    key_id: ABC123DEFG                             # required: the key's id
    team_id: TEAM123456                            # required: the Apple developer team id
    topic: com.acme.app                            # required: the app's bundle id
    sandbox: false                                 # true: the development APNs (debug builds)
    max_connections: 2                             # HTTP/2 connections; each multiplexes sends
    timeout: 10                                    # seconds per send, connecting included
    host: 127.0.0.1                                # tests only: a local APNs stand-in ...
    port: 8443                                     # ... on this port (default 443) ...
    ca_file: /tmp/test-ca.pem                      # ... whose certificate this CA signed

The notification is ``{"aps": {"alert": {"title": subject, "body": body}, "sound": "default"}}``.
Extras shape it: ``data`` (a mapping merged at the top level, beside ``aps``), ``badge``,
``sound``, ``thread_id``, ``push_type`` (``alert`` by default; ``background`` sends a silent
``content-available`` push at priority 5), ``priority`` (10, 5 or 1), ``collapse_id`` and
``ttl`` (seconds APNs may store the notification while the device is offline).

Guarantees and failure modes:

* A ``200`` is reported as ``delivered`` (APNs accepted it; Apple never reports device delivery, so this is final),
  with the ``apns-id`` as the provider message id.
* ``410 Unregistered`` / ``ExpiredToken`` raise :class:`SuppressedError`: the token is no longer
  valid and must not be used again. Other 4xx reasons (``BadDeviceToken``,
  ``DeviceTokenNotForTopic``, ``PayloadTooLarge``, ...) raise :class:`PermanentError`.
  ``429``, ``5xx`` and reasons that a later attempt fixes (``ExpiredProviderToken``,
  ``IdleTimeout``) raise :class:`RetryableError`. The error code is Apple's ``reason``.
  APNs sends no ``Retry-After``, and aioapns would not expose it, so ``retry_after`` is unset.
* A refused, reset or dropped connection, or no answer within ``timeout``, raises
  :class:`RetryableError`. aioapns itself resends a request whose connection dropped
  (:data:`_CONNECTION_ATTEMPTS` tries in all), so a push whose acceptance was lost may arrive twice.

Why the protocol subclass: aioapns has no endpoint parameter. Its connection pool connects to
``protocol_class.APNS_SERVER:APNS_PORT``, class attributes of its protocol classes. Assigning
those on aioapns's classes would redirect every client in the process (all clients' transports,
and tests running beside each other), so each transport builds its own subclass carrying its
endpoint and assigns it to its own pool. The subclass also repairs two aioapns gaps: it has no
request timeout, and a send abandoned by a timeout or cancellation leaves its future behind,
which aioapns later resolves again (``InvalidStateError`` inside the protocol callback) and whose
HTTP/2 stream slot it never frees. The subclass forgets such a send, resets its stream and frees
the slot. When a stream ends it also drops aioapns's per-stream bookkeeping (kept forever for
successful sends), and settles a send answered with an error status but no JSON ``reason``
(aioapns would leave it waiting until the timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import ssl
import uuid
from collections.abc import Mapping
from typing import Any, Final, cast

from aioapns import APNs, NotificationRequest, PushType
from aioapns.common import NotificationResult
from aioapns.connection import APNsTLSClientProtocol
from aioapns.exceptions import ConnectionClosed, MaxAttemptsExceeded
from aioapns.exceptions import ConnectionError as ApnsConnectionError
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from h2.errors import ErrorCodes
from h2.exceptions import H2Error

from switchboard.errors import ConfigError
from transports.base import OutboundMessage, SendResult, final_check
from transports.errors import PermanentError, RetryableError, SuppressedError, TransportError

__all__ = ["ApnsTransport", "build_request", "classify"]

PRODUCTION_HOST: Final = "api.push.apple.com"
SANDBOX_HOST: Final = "api.sandbox.push.apple.com"
#: Connection attempts aioapns makes per send. It pauses a second after a failed connect; a
#: dropped connection is retried at once, on a new one.
_CONNECTION_ATTEMPTS: Final = 2
_DEVICE_TOKEN: Final = re.compile(r"[0-9a-fA-F]{64,200}")
_SUPPRESSED: Final = frozenset({"Unregistered", "ExpiredToken"})
_RETRYABLE: Final = frozenset(
    {
        "TooManyRequests",
        "TooManyProviderTokenUpdates",
        "InternalServerError",
        "ServiceUnavailable",
        "Shutdown",
        "ExpiredProviderToken",
        "IdleTimeout",
    }
)
_PRIORITIES: Final = {10: 10, 5: 5, 1: 1, "10": 10, "5": 5, "1": 1, "high": 10, "normal": 5}


def build_request(message: OutboundMessage) -> NotificationRequest:
    """The aioapns request for one message. Pure; raises PermanentError for unusable input."""
    token = message.to.strip()
    if not _DEVICE_TOKEN.fullmatch(token):
        raise PermanentError(
            "not an APNs device token (64 or more hex digits)", code="BadDeviceToken"
        )
    extras = message.extras
    push_type = _push_type(extras.get("push_type", "alert"))
    aps: dict[str, Any] = {}
    if push_type is PushType.BACKGROUND:
        # Apple drops a background push that carries an alert, sound or badge.
        aps["content-available"] = 1
    else:
        alert = {k: v for k, v in (("title", message.subject), ("body", message.body)) if v}
        if not alert:
            raise PermanentError("a push needs a title or a body", code="empty-push")
        aps["alert"] = alert
        aps["sound"] = _text(extras, "sound") or "default"
        badge = extras.get("badge")
        if badge is not None:
            if not isinstance(badge, int) or isinstance(badge, bool) or badge < 0:
                raise _bad_extra("badge", "a whole number, 0 or more")
            aps["badge"] = badge
    thread_id = _text(extras, "thread_id")
    if thread_id:
        aps["thread-id"] = thread_id
    payload: dict[str, Any] = {}
    data = extras.get("data")
    if data is not None:
        if not isinstance(data, Mapping) or not all(isinstance(k, str) for k in data):
            raise _bad_extra("data", "a mapping with string keys")
        if "aps" in data:
            raise _bad_extra(
                "data", "a mapping without an `aps` key (it is built from the message)"
            )
        payload.update(data)
    payload["aps"] = aps
    return NotificationRequest(
        device_token=token.lower(),
        message=payload,
        notification_id=str(uuid.uuid4()),
        time_to_live=_ttl(extras.get("ttl")),
        priority=_priority(extras.get("priority"), push_type),
        collapse_key=_collapse_id(extras.get("collapse_id")),
        push_type=push_type,
    )


def classify(status: str, reason: str | None) -> TransportError:
    """The error for an APNs answer other than 200 (``status`` as aioapns gives it: a string)."""
    code = reason or f"http-{status}"
    text = f"APNs {status} {code}"
    if reason in _SUPPRESSED:
        return SuppressedError(f"{text}: the device token is no longer valid", code=code)
    if reason in _RETRYABLE or status == "429" or status.startswith("5"):
        return RetryableError(text, code=code)
    return PermanentError(text, code=code)


class ApnsTransport:
    name = "apns"

    def __init__(self, options: Mapping[str, Any]) -> None:
        missing = [k for k in ("key_id", "team_id", "topic") if not options.get(k)]
        if missing:
            raise ConfigError(f"push over apns needs {', '.join(missing)}")
        self.key_id = str(options["key_id"])
        self.team_id = str(options["team_id"])
        self.topic = str(options["topic"])
        self._key = _load_key(options)
        self.sandbox = bool(options.get("sandbox", False))
        self.host = str(options.get("host") or (SANDBOX_HOST if self.sandbox else PRODUCTION_HOST))
        self.port = int(options.get("port", 443))
        ca_file = options.get("ca_file")
        self.ca_file = str(ca_file) if ca_file else None
        self.max_connections = int(options.get("max_connections", 2))
        self.timeout = float(options.get("timeout", 10))
        self._client: APNs | None = None

    def _ensure_client(self) -> APNs:
        # Built on first use: aioapns binds the pool to the loop current at construction.
        if self._client is None:
            client = APNs(
                key=self._key,
                key_id=self.key_id,
                team_id=self.team_id,
                topic=self.topic,
                use_sandbox=self.sandbox,
                max_connections=self.max_connections,
                max_connection_attempts=_CONNECTION_ATTEMPTS,
                ssl_context=ssl.create_default_context(cafile=self.ca_file),
                err_func=_ignore,  # failures are raised, classified, and reported by the caller
            )
            client.pool.protocol_class = _endpoint_protocol(self.host, self.port)
            self._client = client
        return self._client

    async def send(self, message: OutboundMessage) -> SendResult:
        request = build_request(message)
        client = self._ensure_client()
        await final_check(message)
        try:
            async with asyncio.timeout(self.timeout):
                result = await client.send_notification(request)
        except TimeoutError:
            raise RetryableError(
                f"APNs did not answer within {self.timeout:g}s", code="apns-timeout"
            ) from None
        except (MaxAttemptsExceeded, ApnsConnectionError, ConnectionClosed, OSError) as exc:
            raise RetryableError(
                f"cannot reach APNs at {self.host}:{self.port} ({type(exc).__name__})",
                code="apns-connection",
            ) from None
        if not result.is_successful:
            raise classify(result.status, result.description)
        # APNs reports no device receipts: its acceptance is the last word, so it is final.
        return SendResult(
            result.notification_id,
            "delivered",
            {"receipt": "accepted by APNs; device delivery is not reported"},
        )

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        client.pool.close()
        # close() only starts the TLS shutdowns; wait (briefly) for the pool to see them end, so
        # no transport outlives the loop. A lost connection removes itself from the pool.
        for _ in range(100):
            if not client.pool.connections:
                break
            await asyncio.sleep(0.01)


class _EndpointProtocol(APNsTLSClientProtocol):
    """aioapns's client protocol, safe for sends abandoned by a timeout or a cancellation."""

    async def send_notification(self, request: NotificationRequest) -> NotificationResult:
        try:
            return await super().send_notification(request)
        except asyncio.CancelledError:
            self._abandon(request.notification_id)
            raise

    def _abandon(self, notification_id: str) -> None:
        self.requests.pop(notification_id, None)
        self.request_statuses.pop(notification_id, None)
        open_streams = [s for s, n in self.request_streams.items() if n == notification_id]
        for stream_id in open_streams:
            del self.request_streams[stream_id]
            # The answer may still come; resetting the stream tells the server not to bother,
            # and h2 then ignores it. aioapns frees a slot only when a stream ends: free it here.
            with contextlib.suppress(H2Error):
                self.conn.reset_stream(stream_id, ErrorCodes.CANCEL)
            self.free_channels.release()
        if open_streams and self.transport is not None and not self.transport.is_closing():
            self.flush()

    def on_stream_ended(self, stream_id: int) -> None:
        notification_id = self.request_streams.pop(stream_id, None)
        status = self.request_statuses.pop(notification_id or "", None)
        pending = self.requests.pop(notification_id or "", None)
        if pending is not None and status is not None and not pending.done():
            # An error status without a JSON reason (a proxy's bare 502, say): aioapns resolves
            # a failure only from its body, and would leave this send waiting until it times out.
            pending.set_result(NotificationResult(notification_id or "", status))
        super().on_stream_ended(stream_id)


def _endpoint_protocol(host: str, port: int) -> type[APNsTLSClientProtocol]:
    """A protocol class of this transport's own, carrying its endpoint (see the module doc)."""
    return cast(
        type[APNsTLSClientProtocol],
        type(
            "ApnsEndpointProtocol", (_EndpointProtocol,), {"APNS_SERVER": host, "APNS_PORT": port}
        ),
    )


async def _ignore(request: NotificationRequest, result: NotificationResult) -> None:
    return None


def _load_key(options: Mapping[str, Any]) -> str:
    key_path, key_env = options.get("key_path"), options.get("key_env")
    if bool(key_path) == bool(key_env):
        raise ConfigError("push over apns needs exactly one of key_path and key_env")
    if key_path:
        try:
            with open(str(key_path), encoding="ascii") as file:
                pem = file.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"apns key_path {key_path}: cannot read it ({exc})") from None
        where = f"key_path {key_path}"
    else:
        pem = os.environ.get(str(key_env), "")
        if not pem:
            raise ConfigError(f"apns key_env names {key_env}, which is not set")
        where = f"key_env {key_env}"
    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError):
        raise ConfigError(f"apns {where}: not an unencrypted PEM private key (.p8)") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ConfigError(f"apns {where}: an APNs auth key is a P-256 (ES256) key")
    return pem


def _bad_extra(name: str, expected: str) -> PermanentError:
    return PermanentError(f"extras.{name}: must be {expected}", code="bad-extras")


def _text(extras: Mapping[str, Any], name: str) -> str | None:
    value = extras.get(name)
    if value is not None and not isinstance(value, str):
        raise _bad_extra(name, "a string")
    return value


def _push_type(value: Any) -> PushType:
    try:
        return PushType(value)
    except ValueError:
        kinds = ", ".join(t.value for t in PushType)
        raise _bad_extra("push_type", f"one of {kinds}") from None


def _priority(value: Any, push_type: PushType) -> int | None:
    if value is None:
        return 5 if push_type is PushType.BACKGROUND else None  # None: APNs's default, 10
    try:
        return _PRIORITIES[value]
    except (KeyError, TypeError):
        raise _bad_extra("priority", "10 (immediately), 5 (power-considerate) or 1") from None


def _ttl(value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _bad_extra("ttl", "a whole number of seconds, 0 or more")
    return value


def _collapse_id(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value.encode()) <= 64:
        raise _bad_extra("collapse_id", "a string of at most 64 bytes")
    return value
