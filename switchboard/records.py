"""Messages on Switchboard's internal topics, and the values of its tables. Pure.

Internal topics carry JSON (they are Switchboard's own; the public topics carry Avro). The
sessions and reports topics are keyed by session id, so a session's commands, reports and
their rows live on one partition; the dispatch topics are keyed by session and slice of the
audience (``switchboard.fanout.dispatch_key``), so one campaign's jobs are spread over every
partition (see ``streams/topics.py``). Decoding ignores unknown fields, so a newer worker's
messages do not stop an older one during a rolling upgrade.

::

    sessions topic   OpenSession, FanOut     ─► session agent (owns SessionState)
    dispatch.<ch>    JobBatch, DispatchJob   ─► dispatch agent of channel <ch>
    reports topic    ReportBatch, Report,    ─► report agent (owns DeliveryState, Progress)
                     ExpireSweep

A record costs the same whatever it carries, so the hot path carries deliveries in batches: a
fan-out's jobs travel as one :class:`JobBatch` per dispatch key and channel (up to
``DISPATCH_SPREAD`` jobs), and a dispatcher's outcomes as :class:`ReportBatch` records of one
session each. Single :class:`DispatchJob` and :class:`Report` records remain for what comes one
at a time (a retry, a callback, a window's release of one delivery).

Hot records: :class:`DispatchJob`, :class:`Report`, :class:`DeliveryState` (and
:class:`~switchboard.status.StatusEvent`, :class:`~switchboard.instruction.Recipient`,
:class:`~transports.base.OutboundMessage`) are made once or more per delivery, and a frozen
dataclass's ``__init__`` sets each field through ``object.__setattr__``, four times slower
than a plain one. They are not frozen, but they are values all the same: nothing assigns to
their fields; a changed copy is made with :func:`dataclasses.replace`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

from switchboard import jsonbytes
from switchboard.keys import delivery_key
from switchboard.status import Status

__all__ = [
    "DeliveryState",
    "DispatchJob",
    "FanOut",
    "JobBatch",
    "OpenSession",
    "Progress",
    "Report",
    "ReportBatch",
    "SessionCommand",
    "SessionState",
    "as_items",
    "decode",
    "delivery_key",
    "encode",
    "encode_batch",
    "encode_items",
    "priority_of",
]

T = TypeVar("T")
#: Field names per record class: pure memoisation of ``dataclasses.fields`` (a class's fields
#: never change), bounded by the number of record classes, so sharing it shares nothing mutable.
_FIELDS: dict[type, frozenset[str]] = {}
#: The parameters of each record class's ``__init__``, in order (memoised like ``_FIELDS``).
_PARAMS: dict[type, tuple[str, ...]] = {}


def priority_of(options: Mapping[str, Any] | None) -> str:
    """The lane of stored options (their contract form): ``options.priority``, ``normal`` when
    absent, as in every record written before the lanes."""
    return "high" if (options or {}).get("priority") == "high" else "normal"


def encode(record: Any) -> bytes:
    """JSON bytes of a record dataclass, with its ``kind`` tag when it has one.

    Records are flat (their dict and list fields hold JSON values already), so a shallow read
    of the fields is enough; ``dataclasses.asdict`` would deep-copy every value, and this is
    called for every message of every delivery."""
    cls = type(record)
    kind = getattr(cls, "KIND", None)
    if kind is None:
        fast = jsonbytes.dumps_records(record)  # a delivery's state, a report: per delivery
        if fast is not None:
            return fast
    body = {name: getattr(record, name) for name in _field_names(cls)}
    if kind is not None:
        body["kind"] = kind
    return jsonbytes.dumps(body)


def encode_batch(batch: JobBatch | ReportBatch, items: bytes | None = None) -> bytes:
    """JSON bytes of a batch record: its ``kind`` and its items (``items``: already encoded
    with :func:`encode_items`, so a caller that stores them too encodes them once)."""
    if items is None:
        items = encode_items(batch.jobs if isinstance(batch, JobBatch) else batch.reports)
    return b'{"kind":"' + batch.KIND.encode() + b'","items":' + items + b"}"


def encode_items(items: Sequence[Any]) -> bytes:
    """A JSON array of flat records (all of one class), as :func:`as_items` reads them."""
    fast = jsonbytes.dumps_records(items if isinstance(items, list) else list(items))
    return fast if fast is not None else jsonbytes.dumps(as_items(items))


def as_items(items: Sequence[Any]) -> list[dict[str, Any]]:
    """Flat records (all of one class) as JSON-ready dicts, as :func:`encode` reads them (shallow:
    their dict and list fields hold JSON values already); :func:`decode` reads each back."""
    fields = _field_names(type(items[0])) if items else frozenset()
    return [{name: getattr(item, name) for name in fields} for item in items]


def decode(cls: type[T], data: bytes | Mapping[str, Any]) -> T:
    """Build ``cls`` from JSON bytes or a mapping, ignoring unknown fields."""
    body = jsonbytes.loads(data) if isinstance(data, (bytes, bytearray)) else data
    params = _PARAMS.get(cls)
    if params is None:
        params = _PARAMS[cls] = _params(cls)
    if type(body) is dict and tuple(body) == params:
        # What this version wrote (orjson writes a record's fields in order): positionally,
        # at half the cost of keywords (1.0 µs for a job, 1.2 for a report, against 2.2 and
        # 3.0), for the jobs, reports and delivery states read once or more per delivery.
        return cls(*body.values())
    if "kind" not in body:
        try:  # the usual body: every key one of the fields (two per delivery, jobs and reports)
            return cls(**body)
        except TypeError:
            pass  # a field this version does not know (a newer writer's), or one missing
    names = _field_names(cls)
    return cls(**{k: v for k, v in body.items() if k in names})


def _params(cls: type) -> tuple[str, ...]:
    """The fields ``cls.__init__`` takes, in order; none when one is keyword-only (then every
    body is read by keywords)."""
    fields = [f for f in dataclasses.fields(cls) if f.init]
    return () if any(f.kw_only for f in fields) else tuple(f.name for f in fields)


def _field_names(cls: type) -> frozenset[str]:
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = frozenset(f.name for f in dataclasses.fields(cls))
    return names


@dataclass(frozen=True, slots=True)
class OpenSession:
    """Open a session for a validated instruction under ``session_id``. ``instruction`` is the
    internal form: with its ``audience``, or (large audiences) with ``recipients`` and ``chunks``
    when the audience was written before it as :class:`AudienceChunk` commands."""

    KIND: ClassVar[str] = "open"
    session_id: str
    instruction: dict[str, Any]
    received_at: float
    source: Literal["api", "kafka"]
    origin: str = ""


@dataclass(frozen=True, slots=True)
class AudienceChunk:
    """Chunk ``chunk`` of a session's audience (normalised recipient records), written before
    the session's ``OpenSession`` so that no command holds a whole large audience."""

    KIND: ClassVar[str] = "audience"
    session_id: str
    chunk: int
    recipients: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Discard:
    """Forget the first ``chunks`` audience chunks of a session that will not open (its
    instruction turned out invalid, or its idempotency key named another session)."""

    KIND: ClassVar[str] = "discard"
    session_id: str
    chunks: int


