"""Dispatch agents: one per channel, ``<prefix>.dispatch.<channel>`` → provider → reports.

Each agent runs with Faust concurrency 1 and overlaps up to ``SWITCHBOARD_MAX_IN_FLIGHT``
provider calls itself, acknowledging jobs strictly in offset order (``streams/inflight.py``),
so an offset is never committed past a send that has not finished.

For each job:

1. a cancelled session's job is reported ``cancelled`` and not sent (the session table is on
   this worker: every topic is keyed by session id and co-partitioned);
2. the job's send (its delivery and attempt) is *claimed* before anything else: a copy of the
   job already being sent on this worker is dropped (two copies in flight never both reach the
   provider), and the claim is written to the ``sends`` table before the provider call;
3. a send whose outcome the ``sends`` table already has is not made again: its report (and its
   retry) are produced again instead, since the worker that recorded it may have died before
   they reached Kafka; both are idempotent where they land;
4. the client's transport for the channel sends it, within ``SWITCHBOARD_SEND_DEADLINE``;
5. the outcome is reported (``sent``, and ``delivered`` when the acceptance is the delivery; or
   ``failed`` with the error's class) and recorded in ``sends``.

A :class:`~switchboard.records.PurgeSends` (one in every partition, once a session's retention
has passed) deletes the session's ``sends`` rows in the partition (``streams/retention.py``).

At least once, and how often more: a claim without an outcome means a worker stopped or died
between claiming and recording the send, so the provider may or may not have the message. It is
sent again, its status event says ``detail.in_doubt: true``, and
``switchboard_sends_in_doubt_total`` counts it. A crash can therefore duplicate at most the sends
in flight on the dead worker (up to ``SWITCHBOARD_MAX_IN_FLIGHT`` per channel) whose outcome had
not reached the changelog; a clean stop (SIGTERM) duplicates none, since it lets in-flight sends
finish and records them first.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any, Final, cast
from urllib.parse import urlencode

from faust import Stream
from faust.types import EventT, StreamT

from streams.app import Switchboard
from streams.checkpoint import put_now
from streams.guard import hand_off, quarantine
from streams.inflight import run_overlapped
from streams.retention import purge_sends
from streams.sessions import dispatch_or_defer
from streams.tablestore import read_row
from switchboard import deadline, jsonbytes, optout, records, unsubscribe
from switchboard.errors import ConfigError
from switchboard.fanout import dispatch_key
from switchboard.keys import batch_part_row, batch_row, fence_row, job_timer, send_row
from switchboard.records import DispatchJob, Fence, JobBatch, PurgeSends, Report
from switchboard.retry import next_attempt_of_session
from switchboard.status import Status
from switchboard.windows import NoCommonOpening, delivery_release
from transports.base import OutboundMessage, SendResult, Transport
from transports.errors import RetryableError, TransportError, Withdrawn

__all__ = ["register"]

log = logging.getLogger(__name__)


def register(sb: Switchboard) -> None:
    if sb.settings.public_url is not None and sb.settings.unsubscribe_links is None:
        log.warning(
            "bulk email goes without List-Unsubscribe: SWITCHBOARD_UNSUBSCRIBE_SECRET is not set"
        )
    for channel, topic in sb.topics.dispatch.items():
        if channel in sb.settings.paused:
            log.warning(
                "dispatch paused: jobs wait in Kafka",
                extra={"channel": channel, "topic": topic.get_topic_name()},
            )
            continue
        _register_lane(sb, f"dispatch.{channel}", topic, partial(_handle, sb))
    # The high-priority lane: one topic and one agent for the jobs of every channel, so a
    # one-time password never waits behind a campaign's jobs (``options.priority``).
    _register_lane(
        sb, "dispatch.priority", sb.topics.priority_dispatch, partial(_handle_priority, sb)
    )


#: What a dispatcher handles: the event, and its decoded record (a batch, or a job or fence).
Item = tuple[EventT[bytes], JobBatch | dict[str, Any]]


def _prepare(event: EventT[bytes]) -> tuple[Item, int]:
    """Decode ``event`` once, and weigh it by its jobs (``run_overlapped`` bounds sends)."""
    body = jsonbytes.loads(event.value)
    if isinstance(body, dict) and body.get("kind") == JobBatch.KIND:
        batch = JobBatch.decode(body)
        return (event, batch), len(batch.jobs)
    return (event, body), 1


def _register_lane(
    sb: Switchboard, stage: str, topic: Any, handle: Callable[[Item], Awaitable[None]]
) -> None:
    async def dispatcher(stream: StreamT[bytes]) -> None:
        await sb.clients.ready.wait()
        await sb.optouts.ready.wait()
        await sb.manager_state.ready.wait()

        async def on_error(event: EventT[bytes], exc: Exception) -> None:
            await quarantine(sb, event, stage, exc)

        async def on_fatal(exc: BaseException) -> None:
            log.critical("dispatch cannot report; stopping the worker", exc_info=exc)
            await sb.app.crash(exc)

        await run_overlapped(
            cast(Stream[bytes], stream).noack().events(),  # StreamT does not declare noack()
            handle,
            max_in_flight=sb.settings.max_in_flight,
            prepare=_prepare,
            drain_timeout=sb.settings.drain_timeout,
            on_error=on_error,
            on_fatal=on_fatal,
            rebalancing=lambda: bool(sb.app.rebalancing),
            hand_off=lambda event: hand_off(sb, topic, event),
        )

    sb.app.agent(topic, name=f"switchboard.{stage}")(dispatcher)


async def _handle_priority(sb: Switchboard, item: Item) -> None:
    event, body = item
    channel = body.jobs[0].channel if isinstance(body, JobBatch) else body.get("channel")
    if isinstance(channel, str) and channel in sb.settings.paused:
        # A paused channel's jobs wait in Kafka; in this topic one would hold up every channel's,
        # so they wait in their channel's topic instead, until the channel is resumed.
        await sb.produce(sb.topics.dispatch[channel], key=event.key, value=event.value)
        return
    await _handle(sb, item)


async def _handle(sb: Switchboard, item: Item) -> None:
    event, body = item
    if isinstance(body, JobBatch):
        await _dispatch_batch(sb, body)
    elif body.get("kind") == Fence.KIND:
        await _fence(sb, body["session_id"])
    elif body.get("kind") == PurgeSends.KIND:
        # A session deleted after its retention: its rows in this partition (streams/retention.py).
        await purge_sends(sb, event.message.partition, records.decode(PurgeSends, body))
    else:
        await _dispatch(sb, records.decode(DispatchJob, body))


async def _fence(sb: Switchboard, session_id: str) -> None:
    """A cancelled session's fence (``streams/fences.py``): every later job of the session on
    this partition is withdrawn, by this worker or the partition's next owner."""
    await put_now(sb.bulk_rows, sb.tables.sends, fence_row(session_id), b"1")  # event's partition


