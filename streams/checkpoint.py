"""Checkpoints: the order in which a stateful agent's effects become durable.

Processing one event has three kinds of effect: the records the agent produces (*outputs*: status
events, commands, jobs, timers), the rows it writes to its table (*state*), and the event's
acknowledgement (its offset may then be committed). Faust issues all three as they happen, so a
worker that dies between them can leave a row in the changelog whose outputs never reached Kafka:
the event is processed again, finds its state already written, and has "nothing to do". A session
then never fans out, a delivery's count is lost, a timer never fires.

:func:`run_checkpointed` runs a serial agent's handler so that this cannot happen:

1. the handler runs with a :class:`Checkpoint` in its context: its table writes are *staged*
   (reads through :meth:`StagedRows.get` see them), its outputs are produced at once and remembered;
2. once no more events are waiting (or :data:`MAX_BATCH` are, or no next event came within
   :data:`IDLE_COMMIT`), the checkpoint waits for the broker to acknowledge every output of the
   batch (one round trip per batch, not per event);
3. then it applies the staged writes to the tables, in order, each in its own event's context (the
   changelog record goes to that event's partition);
4. then it acknowledges the events. Faust's commit flushes the producer, the changelog included,
   before it commits their offsets. A *bulk* table's rows (``streams/changelog.py``: every
   table of the worker is one) are written first, through librdkafka, and the events are
   acknowledged only once the broker has their changelog records.

Steps 2 to 4 run behind the handler (:class:`_Pipeline`): while the broker acknowledges one
batch, the handler fills the next checkpoint, reading the rows of the one being committed as
staged. Checkpoints are committed one at a time, in order, and at most one behind the handler.

Guarantees and failure modes:
    * A row is never durable before the outputs of the event that wrote it (and of every event
      before it in the batch): whatever a replay finds already done, its outputs are in Kafka.
    * A worker that dies before step 3 loses the staged rows and the acknowledgements: the events
      are processed again and produce their outputs again. Every output is idempotent where it
      lands or carries a deterministic id (status events, timers, jobs, session commands), so a
      repeat is a duplicate that its reader drops.
    * A worker that dies during step 3 leaves a prefix of the batch's writes in the changelog:
      an agent writes one table, and each event's rows go to its own partition, in order. An
      event whose rows are partly written is processed again over them; the agents' rules are
      written so that this is exact (``streams/reports.py`` records the offset it applied).
    * Staged rows are visible to every reader in the worker at once (:meth:`StagedRows.get`), as Faust's own
      table writes are: an agent that consumes this agent's outputs (a dispatcher reading the
      session of a job, the report agent reading the session of a report) may see them before
      the checkpoint writes the rows, and must see the rows they depend on.
    * A batch's rows and acknowledgements never come before the previous batch's: a crash
      while one batch is committed and the next is being processed leaves both to be processed
      again, as a crash in the middle of one larger batch would. A commit that fails stops the
      worker, and no later batch is committed.
    * A handler that raises has its staged rows dropped (its outputs cannot be taken back) and
      its event goes to the rejected topic (:func:`streams.guard.guarded`).
    * An output the broker refuses stops the worker without acknowledging the batch: Kafka
      itself is failing, and the partition's next owner processes the events again.
    * A clean stop (SIGTERM) lets the checkpoint being committed finish, so its events are
      acknowledged; events not yet committed are processed again by the next owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

from faust import current_event
from faust.streams import _current_event

from streams.guard import Rejecting, guarded
from streams.tablestore import read_row

if TYPE_CHECKING:
    from faust.types import EventT, StreamT, TableT

    from streams.changelog import BulkRows
    from switchboard.settings import Settings

__all__ = [
    "MAX_BATCH",
    "Checkpoint",
    "Checkpointing",
    "StagedRows",
    "output",
    "put",
    "run_checkpointed",
]

log = logging.getLogger(__name__)

#: The most events one checkpoint holds: bounds the memory of staged rows and how much a
#: crash makes the next owner process again.
MAX_BATCH: Final = 500

_ABSENT: Final = object()
#: The checkpoint of the handler running in this context (an agent's task): context-local, so
#: each agent's handler stages into its own checkpoint.
_active: contextvars.ContextVar[Checkpoint | None] = contextvars.ContextVar(
    "switchboard_checkpoint", default=None
)


class StagedRows:
    """The rows one worker's checkpoints have staged and not yet written, as every reader of
    that worker sees them (module docs). One per worker (``Switchboard.staged``): two apps in
    one process never see each other's rows.

    A table may have several writing agents (the report agents of the two lanes), as long as
    each key has one; every reader sees what any of them has staged.

    It also knows how far each partition's events have been handled here (:meth:`handled`):
    every row an event before that offset staged is seen by every reader, so an agent can tell
    "not written yet" from "not there" for the rows another agent writes (the report agent
    waiting for a session's opening to be replayed: ``streams/reports.py``)."""

    __slots__ = ("_handled", "_writing")

    def __init__(self) -> None:
        #: The checkpoints staging rows of each table, by ``id(table)``; a checkpoint is listed
        #: from its first staged row of the table until it is abandoned.
        self._writing: dict[int, list[Checkpoint]] = {}
        #: The offset after the last event handled of each (topic, partition).
        self._handled: dict[tuple[str, int], int] = {}

    def mark(self, topic: str, partition: int, offset: int) -> None:
        """The event at ``offset`` of ``topic``'s ``partition`` was handled: its rows are staged
        (or it failed, and was quarantined: it will never stage any)."""
        self._handled[(topic, partition)] = offset + 1

    def handled(self, topic: str, partition: int) -> int:
        """The offset after the last event of the partition this worker handled since it last
        lost partitions (-1: none). A lower bound only after :meth:`forget_handled` at every
        revocation: a partition taken back later starts again from its committed offset."""
        return self._handled.get((topic, partition), -1)

    def forget_handled(self) -> None:
        """Partitions are being revoked: what was handled of them says nothing any more."""
        self._handled.clear()

    def get(self, table: TableT[bytes, bytes], key: bytes) -> bytes | None:
        """``table[key]`` as this worker sees it: the rows the running handler's checkpoint has
        staged, else those any other checkpoint of the worker has, else the table."""
        active = _active.get()
        if active is not None:
            staged = active.lookup(table, key)
            if staged is not _ABSENT:
                return cast(bytes | None, staged)
        # Newest first: an agent's checkpoint being committed is listed before the one it fills.
        for checkpoint in reversed(self._writing.get(id(table), ())):
            staged = checkpoint.lookup(table, key)
            if staged is not _ABSENT:
                return cast(bytes | None, staged)
        return read_row(table, key)

    def enlist(self, table: TableT[bytes, bytes], checkpoint: Checkpoint) -> None:
        """``checkpoint`` stages rows of ``table``: readers look there too."""
        writers = self._writing.setdefault(id(table), [])
        if checkpoint not in writers:
            writers.append(checkpoint)

    def withdraw(self, checkpoint: Checkpoint) -> None:
        """``checkpoint`` stages nothing any more, in any table (a row it stages later
        enlists it again)."""
        checkpoint._enlisted.clear()
        for table_id, writers in list(self._writing.items()):
            if checkpoint in writers:
                writers.remove(checkpoint)
            if not writers:
                del self._writing[table_id]

    def writers(self, table: TableT[bytes, bytes]) -> list[Checkpoint]:
        """The checkpoints staging rows of ``table`` (a copy)."""
        return list(self._writing.get(id(table), ()))


@dataclass(eq=False, slots=True)
class _Write:
    table: TableT[bytes, bytes]
    key: bytes
    value: bytes | None  # None: delete
    event: EventT[Any]


@dataclass(eq=False)
class Checkpoint:
    """The staged rows, pending outputs and unacknowledged events of one batch."""

    writes: list[_Write] = field(default_factory=list)
    outputs: list[Awaitable[Any]] = field(default_factory=list)
    events: list[EventT[Any]] = field(default_factory=list)
    #: The worker's bulk tables (``streams/changelog.py``), whose rows are written through
    #: librdkafka; None: every row through Faust.
    bulk: BulkRows | None = None
    #: Where every reader of the worker finds the rows staged here (the worker's
    #: ``Switchboard.staged``; a checkpoint on its own has a registry of its own).
    staged: StagedRows = field(default_factory=StagedRows)
    #: When its first event came (``time.monotonic()``): the checkpoint latency metric.
    started: float = 0.0
    _rows: dict[tuple[int, bytes], bytes | None] = field(default_factory=dict)
    #: The tables this checkpoint is enlisted for in ``staged`` (once each, not once a row).
    _enlisted: set[int] = field(default_factory=set)

    def lookup(self, table: TableT[bytes, bytes], key: bytes) -> Any:
        """The staged value of ``key`` (``None``: deleted), or :data:`_ABSENT`."""
        return self._rows.get((id(table), key), _ABSENT)

    def stage(self, table: TableT[bytes, bytes], key: bytes, value: bytes | None) -> None:
        event = current_event()
        if event is None:
            raise RuntimeError("a checkpointed write outside of an event")
        self.writes.append(_Write(table, key, value, event))
        table_id = id(table)
        self._rows[(table_id, key)] = value
        if table_id not in self._enlisted:
            self._enlisted.add(table_id)
            self.staged.enlist(table, self)

    def abandon(self) -> None:
        """Forget everything staged (the agent stops before its checkpoint): no reader may see
        rows that will never be written."""
        self.staged.withdraw(self)
        self.writes.clear()
        self.outputs.clear()
        self.events.clear()
        self._rows.clear()

    def savepoint(self) -> int:
        return len(self.writes)

    def rollback(self, savepoint: int) -> None:
        """Forget the rows staged since ``savepoint`` (a handler failed half way)."""
        del self.writes[savepoint:]
        self._rows = {(id(w.table), w.key): w.value for w in self.writes}

    async def commit(self) -> None:
        """Steps 2 to 4 of the module docs: outputs acknowledged, rows written, events acked."""
        if self.outputs:
            await asyncio.gather(*self.outputs)
        bulk = self.bulk
        if bulk is not None and any(bulk.owns(write.table) for write in self.writes):
            # The bulk tables' rows first, in the broker before the events are acknowledged
            # (streams/changelog.py); then the others' and the acknowledgements, at once.
            await bulk.write([write for write in self.writes if bulk.owns(write.table)])
            self.writes = [write for write in self.writes if not bulk.owns(write.table)]
        self.apply()

    def apply(self) -> None:
        """Write the staged rows and acknowledge the events. Synchronous: never half done by a
        cancellation."""
        for write in self.writes:
            token = _current_event.set(weakref.ref(write.event))
            try:
                if write.value is not None:
                    write.table[write.key] = write.value
                elif write.table.get(write.key) is not None:
                    del write.table[write.key]
            finally:
                _current_event.reset(token)
        for event in self.events:
            event.ack()
        self.writes.clear()
        self.outputs.clear()
        self.events.clear()
        self._rows.clear()


# -- what handlers call ------------------------------------------------------------------------


def put(table: TableT[bytes, bytes], key: bytes, value: bytes | None) -> None:
    """Write (``None``: delete) ``table[key]``: staged in a checkpointed agent, else at once (a
    dispatcher's task, whose context carries its event)."""
    checkpoint = _active.get()
    if checkpoint is not None:
        checkpoint.stage(table, key, value)
    elif value is not None:
        table[key] = value
    elif table.get(key) is not None:
        del table[key]


async def put_now(
    bulk: BulkRows | None, table: TableT[bytes, bytes], key: bytes, value: bytes | None
) -> None:
    """Write (``None``: delete) ``table[key]`` outside a checkpoint, in a task whose context
    carries its event (a dispatcher's): a bulk table's row through librdkafka
    (:meth:`streams.changelog.BulkRows.write_now`), another's through Faust. A bulk table's rows
    must never go through Faust's producer as well: two producers would not keep them in order."""
    if bulk is not None and bulk.owns(table):
        await bulk.write_now(table, key, value)
    else:
        put(table, key, value)


def output(future: Awaitable[Any]) -> None:
    """Remember a produced record's future: the running checkpoint waits for it before it
    writes any row. Outside a checkpoint (views, dispatchers) this does nothing."""
    checkpoint = _active.get()
    if checkpoint is not None and (not checkpoint.outputs or checkpoint.outputs[-1] is not future):
        checkpoint.outputs.append(future)  # records produced together may share one future


# -- the runner --------------------------------------------------------------------------------


class Checkpointing(Rejecting, Protocol):
    """What the runner needs of the worker (``streams.app.Switchboard`` is one): the error
    policy's needs, the settings (the drain timeout), the bulk tables and where its staged rows
    are read. Typed here, so that this module never depends on the shared object's module
    (which depends on it)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def bulk_rows(self) -> BulkRows | None: ...

    @property
    def staged(self) -> StagedRows: ...


def _waiting(stream: Any) -> Callable[[], int]:
    """How many events are queued for this agent (0 when it cannot tell: commit each event)."""
    queue = getattr(getattr(stream, "channel", None), "queue", None)
    size = getattr(queue, "qsize", None)
    return cast(Callable[[], int], size) if callable(size) else (lambda: 0)


async def run_checkpointed(
    sb: Checkpointing,
    stream: StreamT[bytes],
    stage: str,
    handler: Callable[[EventT[bytes]], Awaitable[None]],
    *,
    max_batch: int = MAX_BATCH,
) -> None:
    """Run ``handler`` on every event of ``stream`` under checkpoints (see the module docs).

    Events are acknowledged only here, after their checkpoint: an agent cancelled half way (a
    stop, a crash) never acknowledges an event whose effects are not all durable."""
    pipeline = _Pipeline(sb, stage)
    turn = asyncio.Lock()  # a handler and a sealing, or the idle commit: never both at once
    left_open = asyncio.Event()  # set while a checkpoint holds events after its handler
    idle = asyncio.ensure_future(_commit_when_idle(pipeline, turn, left_open))
    try:
        await _run(sb, stream, stage, handler, pipeline, max_batch, turn, left_open)
    finally:
        idle.cancel()
        # A failure the idle commit met is a commit's: logged, and the worker told to stop.
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await idle
        await pipeline.drain()
        pipeline.open.abandon()  # whatever was not committed will never be written


#: Seconds a checkpoint with events may wait for the next event before it is committed anyway.
IDLE_COMMIT: Final = 0.05


class _Pipeline:
    """An agent's open checkpoint, which its handler fills, and the one sealed before it, being
    committed meanwhile (step 2 of the module docs is a broker round trip: the handler goes on
    with the next events instead of waiting for it).

    Guarantees: checkpoints are committed one at a time, in the order sealed (a batch's rows and
    acknowledgements never before the previous batch's); at most one is being committed while
    the next fills (sealing waits for the one before); the rows of a checkpoint being committed
    stay visible to every reader until they are in the tables (:class:`StagedRows`, newest
    first). A commit that fails stops the worker, and no later checkpoint is committed."""

    __slots__ = ("_sb", "_stage", "committing", "open")

    def __init__(self, sb: Checkpointing, stage: str) -> None:
        self._sb, self._stage = sb, stage
        self.open = Checkpoint(bulk=sb.bulk_rows, staged=sb.staged)
        self.committing: asyncio.Future[None] | None = None

    async def seal(self) -> None:
        """Commit the open checkpoint behind the handler, once the one before it is committed;
        the handler's next events go into a new one.

        Raises:
            BaseException: the previous commit's failure (the worker is stopping)."""
        await self._settled()
        sealed = self.open
        self.open = Checkpoint(bulk=self._sb.bulk_rows, staged=self._sb.staged)
        self.committing = asyncio.ensure_future(_commit(self._sb, sealed, self._stage))

    async def _settled(self) -> None:
        if self.committing is not None:
            # Shielded: the agent's cancellation (a clean stop) must not cut a commit short.
            await asyncio.shield(self.committing)
            self.committing = None

    async def drain(self) -> None:
        """The agent stops: let the commit under way finish (a clean stop acknowledges its
        events before Faust's last commit), within the drain timeout."""
        task = self.committing
        if task is None:
            return
        await asyncio.wait({task}, timeout=self._sb.settings.drain_timeout)
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: its failure was logged, and stopped the worker


async def _commit_when_idle(
    pipeline: _Pipeline, turn: asyncio.Lock, left_open: asyncio.Event
) -> None:
    """Commit a checkpoint left open. The runner leaves it open while more events are queued,
    but a rebalance can clear that queue: the events would then wait, unacknowledged, for an
    event that never comes, and the rebalance waits for their acknowledgement (forever).

    Wakes only while a checkpoint is open: an idle worker's agents cost no timer."""
    while True:
        await left_open.wait()
        await asyncio.sleep(IDLE_COMMIT)
        if pipeline.open.events and not turn.locked():
            async with turn:
                if pipeline.open.events:
                    await pipeline.seal()
        if not pipeline.open.events:
            left_open.clear()


async def _run(
    sb: Checkpointing,
    stream: StreamT[bytes],
    stage: str,
    handler: Callable[[EventT[bytes]], Awaitable[None]],
    pipeline: _Pipeline,
    max_batch: int,
    turn: asyncio.Lock,
    left_open: asyncio.Event,
) -> None:
    waiting = _waiting(stream)
    events = cast(Any, stream).noack().events()  # StreamT does not declare noack()
    async for event in events:
        async with turn:
            checkpoint = pipeline.open
            if not checkpoint.events:
                checkpoint.started = time.monotonic()
            token = _active.set(checkpoint)
            savepoint = checkpoint.savepoint()
            try:
                failed = await guarded(sb, event, stage, handler)
            finally:
                _active.reset(token)
            if failed:
                checkpoint.rollback(savepoint)
            message = event.message
            sb.staged.mark(message.topic, message.partition, message.offset)
            checkpoint.events.append(event)
            if len(checkpoint.events) >= max_batch or not waiting():
                await pipeline.seal()
            else:
                left_open.set()


async def _commit(sb: Checkpointing, checkpoint: Checkpoint, stage: str) -> None:
    """Commit ``checkpoint`` (a task of its own: :class:`_Pipeline`), then stop listing it
    among the writers of staged rows. A failure stops the worker."""
    try:
        await checkpoint.commit()
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        log.critical(
            "%s: Kafka refused an output; stopping the worker without acknowledging",
            stage,
            exc_info=exc,
        )
        await sb.app.crash(exc)
        raise
    finally:
        checkpoint.staged.withdraw(checkpoint)
    sb.metrics.checkpoints.labels(stage).observe(time.monotonic() - checkpoint.started)