@dataclass(frozen=True, slots=True)
class FanOut:
    """Continue a session's fan-out with audience chunk ``chunk``."""

    KIND: ClassVar[str] = "fanout"
    session_id: str
    chunk: int


@dataclass(frozen=True, slots=True)
class Trigger:
    """Start a manual session; with ``include_failed``, send its failed deliveries again."""

    KIND: ClassVar[str] = "trigger"
    session_id: str
    include_failed: bool = False


@dataclass(frozen=True, slots=True)
class Cancel:
    """Cancel what has not been sent yet."""

    KIND: ClassVar[str] = "cancel"
    session_id: str


@dataclass(frozen=True, slots=True)
class CancelChunk:
    """Report ``cancelled`` for the deliveries of audience chunk ``chunk`` not sent yet."""

    KIND: ClassVar[str] = "cancel_chunk"
    session_id: str
    chunk: int
    #: Why, when a service manager blocked the session (reported as the error, code blocked).
    blocked: str | None = None


@dataclass(frozen=True, slots=True)
class CancelCheck:
    """Whether every dispatcher has passed the session's cancel fences (``SessionState.fences``):
    then nothing more of it can be sent, and its unsent deliveries are reported ``cancelled``."""

    KIND: ClassVar[str] = "cancel_check"
    session_id: str
    blocked: str | None = None


@dataclass(frozen=True, slots=True)
class Fence:
    """A cancelled session's marker in every partition of its dispatch topics: a dispatcher
    that reaches it records the cancel in its partition's ``sends`` rows, so every job behind it
    is withdrawn, on whichever worker owns the partition then."""

    KIND: ClassVar[str] = "fence"
    session_id: str


@dataclass(frozen=True, slots=True)
class Resend:
    """Send the failed deliveries of audience chunk ``chunk`` again (a new attempt)."""

    KIND: ClassVar[str] = "resend"
    session_id: str
    chunk: int


