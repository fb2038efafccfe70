"""Why a delivery was held or not sent: a closed set of reason codes per status. Pure.

Every status event whose status is ``deferred``, ``suppressed``, ``cancelled``, ``expired`` or
``rejected`` (a delivery's or a session's) says why, in the fields the ``StatusEvent`` schema
already has:

- ``detail.reason``: one of the codes of :data:`REASONS` for its status, never anything else,
  so a reader can switch on it (the README has a table per status);
- ``error``: the human text, with the particulars (which window, which zone, which manager);
- ``error_code``: unchanged in meaning, the provider's code when a provider decided (Twilio
  ``21610``, APNs ``Unregistered``), else Switchboard's own, which is then the reason code;
- for ``deferred``, ``detail`` also names the window that held the delivery, the zone it is
  closed in, every zone it is read in and the release time (:func:`switchboard.windows.deferred`,
  next to the hold it describes).

:func:`annotate` is applied where the events are built (``switchboard/deliveries.py`` for
deliveries, the session agent for a session's own events), so a reason cannot be forgotten by
one of the many places that decide a delivery's fate: a code they give that the set does not
know becomes the status's catch-all (:data:`FALLBACK`), and the code itself stays in
``error_code``. Adding a code means adding it here and to the README's tables
(``tests/unit/test_reasons.py`` checks both agree).

One ``accepted`` event has a reason too: a channel fallback's next step
(``switchboard/fallback.py``), whose ``detail.reason`` is ``fallback`` and ``detail.why`` says
why the recipient's previous channel was left (``sms not delivered within 120 s``, ``sms
undelivered: ...``). It is set where the step is started; every other ``accepted`` has none.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from switchboard.status import Status

__all__ = [
    "FALLBACK",
    "REASONED",
    "REASONS",
    "WINDOW_CLOSED",
    "annotate",
    "reason_for",
]

WINDOW_CLOSED: Final = "window-closed"

#: Status -> reason code -> what it means (the README's tables say the same).
REASONS: Final[Mapping[str, Mapping[str, str]]] = {
    "accepted": {
        "fallback": "a channel fallback's next step (options.fallback): the recipient's previous "
        "channel ended without being delivered, or was not delivered within afterSeconds of "
        "its hand-off; detail.fallback_from names it and detail.why says which",
    },
    "deferred": {
        WINDOW_CLOSED: "the channel's time window is closed in the recipient's time zone (or in "
        "one of the zones its number may be in); the delivery is released when it opens",
    },
    "suppressed": {
        "opted-out": "the number or address opted out for this client (STOP, an email "
        "unsubscribe, or a provider's earlier report of an opt-out)",
        "scrubbed": "a service manager removed the recipient at the session's start (a "
        "landline or an invalid number)",
        "provider-suppressed": "the provider refused the address for good (Twilio 21610 "
        "unsubscribed recipient, a push token no longer valid); error_code is the provider's",
    },
    "cancelled": {
        "cancelled": "the session was cancelled (POST /v1/sessions/{id}/cancel) before this "
        "delivery was sent",
        "blocked": "a service manager blocked the session at its start",
        "provider-cancelled": "the provider reported the message or call cancelled",
    },
    "expired": {
        "no-report": "sent, but no final report came from the provider in time "
        "(SWITCHBOARD_REPORT_TIMEOUT; a call: its campaign's silence_limit)",
        "deadline": "not handed to a provider before the send-by deadline "
        "(options.expiresAt or options.ttlSeconds)",
    },
    "rejected": {
        "no-address": "the recipient has no address for the channel",
        "template": "the message could not be rendered for the recipient (a missing variable, "
        "a template error)",
        "too-long": "the rendered SMS is longer than can be sent",
        "no-common-window": "the channel's window is never open in all the zones the number may "
        "be in at once",
        "idempotency-conflict": "the idempotency key names a session with another instruction "
        "(a session's own event, for an instruction produced to Kafka)",
        "invalid": "any other refusal of the delivery; error says why",
    },
}

#: The statuses whose events always carry a reason (an ``accepted`` has one only as a
#: fallback step, set where it is started).
REASONED: Final[frozenset[str]] = frozenset(REASONS) - {"accepted"}

#: The reason of an event whose ``error_code`` is not a code of its status (a provider's code).
FALLBACK: Final[Mapping[str, str]] = {
    "deferred": WINDOW_CLOSED,
    "suppressed": "provider-suppressed",
    "cancelled": "cancelled",
    "expired": "no-report",
    "rejected": "invalid",
}

_TEXT: Final[Mapping[str, str]] = {
    "cancelled": "the session was cancelled",
    "provider-cancelled": "the provider cancelled the message",
    "no-report": "no final report from the provider in time",
    "deadline": "not sent before its send-by deadline",
}


def reason_for(status: str, error_code: str | None, *, provider: bool = False) -> str | None:
    """The reason code of an event (or a stored delivery) with ``status`` and ``error_code``;
    None for a status that carries no reason. ``provider``: the status was told by a provider's
    callback (a ``cancelled`` from Twilio is the provider's, not the session's)."""
    if status not in REASONED:
        return None
    codes = REASONS[status]
    if error_code is not None and error_code in codes:
        return error_code
    if provider and status == "cancelled":
        return "provider-cancelled"
    return FALLBACK[status]


def annotate(
    status: Status,
    error_code: str | None,
    error: str | None,
    detail: Mapping[str, Any],
    *,
    provider: bool = False,
) -> tuple[str | None, str | None, Mapping[str, Any]]:
    """``(error_code, error, detail)`` of an event, with its reason: ``detail.reason`` set, and
    a missing ``error_code`` or ``error`` filled with the reason's code and text. Anything else
    is answered as given (the same objects), so a ``sent`` or ``delivered`` costs one lookup."""
    if status not in REASONED:
        return error_code, error, detail
    reason = reason_for(status, error_code, provider=provider)
    assert reason is not None
    text = error or _TEXT.get(reason) or REASONS[status][reason]
    return error_code or reason, text, {**detail, "reason": reason}
