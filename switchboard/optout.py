"""Opt-outs by SMS keyword (README: "Following what happened"). Pure.

An inbound SMS whose whole body, trimmed and in any case, is one of the opt-out keywords opts
its sender out of the client's messages; an opt-in keyword opts them back in; ``HELP`` answers
the client's help text. Anything else is not a keyword (a reply to a campaign is not a STOP).

Opt-outs are kept per client and address, in a replicated table (``streams/replica.py``)
checked before every send: a message queued before the STOP is suppressed, never sent.

Scope (issue 14): a number's opt-out applies to every channel that reaches that number
(:data:`PHONE_CHANNELS`: sms, voice and whatsapp) unless the client narrows it
(``optout_channels`` in clients.yaml, :func:`applies`); an email address's unsubscribe (the
``List-Unsubscribe`` one-click endpoint, ``switchboard/unsubscribe.py``) applies to its bulk email,
never to a send marked ``options.transactional``. Both live under the same key design, per client
and address (:func:`key`), the address normalised so that every form of one number or mailbox
finds the same row.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final, Literal

from twilio.twiml.messaging_response import MessagingResponse

__all__ = [
    "DEFAULT_CHANNELS",
    "OPT_IN",
    "OPT_OUT",
    "PHONE_CHANNELS",
    "Keyword",
    "applies",
    "key",
    "keyword",
    "normalize",
    "reply",
]

#: The channels whose addresses are phone numbers: a number's opt-out can apply to each.
PHONE_CHANNELS: Final = ("sms", "voice", "whatsapp")
#: Where a number's opt-out applies when the client does not narrow it: everywhere it reaches.
DEFAULT_CHANNELS: Final = frozenset(PHONE_CHANNELS)

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


def normalize(address: str) -> str:
    """The form of ``address`` the opt-out table is keyed by.

    A phone number (validated E.164 already) loses Twilio's ``whatsapp:`` prefix, so the number a
    STOP came from matches its WhatsApp deliveries; an email address is lower-cased whole (its
    domain is case-insensitive, and its local part is in practice: when ``Ana@`` unsubscribes,
    ``ana@`` must not be mailed, and over-matching only withholds bulk email)."""
    text = address.strip()
    if "@" in text:
        return text.lower()
    return text.removeprefix("whatsapp:")


def key(client_id: str, address: str) -> bytes:
    """The opt-out table's key of a client's recipient (an E.164 number or an email address,
    normalised by :func:`normalize` here, so callers may pass either form)."""
    return f"{client_id}\x1f{normalize(address)}".encode()


def applies(channel: str, optout_channels: Collection[str], *, transactional: bool = False) -> bool:
    """Whether a recorded opt-out of the delivery's address withholds a send on ``channel``.

    A phone channel is covered when the client's ``optout_channels`` (default
    :data:`DEFAULT_CHANNELS`) lists it; email is covered unless the send is transactional (an
    unsubscribe from bulk mail does not stop a password reset); push and slack are never
    (their addresses are devices and workspaces, which no opt-out names)."""
    if channel in PHONE_CHANNELS:
        return channel in optout_channels
    if channel == "email":
        return not transactional
    return False


def reply(kind: Keyword | None, help_text: str | None) -> str:
    """The TwiML answer to an inbound message: a confirmation, the help text, or nothing."""
    response = MessagingResponse()
    if kind == "help":
        response.message(help_text or DEFAULT_HELP)
    elif kind is not None:
        response.message(_REPLIES[kind])
    return str(response)
