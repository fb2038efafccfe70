"""Opt-outs by SMS keyword (README: "Following what happened"). Pure.

An inbound SMS whose whole body, trimmed and in any case, is one of the opt-out keywords opts
its sender out of the client's messages; an opt-in keyword opts them back in; ``HELP`` answers
the client's help text. Anything else is not a keyword (a reply to a campaign is not a STOP).

Opt-outs are kept per client and number, in a replicated table (``streams/replica.py``) checked
before every SMS is sent: a message queued before the STOP is suppressed, never sent.
"""

from __future__ import annotations

from typing import Final, Literal

from twilio.twiml.messaging_response import MessagingResponse

__all__ = ["OPT_IN", "OPT_OUT", "Keyword", "key", "keyword", "reply"]

OPT_OUT: Final = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"}
)
OPT_IN: Final = frozenset({"START", "UNSTOP", "YES"})
HELP: Final = frozenset({"HELP", "INFO"})

Keyword = Literal["opt-out", "opt-in", "help"]

DEFAULT_HELP: Final = "Reply STOP to unsubscribe, START to subscribe again."
_REPLIES: Final = {
    "opt-out": "You are unsubscribed and will receive no more messages from this number. Reply START to subscribe again.",
    "opt-in": "You are subscribed again. Reply STOP to unsubscribe.",
}


def keyword(body: str | None) -> Keyword | None:
    """The keyword an inbound message body is, if it is one."""
    word = (body or "").strip().upper()
    if word in OPT_OUT:
        return "opt-out"
    if word in OPT_IN:
        return "opt-in"
    if word in HELP:
        return "help"
    return None


def key(client_id: str, number: str) -> bytes:
    """The opt-out table's key of a client's recipient (an E.164 number)."""
    return f"{client_id}\x1f{number}".encode()


def reply(kind: Keyword | None, help_text: str | None) -> str:
    """The TwiML answer to an inbound message: a confirmation, the help text, or nothing."""
    response = MessagingResponse()
    if kind == "help":
        response.message(help_text or DEFAULT_HELP)
    elif kind is not None:
        response.message(_REPLIES[kind])
    return str(response)