async def _dispatch(sb: Switchboard, job: DispatchJob) -> None:
    if _cancelled(sb, job.session_id):
        # Not sent, and not reported: the session agent reports ``cancelled`` for every unsent
        # delivery once the session is fenced on every partition.
        sb.metrics.withdrawn.labels(job.channel, "cancelled").inc()
        return
    # Checked before every send, not only at intake (a message queued before a cancel or a STOP
    # is not sent), and again by the transport at the very last moment (``_last_check``).
    withdrawn = _withdrawn(sb, job)
    if withdrawn is not None:
        await sb.report(
            job.report(
                withdrawn.status,
                time.time(),
                error=withdrawn.message,
                error_code=withdrawn.code,
                detail=_withdrawn_detail(job, withdrawn),
            )
        )
        return
    send_key = send_row(job.key, job.attempt)
    await _exclusively(sb, send_key, job.channel, 1, partial(_claimed, sb, job, send_key))


async def _exclusively(
    sb: Switchboard, key: bytes, channel: str, jobs: int, send: Callable[[], Awaitable[None]]
) -> None:
    """``send()``, unless a copy of the same job (or batch) is being sent on this worker right
    now: two copies in flight never both reach the provider."""
    if key in sb.claims:
        sb.metrics.duplicate_jobs.labels(channel, "in-flight").inc(jobs)
        return
    sb.claims.add(key)  # no await between the check and the claim
    try:
        await send()
    finally:
        sb.claims.discard(key)