@dataclass(frozen=True, slots=True)
class Release:
    """Dispatch the deliveries of audience chunk ``chunk`` on ``channel`` that its fan-out
    deferred to the window opening at ``due``: one timer per chunk and opening, not one per
    recipient (a campaign held by its window costs a few timers, not a million)."""

    KIND: ClassVar[str] = "release"
    session_id: str
    chunk: int
    channel: str
    due: float
    indexes: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Retry:
    """Dispatch attempt ``attempt`` of one delivery (audience ``index``, ``channel``): a retry
    that the report agent scheduled after a provider's callback said the attempt failed."""

    KIND: ClassVar[str] = "retry"
    session_id: str
    index: int
    channel: str
    attempt: int


@dataclass(frozen=True, slots=True)
class Claim:
    """Open the session of an instruction with an idempotency key, unless the key's fresh
    record names one already. Keyed by the key's anchor (``session_id`` here), whose partition
    holds the record; ``instruction`` is the internal form, ``fingerprint`` its digest."""

    KIND: ClassVar[str] = "claim"
    session_id: str  # the anchor
    client_id: str
    key: str
    fingerprint: str
    instruction: dict[str, Any]
    received_at: float
    source: Literal["api", "kafka"]
    origin: str = ""
    #: The session the audience chunks were written for: opened if the key names none yet.
    candidate: str = ""


@dataclass(frozen=True, slots=True)
class Purge:
    """Delete a completed session's rows, its retention having passed (``streams/retention.py``).
    Fired by the session's purge timer; a session not (or no longer) due is left alone."""

    KIND: ClassVar[str] = "purge"
    session_id: str


@dataclass(frozen=True, slots=True)
class Gone:
    """Forget a deleted session's marker: its id answers 404 from now on, not 410."""

    KIND: ClassVar[str] = "gone"
    session_id: str


@dataclass(frozen=True, slots=True)
class ForgetKey:
    """Delete an idempotency key's record (by its anchor, ``session_id`` here) if it is still
    the one claimed at ``claimed_at`` and its window has passed."""

    KIND: ClassVar[str] = "forget_key"
    session_id: str  # the anchor
    claimed_at: float


@dataclass(frozen=True, slots=True)
class ForgetOrphan:
    """Delete the audience chunks written for ``session_id`` if it never opened (its
    submission failed, and was never retried under the same id)."""

    KIND: ClassVar[str] = "forget_orphan"
    session_id: str


SessionCommand = (
    OpenSession
    | AudienceChunk
    | Discard
    | FanOut
    | Trigger
    | Cancel
    | CancelChunk
    | CancelCheck
    | Resend
    | Release
    | Retry
    | Claim
    | Purge
    | Gone
    | ForgetKey
    | ForgetOrphan
)
_COMMANDS: dict[str, type[SessionCommand]] = {
    cls.KIND: cls
    for cls in (
        OpenSession,
        AudienceChunk,
        Discard,
        FanOut,
        Trigger,
        Cancel,
        CancelChunk,
        CancelCheck,
        Resend,
        Release,
        Retry,
        Claim,
        Purge,
        Gone,
        ForgetKey,
        ForgetOrphan,
    )
}


def decode_command(data: bytes) -> SessionCommand:
    """Decode a session command; ``ValueError`` for anything that is not one."""
    body = jsonbytes.loads(data)
    kind = body.get("kind") if isinstance(body, dict) else None
    if not isinstance(kind, str) or kind not in _COMMANDS:
        raise ValueError(f"unknown session command kind: {kind!r}")
    return decode(_COMMANDS[kind], body)


