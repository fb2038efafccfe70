"""Run an asyncio fake provider server in a background thread, for synchronous tests.

The fakes in this package (:class:`~tests.fakes.twilio_server.FakeTwilioServer`,
:class:`~tests.fakes.apns_server.FakeApnsServer`, :class:`~tests.fakes.fcm_server.FakeFcmServer`,
:class:`~tests.fakes.slack_server.FakeSlackServer`) live inside a running event loop. End-to-end
tests are synchronous and the worker under test is another process, so a
:class:`BackgroundServer` gives the fake a thread and an event loop of its own::

    with BackgroundServer(FakeTwilioServer) as twilio:
        options = {"api_base": twilio.url, ...}             # known once started
        twilio.script(Behaviour.error(400, 21610), to=number)  # runs in the server's loop
        sent = twilio.wait_records(lambda r: r.to == number)   # a copy, taken in the loop

Threading rules: the fake object is only ever touched from its loop's thread.
:meth:`~BackgroundServer.call` runs a function (or awaits a coroutine) there and returns its
result to the caller; :meth:`~BackgroundServer.records` copies a list of recorded requests
there, so the caller gets a consistent snapshot and never iterates a list the server appends to.
Anything that escapes to the loop's exception handler (a handler crashing, say) is kept in
:attr:`~BackgroundServer.loop_errors`, so a test can assert the fake itself stayed healthy.

The fake is built and entered inside its loop (``async with`` when it has ``__aenter__``, else
``start()`` / ``close()``), because some fakes bind loop-owned objects when constructed.
:meth:`~BackgroundServer.stop` exits it there, cancels whatever tasks remain, closes the loop
and joins the thread; it is idempotent and also runs on ``__exit__``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Generic, Self, TypeVar, cast
from urllib.parse import urlsplit

__all__ = ["BackgroundServer"]

T = TypeVar("T")
R = TypeVar("R")


class BackgroundServer(Generic[T]):
    """A fake provider server running in its own thread and event loop (see the module docs).

    Arguments:
        factory: builds the fake (called in the server's thread, inside its running loop).
        name: the thread's name, for debugging.
        timeout: default seconds to wait for a cross-thread call before giving up.
    """

    def __init__(
        self, factory: Callable[[], T], *, name: str | None = None, timeout: float = 30.0
    ) -> None:
        self._factory = factory
        self._name = name or f"fake-{getattr(factory, '__name__', 'server')}"
        self.timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._fake: T | None = None
        self._exit: contextlib.AsyncExitStack | None = None
        self._lock = threading.Lock()
        #: Contexts given to the loop's exception handler (errors nobody awaited).
        self.loop_errors: list[dict[str, Any]] = []

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        """Start the loop thread, build and start the fake; return when it is serving."""
        with self._lock:
            if self._thread is not None:
                raise RuntimeError(f"{self._name} is already started")
            loop = asyncio.new_event_loop()
            loop.set_exception_handler(self._on_loop_error)
            ready = threading.Event()
            self._loop = loop
            self._thread = threading.Thread(
                target=self._run, args=(loop, ready), name=self._name, daemon=True
            )
            self._thread.start()
        ready.wait(self.timeout)
        try:
            self._fake = self._submit(self._enter(), self.timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop the fake, cancel its leftover tasks, close the loop and join the thread."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        wait = self.timeout if timeout is None else timeout
        if not loop.is_closed() and loop.is_running():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(wait)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(wait)
        if thread.is_alive():
            raise RuntimeError(f"{self._name}: its loop did not stop within {wait:g}s")
        loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._loop is not None and self._fake is not None

    # -- the fake and its address ------------------------------------------------------------

    @property
    def fake(self) -> T:
        """The fake itself. Read its fixed attributes freely; change it only through :meth:`call`."""
        if self._fake is None:
            raise RuntimeError(f"{self._name} is not started")
        return self._fake

    @property
    def url(self) -> str:
        """The fake's base URL: its ``base_url`` or ``url``, else ``https://host:port``."""
        fake: Any = self.fake
        for attribute in ("base_url", "url"):
            value = getattr(fake, attribute, None)
            if isinstance(value, str) and value:
                return value.rstrip("/")
        return f"https://{self.host}:{self.port}"

    @property
    def host(self) -> str:
        fake: Any = self.fake
        host = getattr(fake, "host", None)
        return host if isinstance(host, str) and host else urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        fake: Any = self.fake
        port = getattr(fake, "port", None)
        if isinstance(port, int) and port:
            return port
        parsed = urlsplit(self.url).port
        if parsed is None:
            raise RuntimeError(f"{self._name}: the fake exposes no port")
        return parsed

    # -- crossing into the loop --------------------------------------------------------------

    def call(
        self, fn: Callable[..., Any], *args: Any, timeout: float | None = None, **kwargs: Any
    ) -> Any:
        """Run ``fn(*args, **kwargs)`` in the server's loop thread and return its result.

        A coroutine function (or a function returning an awaitable) is awaited there, so
        ``server.call(fake.send_status_callback, sid, "delivered")`` works as well as
        ``server.call(fake.script, ...)``. Exceptions are raised in the caller.
        """

        async def invoke() -> Any:
            result = fn(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            return result

        return self._submit(invoke(), self.timeout if timeout is None else timeout)

    def script(self, *args: Any, **kwargs: Any) -> Any:
        """The fake's own ``script(...)``, run in its loop (a delay, an error, a drop...)."""
        return self.call(cast(Any, self.fake).script, *args, **kwargs)

    def records(
        self, attribute: str = "requests", predicate: Callable[[Any], bool] | None = None
    ) -> list[Any]:
        """A copy of the fake's list ``attribute`` (``requests``, ``messages``, ``posts``...),
        taken in its loop; only the items matching ``predicate`` when one is given."""

        def snapshot() -> list[Any]:
            items = list(getattr(self.fake, attribute))
            return [r for r in items if predicate(r)] if predicate is not None else items

        result: list[Any] = self.call(snapshot)
        return result

    def wait_records(
        self,
        predicate: Callable[[Any], bool] | None = None,
        count: int = 1,
        *,
        attribute: str = "requests",
        timeout: float = 60.0,
        interval: float = 0.05,
    ) -> list[Any]:
        """Wait until ``attribute`` holds at least ``count`` items matching ``predicate``;
        return them (all the matching ones, in arrival order)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.records(attribute, predicate)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self._name}: {len(found)} of {count} matching {attribute} after "
                    f"{timeout:g}s; loop errors: {self.loop_errors[:3]}"
                )
            time.sleep(interval)

    # -- internals ---------------------------------------------------------------------------

    def _run(self, loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
        finally:
            # Whatever is still pending (a scripted delay nobody waits for) is cancelled and
            # given the chance to finish, so nothing is destroyed pending.
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            asyncio.set_event_loop(None)

    async def _enter(self) -> T:
        stack = contextlib.AsyncExitStack()
        fake: Any = self._factory()
        if hasattr(fake, "__aenter__"):
            entered = await stack.enter_async_context(fake)
            fake = entered if entered is not None else fake
        else:
            started = fake.start()
            if inspect.isawaitable(started):
                await started
            stack.push_async_callback(_close, fake)
        self._exit = stack
        return cast(T, fake)

    async def _shutdown(self) -> None:
        stack, self._exit = self._exit, None
        self._fake = None
        if stack is not None:
            await stack.aclose()

    def _submit(self, coroutine: Awaitable[R], timeout: float) -> R:
        loop = self._loop
        if loop is None:
            if inspect.iscoroutine(coroutine):
                coroutine.close()
            raise RuntimeError(f"{self._name} is not running")
        future = asyncio.run_coroutine_threadsafe(_as_coroutine(coroutine), loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise TimeoutError(
                f"{self._name}: no answer from its loop within {timeout:g}s"
            ) from None

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        self.loop_errors.append(context)
        loop.default_exception_handler(context)


async def _as_coroutine(awaitable: Awaitable[R]) -> R:
    return await awaitable


async def _close(fake: Any) -> None:
    closed = fake.close() if hasattr(fake, "close") else None
    if inspect.isawaitable(closed):
        await closed