async def _claimed(sb: Switchboard, job: DispatchJob, send_key: bytes) -> None:
    row = _load_send(sb, send_key)
    if row is not None and "claimed_at" not in row:
        # The send is recorded; its report and retry are produced again (idempotent), since
        # the worker that recorded it may have died before they reached Kafka.
        sb.metrics.duplicate_jobs.labels(job.channel, "recorded").inc()
        outcome = row.get("outcome")
        if outcome is not None:
            await _produce_outcome(
                sb, job, records.decode(Report, outcome["report"]), outcome.get("retry_at")
            )
        return
    # The window is checked again here: a configuration change, or a long queue, must not push
    # a send outside it. A job held now is dispatched again when the window opens.
    if not await _window_allows(sb, job):
        return
    in_doubt = row is not None
    if row is not None:
        sb.metrics.sends_in_doubt.labels(job.channel).inc()
        log.warning(
            "send claimed before but never recorded; sending again",
            extra={"delivery": job.key, "attempt": job.attempt, "claimed_at": row["claimed_at"]},
        )
    # Written in this task, whose context carries the job's event: the row goes to its partition.
    await _put_send(sb, send_key, {"claimed_at": time.time(), "by": sb.settings.web_url})
    report, retry_at = await _outcome(sb, job, in_doubt)
    await _produce_outcome(sb, job, report, retry_at)
    outcome = {"report": records.as_items([report])[0], "retry_at": retry_at}
    await _put_send(sb, send_key, {"at": time.time(), "outcome": outcome})


def _load_send(sb: Switchboard, send_key: bytes) -> dict[str, Any] | None:
    raw = read_row(sb.tables.sends, send_key)  # in the job's partition, where it is written
    return jsonbytes.loads(raw) if raw is not None else None


async def _put_send(sb: Switchboard, key: bytes, row: dict[str, Any]) -> None:
    """Write a ``sends`` row, in this task's event's partition (its context carries the event)."""
    await put_now(sb.bulk_rows, sb.tables.sends, key, _json(row))


def _json(body: dict[str, Any]) -> bytes:
    return jsonbytes.dumps(body)


async def _window_allows(sb: Switchboard, job: DispatchJob) -> bool:
    client = sb.clients.get(job.client_id)
    if client is None or job.channel not in client.time_windows:
        return True
    now = time.time()
    try:
        at = datetime.fromtimestamp(now, UTC)
        release = delivery_release(
            client, job.channel, at, recipient_tz=job.timezone, address=job.address
        )
        if release is None:
            return True
    except NoCommonOpening:
        pass  # dispatch_or_defer reports it rejected
    await dispatch_or_defer(sb, job, now)  # defers it (the window is closed), or rejects it
    return False


async def _outcome(
    sb: Switchboard, job: DispatchJob, in_doubt: bool, watch: _Deadlines | None = None
) -> tuple[Report, float | None]:
    """Send ``job`` (unless it must not be any more); returns its report and when its retry is
    due. Produces nothing: the caller produces the outcome, alone or with its batch's.
    ``watch``: the batch's deadlines, which bound the send (else a timeout of its own)."""
    withdrawn = _withdrawn(sb, job)
    if withdrawn is not None:
        return job.report(
            withdrawn.status,
            time.time(),
            error=withdrawn.message,
            error_code=withdrawn.code,
            detail=_withdrawn_detail(job, withdrawn),
        ), None
    extra: dict[str, Any] = {"in_doubt": True} if in_doubt else {}  # + the service managers'
    result, failure, provider = await _send(sb, job, extra, watch)
    if failure is None:
        assert result is not None
        sb.metrics.child(sb.metrics.sends, job.channel, provider, "ok").inc()
        # A `sent` awaits a final report (a delivery callback); the report agent expires it
        # when none comes in time (streams/reports.py).
        passed = ["sent"] if result.status == "delivered" else []
        report = job.report(
            result.status,
            time.time(),
            provider_message_id=result.provider_message_id,
            detail=dict(result.detail) | extra,
            passed=passed,
        )
        return report, None
    if isinstance(failure, Withdrawn):  # nothing was sent
        report = job.report(
            failure.status,
            time.time(),
            error=failure.message,
            error_code=failure.code,
            detail=_withdrawn_detail(job, failure, extra),
        )
        return report, None
    status: Status = "suppressed" if failure.suppressed else "failed"
    if failure.suppressed and job.channel in optout.PHONE_CHANNELS:
        # The provider knows the recipient opted out (Twilio 21610): remember it here too, for
        # every channel that reaches the number (the client's ``optout_channels``).
        await sb.optouts.put(
            optout.key(job.client_id, job.address),
            optout_record("provider", failure.code, job.channel),
        )
        client = sb.clients.get(job.client_id)
        if client is not None:
            await sb.managers.opted_out(
                client,
                job.channel,
                job.address,
                reason="provider",
                session_id=job.session_id,
                at=time.time(),
            )
    sb.metrics.child(sb.metrics.sends, job.channel, provider, status).inc()
    retry_at = _retry_at(job, failure)
    if retry_at is not None and deadline.passed_before(job.expires_at, retry_at):
        return _too_late_to_retry(job, failure, retry_at, extra), None
    detail: dict[str, Any] = dict(extra)
    if failure.retry_after:
        detail["retry_after"] = failure.retry_after
    if retry_at is not None:
        detail["retry_at"] = (
            datetime.fromtimestamp(retry_at, UTC).isoformat().replace("+00:00", "Z")
        )
    report = job.report(
        status,
        time.time(),
        error=failure.message,
        error_code=failure.code,
        retryable=failure.retryable,
        retry_at=retry_at,
        detail=detail,
    )
    return report, retry_at