@dataclass(slots=True)  # not frozen, yet a value: see "Hot records" in switchboard/records.py
class DispatchJob:
    """Send one rendered message to one address: a self-contained unit of provider work."""

    session_id: str
    client_id: str
    channel: str
    index: int
    address: str
    attempt: int
    message: str | None
    subject: str | None = None
    file_url: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    locale: str | None = None
    #: The recipient profile's time zone, for time windows with ``timezone: recipient``.
    timezone: str | None = None
    #: The lane (``options.priority``): ``high`` jobs have a topic and an agent of their own.
    priority: str = "normal"
    #: The session's retry options (``retries``, ``retryIntervalMinutes``): a job is sent by
    #: whichever worker owns its chunk's partition, which need not hold the session.
    retry_options: dict[str, Any] = field(default_factory=dict)
    #: ``options.transactional``: an email without a ``List-Unsubscribe``, which an email
    #: unsubscribe does not withhold (absent, as in every job before it: bulk).
    transactional: bool = False
    #: The send-by deadline (epoch s; ``switchboard/deadline.py``): not handed to a provider
    #: by then, the delivery ends ``expired``. Absent, as in every job before it: none.
    expires_at: float | None = None

    @property
    def key(self) -> str:
        return delivery_key(self.session_id, self.index, self.channel)

    def report(
        self,
        status: Status,
        occurred_at: float,
        *,
        attempt: int | None = None,
        provider_message_id: str | None = None,
        error_code: str | None = None,
        error: str | None = None,
        retryable: bool = False,
        detail: dict[str, Any] | None = None,
        passed: list[str] | None = None,
        retry_at: float | None = None,
        reopen: bool = False,
    ) -> Report:
        """What happened to this job's delivery: a :class:`Report` of its session, client,
        channel, recipient, attempt (unless ``attempt`` says otherwise) and lane."""
        return Report(
            session_id=self.session_id,
            client_id=self.client_id,
            channel=self.channel,
            index=self.index,
            address=self.address,
            status=status,
            attempt=self.attempt if attempt is None else attempt,
            provider_message_id=provider_message_id,
            error_code=error_code,
            error=error,
            retryable=retryable,
            detail={} if detail is None else detail,
            occurred_at=occurred_at,
            passed=[] if passed is None else passed,
            retry_at=retry_at,
            reopen=reopen,
            priority=self.priority,
        )


@dataclass(slots=True)  # not frozen, yet a value: see "Hot records" in switchboard/records.py
class Report:
    """What happened to one delivery attempt (a provider's answer, a callback, a decision)."""

    session_id: str
    client_id: str
    channel: str
    index: int
    address: str
    status: Status
    attempt: int = 0
    provider_message_id: str | None = None
    error_code: str | None = None
    error: str | None = None
    retryable: bool = False
    detail: dict[str, Any] = field(default_factory=dict)
    occurred_at: float = 0.0
    #: Statuses the delivery passed through on its way to ``status``, in order (a provider that
    #: accepts and delivers in one answer reports ``delivered`` having passed ``sent``): each
    #: is its own status event, but one message on the reports topic.
    passed: list[str] = field(default_factory=list)
    #: A retryable failure with attempts left: attempt ``attempt + 1`` is due then (epoch s).
    retry_at: float | None = None
    #: A new round for this delivery (a re-send of a failed one): replaces its state.
    reopen: bool = False
    #: A retryable failure told by a provider's callback (a busy or unanswered call): the report
    #: agent sets ``retry_at`` and schedules the next attempt if the session allows one.
    retry_if_allowed: bool = False
    #: The session's lane (``options.priority``): ``high`` reports have a topic of their own.
    priority: str = "normal"
    #: Told by a provider's status callback, whose ``provider_message_id`` must then be the
    #: delivery's own (``switchboard.deliveries.provider_id_conflict``).
    from_callback: bool = False

    @property
    def key(self) -> str:
        return delivery_key(self.session_id, self.index, self.channel)

    @property
    def statuses(self) -> list[Status]:
        return [*self.passed, self.status]  # type: ignore[list-item]


@dataclass(frozen=True, slots=True)
class WebhookJob:
    """One status event to POST to a session's webhook URL (attempt ``attempt``)."""

    session_id: str
    client_id: str
    url: str
    event_id: str
    body: str  # the encoded payload: the same bytes on every attempt
    attempt: int = 1
    first_at: float = 0.0


@dataclass(frozen=True, slots=True)
class SessionState:
    """A session as the session agent keeps it. ``deliveries`` = recipients x channels."""

    session_id: str
    client_id: str
    channels: list[str]
    recipients: int
    deliveries: int
    chunks: int
    trigger: str
    status: Literal["accepted", "scheduled", "waiting", "dispatching", "cancelled"]
    created_at: float
    source: str
    transport: dict[str, Any]
    options: dict[str, Any]
    idempotency_key: str | None = None
    fanned_out_chunks: int = 0
    cancelled_at: float | None = None
    #: A cancelled session's fences: ``"<topic>/<partition>"`` -> the offset of its ``Fence``.
    fences: dict[str, int] = field(default_factory=dict)
    #: Every dispatcher has passed the fences: nothing more of the session can be sent.
    fenced: bool = False
    #: When its failed deliveries were last sent again (``Trigger(include_failed)``): a purge
    #: is due only for a completion after it (``switchboard/retention.py``).
    resent_at: float | None = None

    @property
    def priority(self) -> str:
        """The session's lane (:func:`priority_of` its options)."""
        return priority_of(self.options)


