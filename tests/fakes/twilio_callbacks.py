"""A lean Twilio Messages API that reports every message ``delivered`` at once, for load and
crash tests: Twilio behind a load balancer in front of several workers.

:class:`DeliveringTwilioServer` answers ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json``
as the official ``twilio`` SDK sends it (form-encoded, HTTP Basic auth with the account SID and
auth token) with ``201`` and a MessageInstance JSON body (``sid``, status ``queued``, ...), and
records the create (:class:`Create`: ``To``, ``Body``, the ``StatusCallback`` URL and the
delivery key ``d``, attempt ``a`` and client ``c`` of its query). It keeps none of the checks
and scripts of :class:`~tests.fakes.twilio_server.FakeTwilioServer`, so it serves a few hundred
requests a second.

Each create is answered :attr:`latency` seconds after it arrived (0 by default; a real
Twilio takes a tenth of a second or so, which is what keeps sends in flight). As it answers, it
posts the message's status callback (``MessageStatus=delivered`` by default),
with the parameters Twilio sends for Messages (``AccountSid``, ``From``, ``To``, ``ApiVersion``,
``MessageSid``, ``SmsSid``, ``MessageStatus``, ``SmsStatus``) and ``X-Twilio-Signature`` computed
over the **public** ``StatusCallback`` URL as given. The request itself goes to one of the
targets (the workers' base URLs, :meth:`set_targets`), round-robin like a load balancer: the public URL's
scheme, host and port are replaced by the target's, and the raw path and query are kept byte for
byte. A callback answered 5xx, or whose connection fails (a worker stopping or dead), is tried
again on the next target after a short backoff (0.2 s, 0.5 s, 1 s, then every 2 s) until it is
answered 2xx/4xx or :attr:`deadline` seconds have passed (each retry goes to the target after
the one it last tried). Each :class:`Callback` keeps its final
answer and every try.

Thread safety: the server runs in its own loop (use it with
:class:`~tests.fakes.background.BackgroundServer`); every read for the test thread
(:meth:`creates`, :meth:`callbacks`, :meth:`duplicates`, :meth:`final_answers`, :meth:`pending`,
...) takes a lock and returns a copy, so it may be called from any thread directly, as may
:meth:`set_targets`::

    with BackgroundServer(DeliveringTwilioServer) as twilio:
        options = {"api_base": twilio.url, ...}
        twilio.fake.set_targets([worker_a.url, worker_b.url])
        ...
        twilio.fake.wait_idle(120)
        assert twilio.fake.duplicates() == {}
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import secrets
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Self
from urllib.parse import parse_qs, urlsplit

import aiohttp
from aiohttp import web
from twilio.request_validator import RequestValidator
from yarl import URL

from tests.fakes.local_http import serve
from tests.fakes.twilio_server import API_VERSION, TEST_ACCOUNT_SID, TEST_AUTH_TOKEN

__all__ = ["RETRY_DELAYS", "Callback", "Create", "DeliveringTwilioServer"]

#: Seconds between the tries of one callback; the last one repeats.
RETRY_DELAYS: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0)
_PATH = "/2010-04-01/Accounts/{account_sid}/Messages.json"


@dataclass(frozen=True, slots=True)
class Create:
    """One ``Messages.json`` create as received (recorded before it is answered)."""

    sid: str
    to: str
    body: str
    sender: str
    #: The ``StatusCallback`` URL exactly as sent (None when there was none).
    status_callback: str | None
    #: From the callback URL's query: the delivery key ``<session>/<index>/<channel>``, the
    #: attempt and the client id (None when absent).
    delivery: str | None
    attempt: str | None
    client: str | None
    authorized: bool
    #: ``time.monotonic()`` when it arrived.
    at: float

    @property
    def send_key(self) -> tuple[str, str] | None:
        """``(d, a)``: two creates with the same key are the same message sent twice."""
        if self.delivery is None or self.attempt is None:
            return None
        return (self.delivery, self.attempt)

    @property
    def session_id(self) -> str | None:
        return self.delivery.split("/", 1)[0] if self.delivery else None


@dataclass(slots=True)
class Callback:
    """The status callback of one created message, and what became of it."""

    sid: str
    delivery: str | None
    attempt: str | None
    #: The public URL it was signed for.
    url: str
    status: str
    #: Every try: (the target's base URL, its HTTP status or the error's name, and
    #: ``time.monotonic()`` when it was answered).
    tries: list[tuple[str, int | str, float]] = field(default_factory=list)
    #: The answer that ended it (2xx or 4xx); None while it is tried, or when it was given up.
    final: int | None = None
    #: Why it was given up (the deadline passed, no target), else None.
    gave_up: str | None = None
    done: bool = False

    def copy(self) -> Callback:
        return Callback(
            self.sid,
            self.delivery,
            self.attempt,
            self.url,
            self.status,
            list(self.tries),
            self.final,
            self.gave_up,
            self.done,
        )


class DeliveringTwilioServer:
    """Twilio's Messages API on loopback, calling every message back (see the module docs)."""

    def __init__(
        self,
        account_sid: str = TEST_ACCOUNT_SID,
        auth_token: str = TEST_AUTH_TOKEN,
        *,
        targets: Sequence[str] = (),
        status: str = "delivered",
        deadline: float = 120.0,
        request_timeout: float = 10.0,
        latency: float = 0.0,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        #: The MessageStatus every callback reports.
        self.status = status
        #: Seconds after which a callback that was never answered 2xx/4xx is given up.
        self.deadline = deadline
        self.request_timeout = request_timeout
        #: Seconds each create is answered after it arrived (the callback follows the answer).
        self.latency = latency
        self.base_url = ""
        self._validator = RequestValidator(auth_token)
        self._lock = threading.Lock()
        self._targets: list[str] = [t.rstrip("/") for t in targets]
        self._turn = itertools.count()
        self._creates: list[Create] = []
        self._callbacks: list[Callback] = []
        self._tries: Counter[int | str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> Self:
        app = web.Application()
        app.router.add_post(_PATH, self._handle)
        self._runner, self.base_url = await serve(app)
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=64),
            timeout=aiohttp.ClientTimeout(total=self.request_timeout),
        )
        return self

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- the test's side (any thread) --------------------------------------------------------

    def set_targets(self, urls: Sequence[str]) -> None:
        """Where callbacks go (the workers' base URLs), round-robin."""
        with self._lock:
            self._targets = [u.rstrip("/") for u in urls]

    def creates(self) -> list[Create]:
        with self._lock:
            return list(self._creates)

    def callbacks(self) -> list[Callback]:
        with self._lock:
            return [c.copy() for c in self._callbacks]

    def duplicates(self) -> dict[tuple[str, str], int]:
        """``(d, a)`` -> number of creates, for each message created more than once."""
        counts = Counter(c.send_key for c in self.creates() if c.send_key is not None)
        return {key: n for key, n in counts.items() if n > 1}

    def final_answers(self) -> Counter[int | str]:
        """How the callbacks ended: by final HTTP status, ``gave-up`` or ``pending``."""
        out: Counter[int | str] = Counter()
        for c in self.callbacks():
            out[c.final if c.final is not None else ("gave-up" if c.done else "pending")] += 1
        return out

    def tries(self) -> Counter[int | str]:
        """Every try of every callback, by HTTP status or error name."""
        with self._lock:
            return Counter(self._tries)

    def pending(self) -> int:
        with self._lock:
            return sum(1 for c in self._callbacks if not c.done)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no callback is being tried; whether that happened within ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.pending():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def summary(self) -> str:
        dupes = self.duplicates()
        return (
            f"{len(self.creates())} creates, {sum(n - 1 for n in dupes.values())} duplicate sends "
            f"({len(dupes)} messages), callbacks ended {dict(self.final_answers())}, "
            f"tries {dict(self.tries())}"
        )

    # -- the API -----------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        text = {k: v for k, v in form.items() if isinstance(v, str)}
        to, sender = text.get("To", ""), text.get("From", "")
        callback = text.get("StatusCallback")
        query = parse_qs(urlsplit(callback).query) if callback else {}
        authorized = self._authorized(request.headers.get("Authorization"))
        sid = "SM" + secrets.token_hex(16)
        create = Create(
            sid=sid,
            to=to,
            body=text.get("Body", ""),
            sender=sender,
            status_callback=callback,
            delivery=query.get("d", [None])[0],
            attempt=query.get("a", [None])[0],
            client=query.get("c", [None])[0],
            authorized=authorized,
            at=time.monotonic(),
        )
        with self._lock:
            self._creates.append(create)
        if not authorized:
            return web.json_response(
                {
                    "code": 20003,
                    "message": "Authenticate",
                    "status": 401,
                    "more_info": "https://www.twilio.com/docs/errors/20003",
                },
                status=401,
            )
        if request.match_info["account_sid"] != self.account_sid or not to:
            return web.json_response(
                {"code": 20404, "message": "Not found", "status": 404}, status=404
            )
        if callback:
            # Accepted: the callback comes even if the client hangs up before the answer.
            task = asyncio.get_running_loop().create_task(self._call_back(create, callback))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        now = formatdate(usegmt=True)
        return web.json_response(
            {
                "sid": sid,
                "account_sid": self.account_sid,
                "api_version": API_VERSION,
                "body": create.body,
                "date_created": now,
                "date_updated": now,
                "date_sent": None,
                "direction": "outbound-api",
                "error_code": None,
                "error_message": None,
                "from": sender,
                "messaging_service_sid": None,
                "num_media": "0",
                "num_segments": "1",
                "price": None,
                "price_unit": "USD",
                "status": "queued",
                "to": to,
                "uri": f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{sid}.json",
                "subresource_uris": {
                    "media": f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{sid}/Media.json"
                },
            },
            status=201,
        )

    def _authorized(self, header: str | None) -> bool:
        try:
            auth = aiohttp.BasicAuth.decode(header) if header else None
        except ValueError:
            return False
        return (
            auth is not None
            and auth.login == self.account_sid
            and hmac.compare_digest(auth.password.encode(), self.auth_token.encode())
        )

    # -- status callbacks --------------------------------------------------------------------

    async def _call_back(self, create: Create, url: str) -> None:
        record = Callback(create.sid, create.delivery, create.attempt, url, self.status)
        with self._lock:
            self._callbacks.append(record)
        params = {
            "AccountSid": self.account_sid,
            "From": create.sender,
            "To": create.to,
            "ApiVersion": API_VERSION,
            "MessageSid": create.sid,
            "SmsSid": create.sid,
            "MessageStatus": self.status,
            "SmsStatus": self.status,
        }
        headers = {
            "X-Twilio-Signature": self._validator.compute_signature(url, params),
            "User-Agent": "TwilioProxy/1.1",
        }
        if self.latency > 0:
            await asyncio.sleep(self.latency)  # right after the answer
        parts = urlsplit(url)
        path_and_query = url[len(parts.scheme) + 3 + len(parts.netloc) :] or "/"
        give_up_at = time.monotonic() + self.deadline
        tries = 0
        turn: int | None = None
        try:
            while True:
                with self._lock:
                    targets = list(self._targets)
                    # The first try goes to the next target in turn, each retry to the one after
                    # the target it last tried.
                    turn = next(self._turn) if turn is None else turn + 1
                if not targets:
                    record.gave_up = "no targets configured"
                    return
                target = targets[turn % len(targets)]
                outcome = await self._post(target + path_and_query, params, headers)
                with self._lock:
                    record.tries.append((target, outcome, time.monotonic()))
                    self._tries[outcome] += 1
                if isinstance(outcome, int) and outcome < 500:
                    record.final = outcome
                    return
                if time.monotonic() >= give_up_at:
                    record.gave_up = f"no 2xx/4xx within {self.deadline:g}s (last: {outcome})"
                    return
                await asyncio.sleep(RETRY_DELAYS[min(tries, len(RETRY_DELAYS) - 1)])
                tries += 1
        finally:
            with self._lock:
                record.done = True

    async def _post(self, url: str, params: dict[str, str], headers: dict[str, str]) -> int | str:
        assert self._session is not None
        try:
            # encoded=True: the path and query exactly as signed, as Twilio calls them.
            async with self._session.post(
                URL(url, encoded=True), data=params, headers=headers
            ) as response:
                await response.read()
                return response.status
        except Exception as exc:  # refused, reset, timed out...: an outcome, never a dead task
            return type(exc).__name__