async def _produce_outcome(
    sb: Switchboard, job: DispatchJob, report: Report, retry_at: float | None
) -> None:
    """The outcome of a send: its report, and its next attempt's timer when one is due."""
    await _schedule_retry(sb, job, retry_at)
    await sb.report(report)


async def _schedule_retry(sb: Switchboard, job: DispatchJob, retry_at: float | None) -> None:
    if retry_at is not None:
        retry = dataclasses.replace(job, attempt=job.attempt + 1)
        await sb.schedule_at(
            job_timer(retry.key, retry.attempt),
            retry_at,
            sb.dispatch_topic(job),
            dispatch_key(job.session_id, job.index),
            records.encode(retry),
        )


# -- batches -------------------------------------------------------------------------------

#: Seconds between two flushes of a batch's outcomes while its sends are still running: a
#: paced or slow provider's reports do not wait for the whole batch, and a crash re-sends only
#: what finished in the last flush interval (plus what was in flight).
FLUSH_EVERY: Final = 0.05


async def _dispatch_batch(sb: Switchboard, batch: JobBatch) -> None:
    """Send a batch's jobs concurrently, as :func:`_dispatch` sends one, with one claim for the
    batch and its outcomes recorded (and reported) in parts as they finish (module docs)."""
    first = batch.jobs[0]
    if _cancelled(sb, first.session_id):
        sb.metrics.withdrawn.labels(first.channel, "cancelled").inc(len(batch.jobs))
        return
    row_key = batch_row(batch.key)
    await _exclusively(
        sb, row_key, first.channel, len(batch.jobs), partial(_claimed_batch, sb, batch, row_key)
    )


async def _claimed_batch(sb: Switchboard, batch: JobBatch, row_key: bytes) -> None:
    outcomes = _Outcomes(sb, batch)
    row = _load_send(sb, row_key)
    if row is not None:
        # Claimed before (a worker stopped or died while sending it): what it recorded is
        # reported again (idempotent); the rest is sent again, in doubt.
        await outcomes.replay()
        if "parts" in row:
            sb.metrics.duplicate_jobs.labels(batch.jobs[0].channel, "recorded").inc(len(batch.jobs))
            return
    pending = [job for job in batch.jobs if job.index not in outcomes.recorded]
    in_doubt = row is not None
    if row is not None and pending:
        sb.metrics.sends_in_doubt.labels(batch.jobs[0].channel).inc(len(pending))
        log.warning(
            "batch claimed before but not finished; sending the rest again",
            extra={"batch": batch.key, "jobs": len(pending), "claimed_at": row.get("claimed_at")},
        )
    await _put_send(sb, row_key, {"claimed_at": time.time(), "by": sb.settings.web_url})

    # Sends are made by *runners*, tasks that each take the batch's next job until none is
    # left: one runner while sends finish without waiting (the sandbox, a withdrawn job), since
    # a task per send would cost more than the send; as many as SWITCHBOARD_MAX_IN_FLIGHT once
    # one waits (a provider's round trip), so that that many wait together. A batch heavier
    # than the limit holds every unit of the lane (``run_overlapped``).
    queue = deque(pending)
    watch = _Deadlines(sb.settings.send_deadline)

    async def runner() -> None:
        while queue:
            job = queue.popleft()
            if await _window_allows(sb, job):
                outcomes.add(job, *await _outcome(sb, job, in_doubt, watch))

    first = asyncio.ensure_future(runner())
    running: set[asyncio.Future[None]] = {first}
    try:
        await asyncio.sleep(0)  # the first runner goes until a send waits, or to the end
        if queue and not first.done():  # a send waits: the rest wait together
            more = min(len(queue), sb.settings.max_in_flight - 1)
            running.update(asyncio.ensure_future(runner()) for _ in range(more))
        while running:
            finished, running = await asyncio.wait(running, timeout=FLUSH_EVERY)
            await outcomes.flush()
            for task in finished:
                task.result()  # a send never raises (``_send``); anything else is a bug to see
            watch.cancel_overdue()
    finally:
        for task in running:
            task.cancel()
    await _put_send(sb, row_key, {"at": time.time(), "parts": outcomes.parts})