@dataclass(slots=True)  # not frozen, yet a value: see "Hot records" in switchboard/records.py
class DeliveryState:
    """The latest state of one delivery, owned by the report agent."""

    status: Status
    attempt: int
    address: str
    updated_at: float
    provider_message_id: str | None = None
    error_code: str | None = None
    error: str | None = None
    #: A ``deferred`` delivery's release time (ISO 8601 UTC), as its report told it.
    release_at: str | None = None


@dataclass(frozen=True, slots=True)
class Progress:
    """How many of a session's deliveries are final, by status; owned by the report agent."""

    final: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    completed_at: float | None = None
    #: When the session's expiry sweep is due (None: no sweep armed); see ``ExpireSweep``.
    expiry_due: float | None = None
    #: How many times the session completed (a re-send of failed deliveries opens it again);
    #: names the round of its ``completed`` event.
    completions: int = 0
    #: The offset (on the session's reports partition) of the last report or sweep that wrote
    #: this row: a report at or before it is counted already (``streams/reports.py``).
    applied: int = -1
    #: Deliveries ``deferred`` now (held by a time window; not final, so not in ``counts``).
    deferred: int = 0

    def counted(self, status: str) -> Progress:
        """This progress with one more delivery final in ``status``: the report agent's count,
        about once per delivery, so built directly (``dataclasses.replace`` costs twice as
        much). Every field but ``final`` and ``counts`` is kept (``tests/unit/test_records.py``)."""
        counts = dict(self.counts)
        counts[status] = counts.get(status, 0) + 1
        return Progress(
            final=self.final + 1,
            counts=counts,
            completed_at=self.completed_at,
            expiry_due=self.expiry_due,
            completions=self.completions,
            applied=self.applied,
            deferred=self.deferred,
        )


@dataclass(frozen=True, slots=True)
class ExpireSweep:
    """Expire the session's deliveries still ``sent`` past the report timeout, audience chunk
    ``chunk`` at a time (a command on the reports topic, fired by the session's expiry timer).

    ``started_at`` is when the sweep began (set by its first chunk); ``next_due`` the earliest
    time a delivery seen ``sent`` but not yet due will be."""

    KIND: ClassVar[str] = "expire_sweep"
    session_id: str
    chunk: int = 0
    started_at: float | None = None
    next_due: float | None = None


@dataclass(frozen=True, slots=True)
class JobBatch:
    """The jobs of one session, channel and lane that share a dispatch key (a slice of
    ``DISPATCH_SPREAD`` recipients, ``switchboard/fanout.py``): one record, one dispatcher event,
    one claim in the ``sends`` table, instead of one of each per recipient."""

    KIND: ClassVar[str] = "jobs"
    jobs: list[DispatchJob]

    @property
    def key(self) -> str:
        """The batch's identity: its first delivery (a session's slices never overlap)."""
        return self.jobs[0].key

    @classmethod
    def decode(cls, body: Mapping[str, Any]) -> JobBatch:
        return cls([decode(DispatchJob, item) for item in body["items"]])


@dataclass(frozen=True, slots=True)
class ReportBatch:
    """Reports of one session (its reports topic is keyed by session id), applied by the report
    agent as one event: one progress write and one round of status events for many deliveries."""

    KIND: ClassVar[str] = "reports"
    reports: list[Report]

    @classmethod
    def decode(cls, body: Mapping[str, Any]) -> ReportBatch:
        return cls([decode(Report, item) for item in body["items"]])


@dataclass(frozen=True, slots=True)
class Purged:
    """The marker a deleted session leaves on its partition (``keys.purged_row``): enough to
    answer ``410 Gone`` to its own client, and 404 to any other."""

    client_id: str
    completed_at: float
    purged_at: float


@dataclass(frozen=True, slots=True)
class PurgeDeliveries:
    """Delete the ``deliveries`` rows of audience chunk ``chunk`` of a purged session (one
    event per chunk on its reports topic), then, after the last chunk, its progress row. It
    carries the session's shape, whose row is already gone."""

    KIND: ClassVar[str] = "purge_deliveries"
    session_id: str
    chunk: int
    recipients: int
    channels: list[str]


@dataclass(frozen=True, slots=True)
class PurgeSends:
    """Delete a purged session's ``sends`` rows in one partition: one record in every
    partition of its dispatch topics, like a cancel's fence. ``channels``: the channels whose
    rows this topic's dispatcher wrote (None: every channel, the high-priority lane)."""

    KIND: ClassVar[str] = "purge_sends"
    session_id: str
    channels: list[str] | None = None