class _Outcomes:
    """A batch's outcomes not yet reported, flushed as one report record and one ``sends`` row
    (a *part*) at a time."""

    def __init__(self, sb: Switchboard, batch: JobBatch) -> None:
        self._sb = sb
        self._batch = batch
        self._jobs = {job.index: job for job in batch.jobs}
        self._reports: list[Report] = []
        self._retries: list[tuple[int, float]] = []
        self.parts = 0
        self.recorded: set[int] = set()

    def add(self, job: DispatchJob, report: Report, retry_at: float | None) -> None:
        self._reports.append(report)
        if retry_at is not None:
            self._retries.append((job.index, retry_at))

    async def flush(self) -> None:
        if not self._reports:
            return
        reports, retries = self._reports, self._retries
        self._reports, self._retries = [], []
        items = records.encode_items(reports)  # once, for the record and the row
        await self._produce(reports, retries, items)
        part = b'{"items":' + items + b',"retries":' + json.dumps(retries).encode() + b"}"
        sb = self._sb
        await put_now(
            sb.bulk_rows, sb.tables.sends, batch_part_row(self._batch.key, self.parts), part
        )
        self.parts += 1

    async def replay(self) -> None:
        """Produce again the outcomes an earlier owner recorded."""
        while (
            part := _load_send(self._sb, batch_part_row(self._batch.key, self.parts))
        ) is not None:
            reports = [records.decode(Report, item) for item in part["items"]]
            await self._produce(reports, [(int(i), float(at)) for i, at in part["retries"]])
            self.recorded.update(report.index for report in reports)
            self.parts += 1

    async def _produce(
        self, reports: list[Report], retries: list[tuple[int, float]], items: bytes | None = None
    ) -> None:
        for index, retry_at in retries:
            await _schedule_retry(self._sb, self._jobs[index], retry_at)
        await self._sb.report_batch(reports, items)


class _Deadlines:
    """The send deadline of a batch's sends, kept by the batch's flush loop instead of a timer
    per send (a timer handle in the loop's heap, made and cancelled, for every delivery).

    A send running longer than ``seconds`` is cancelled at the loop's next turn (within
    :data:`FLUSH_EVERY`): the task making it (a runner of :func:`_claimed_batch`) is cancelled,
    and :meth:`expired` tells that apart from a cancellation of the batch. Sends are known by
    their job's index."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        # asyncio.current_task() without a loop asks for the running one, and that costs a
        # getpid() system call (Python 3.11's check for a fork): once per batch, not per send.
        self._loop = asyncio.get_running_loop()
        #: The sends running now -> when they started, and the task making each.
        self._started: dict[int, tuple[float, asyncio.Task[Any] | None]] = {}
        self._expired: set[int] = set()

    def start(self, index: int) -> None:
        self._started[index] = (time.monotonic(), asyncio.current_task(self._loop))

    def stop(self, index: int) -> None:
        del self._started[index]

    def expired(self, index: int) -> bool:
        """Whether the send of ``index`` was cancelled for its deadline (the cancellation is
        then taken back: its task goes on to report the send failed)."""
        if index not in self._expired:
            return False
        self._expired.discard(index)
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        return True

    def cancel_overdue(self) -> None:
        if not self._started:
            return
        late = time.monotonic() - self._seconds
        for index, (started, task) in list(self._started.items()):
            if started < late and index not in self._expired and task is not None:
                self._expired.add(index)
                task.cancel()


def _retry_at(job: DispatchJob, failure: TransportError) -> float | None:
    """When attempt n+1 is due, for a retryable failure with attempts left (else None)."""
    if not failure.retryable:
        return None
    return next_attempt_of_session(
        job.retry_options, job.attempt, datetime.now(UTC), failure.retry_after
    )


async def _send(
    sb: Switchboard, job: DispatchJob, extra: dict[str, Any], watch: _Deadlines | None = None
) -> tuple[SendResult | None, TransportError | None, str]:
    """Run the service managers' ``on_message_send`` (their detail goes into ``extra``), then
    call the provider, within ``SWITCHBOARD_SEND_DEADLINE`` (kept by ``watch`` for a batch's
    sends). Every failure comes back classified; nothing here raises but a cancellation."""
    client = sb.clients.get(job.client_id)
    if client is None:
        return (
            None,
            TransportError(f"client {job.client_id!r} is no longer configured", code="no-client"),
            "-",
        )
    config = client.channels.get(job.channel)  # type: ignore[call-overload]
    breaker = config is not None and config.failover is not None  # a ``providers`` list
    count = len(config.providers) if breaker else 1
    try:
        transports = [sb.transports.get(client, job.channel, n) for n in range(count)]
    except ConfigError as exc:
        return None, TransportError(str(exc), code="config"), "-"
    message = OutboundMessage(
        channel=job.channel,
        to=job.address,
        body=job.message,
        subject=job.subject,
        file_url=job.file_url,
        extras=job.extras,
        locale=job.locale,
        reference=job.key,
        attempt=job.attempt,
        status_callback=_status_callback(sb, job),
        last_check=partial(_last_check, sb, job),
        urgent=job.priority == "high",
        unsubscribe_url=_unsubscribe_url(sb, job),
    )
    try:
        message, detail = await sb.managers.before_send(job, client, message)
    except ConfigError as exc:  # the client's manager list cannot be run
        return None, TransportError(str(exc), code="config"), transports[0].name
    extra.update(detail)
    if not breaker:
        try:
            return await _call(sb, job, transports[0], message, watch), None, transports[0].name
        except TransportError as exc:
            return None, exc, transports[0].name

    async def call(position: int, transport: Transport) -> SendResult:
        if position == 0:
            return await _call(sb, job, transport, message, watch)
        # Its own delivery callbacks name the provider, whose account signs them.
        moved = dataclasses.replace(message, status_callback=_status_callback(sb, job, position))
        return await _call(sb, job, transport, moved, watch)

    try:
        result, position, name = await sb.failover.send(
            job.client_id,
            job.channel,
            count,
            transports.__getitem__,
            call,
            partial(_withdrawn, sb, job),
        )
    except TransportError as exc:
        return None, exc, transports[0].name
    if position > 0:
        extra["provider_position"] = position  # not the channel's first provider: failover
    return result, None, name


async def _call(
    sb: Switchboard,
    job: DispatchJob,
    transport: Transport,
    message: OutboundMessage,
    watch: _Deadlines | None,
) -> SendResult:
    """One provider call within ``SWITCHBOARD_SEND_DEADLINE`` (kept by ``watch`` for a batch's
    sends); a send past it and an unclassified exception raise retryable
    :class:`TransportError`, as the provider's own errors do."""
    in_flight = sb.metrics.in_flight_cell(job.channel)
    in_flight.value += 1
    started = time.perf_counter()
    # Each transport bounds its own requests; the deadline only catches a send that is stuck,
    # and includes the wait for the sender's rate-limit slot (which is not an error).
    try:
        if watch is None:
            async with asyncio.timeout(sb.settings.send_deadline):  # no task (wait_for's)
                return await transport.send(message)
        watch.start(job.index)
        try:
            return await transport.send(message)
        finally:
            watch.stop(job.index)
    except TransportError:
        raise
    except TimeoutError:
        raise _past_deadline(sb) from None
    except asyncio.CancelledError:
        if watch is None or not watch.expired(job.index):
            raise
        raise _past_deadline(sb) from None
    except Exception as exc:
        log.exception("transport raised an unclassified error", extra={"provider": transport.name})
        raise _retryable(f"{type(exc).__name__}: {exc}", "unclassified") from exc
    finally:
        in_flight.value -= 1
        sb.metrics.child(sb.metrics.send_seconds, job.channel, transport.name).observe(
            time.perf_counter() - started
        )


def _cancelled(sb: Switchboard, session_id: str) -> bool:
    """Whether the session was cancelled: this worker's replica of the ``cancels`` topic has it,
    or this partition passed its fence (``streams/fences.py``). Asked twice per send (before it
    and at its last moment), so the fence is read in the job's own partition, where the fence
    wrote it, in one RocksDB read (``read_row``): not Faust's ``get``, which probes every
    partition's database and raises a ``KeyError`` for the missing row it almost always is."""
    key = session_id.encode()
    return (
        sb.cancels.get(key) is not None
        or read_row(sb.tables.sends, fence_row(session_id)) is not None
    )


def _withdrawn(sb: Switchboard, job: DispatchJob) -> Withdrawn | None:
    """Why ``job`` must not be sent any more, if it must not.

    An opt-out of the job's address withholds it on every channel :func:`optout.applies` to:
    a number's on sms, voice and whatsapp unless the client's ``optout_channels`` narrows it, an
    email address's unsubscribe on its bulk (not transactional) email."""
    if _cancelled(sb, job.session_id):
        return Withdrawn("the session was cancelled", status="cancelled", code="cancelled")
    if job.expires_at is not None and deadline.passed_before(job.expires_at, time.time()):
        return Withdrawn(deadline.reason(job.expires_at), status="expired", code="deadline")
    client = sb.clients.get(job.client_id)
    scope = client.optout_channels if client is not None else optout.DEFAULT_CHANNELS
    if (
        optout.applies(job.channel, scope, transactional=job.transactional)
        and sb.optouts.get(optout.key(job.client_id, job.address)) is not None
    ):
        what = "unsubscribed from bulk email" if job.channel == "email" else "opted out"
        return Withdrawn(f"the recipient {what}", status="suppressed", code="opted-out")
    return None


def _withdrawn_detail(
    job: DispatchJob, withdrawn: Withdrawn, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The status event's ``detail`` of a withdrawn job: an expired one says why and when."""
    if withdrawn.status != "expired" or job.expires_at is None:
        return extra or {}
    return (extra or {}) | {"expires_at": deadline.iso(job.expires_at)}


def _too_late_to_retry(
    job: DispatchJob, failure: TransportError, retry_at: float, extra: dict[str, Any]
) -> Report:
    """A retryable failure whose next attempt would be due at or after the deadline: the
    delivery ends ``expired`` now (with the failure that ended it) rather than at a retry."""
    assert job.expires_at is not None
    message = deadline.reason(job.expires_at, f"the retry due at {deadline.iso(retry_at)}")
    detail = extra | {
        "expires_at": deadline.iso(job.expires_at),
        "last_error": failure.message,
        "last_error_code": failure.code,
    }
    return job.report("expired", time.time(), error=message, error_code="deadline", detail=detail)


def _unsubscribe_url(sb: Switchboard, job: DispatchJob) -> str | None:
    """The one-click unsubscribe URL a bulk email carries (``switchboard/unsubscribe.py``)."""
    links = sb.settings.unsubscribe_links
    if job.channel != "email" or job.transactional or links is None:
        return None
    public_url, secret = links
    return unsubscribe.link(public_url, secret, job.client_id, optout.normalize(job.address))


async def _last_check(sb: Switchboard, job: DispatchJob) -> None:
    withdrawn = _withdrawn(sb, job)
    if withdrawn is not None:
        raise withdrawn


def _status_callback(sb: Switchboard, job: DispatchJob, position: int = 0) -> str | None:
    """Where the provider reports this message's later states: the delivery and attempt are in
    the URL, which Twilio signs, so a callback needs no lookup and cannot be pointed elsewhere."""
    if sb.settings.public_url is None:
        return None
    fields: dict[str, Any] = {"d": job.key, "a": job.attempt, "c": job.client_id}
    if job.priority == "high":  # its report travels in the high-priority lane too
        fields["p"] = "high"
    if position > 0:  # a failover provider's account signs its callbacks (streams/failover.py)
        fields["v"] = position
    query = urlencode(fields)
    return f"{sb.settings.public_url.rstrip('/')}/twilio/messages/status?{query}"


def optout_record(source: str, detail: str | None, channel: str | None = None) -> bytes:
    """An opt-out row: when, how (``keyword``, ``provider``, ``unsubscribe``) and on which
    channel it came; its scope is decided at each send (``_withdrawn``), not here."""
    body = {"at": time.time(), "source": source, "detail": detail}
    if channel is not None:
        body["channel"] = channel
    return json.dumps(body).encode()


def _past_deadline(sb: Switchboard) -> TransportError:
    return _retryable(f"the send did not finish within {sb.settings.send_deadline:g}s", "deadline")


def _retryable(message: str, code: str) -> TransportError:
    return RetryableError(message, code=code)
