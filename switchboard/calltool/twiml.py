"""TwiML for the call tool (README: "The call tool") and the voice broadcast transport. Pure.

Every document is built with twilio's ``VoiceResponse`` (which escapes text and attributes) and
returned as an XML string with its declaration. Nothing here reads a clock, a store or the
network: the HTTP layer looks the call and its campaign up, calls one function, answers its string.

URLs
    :class:`CallUrls` is the only place that knows the path layout; every step is
    ``{base}/twilio/calls/{call_id}/{step}`` with ``step`` one of :data:`STEPS`. The call id is
    percent-encoded as one path segment. The base URL must be absolute ``http(s)`` (Twilio
    signs and fetches exactly the URL given), and a trailing ``/`` is dropped.

Flow (every request is a POST, as Twilio signs the POST parameters)::

    start ─► Gather(1 digit, action menu?attempt=0){Play clip} ─► Redirect menu?attempt=1
    menu?attempt=n, no Digits   ─► menu n: Gather(1 digit, 5 s, action menu?attempt=n)
                                   {Play menu clip | Say menu text}
                                   ─► Redirect menu?attempt=n+1, or Say goodbye + Hangup when n = 3
    menu?attempt=n with Digits  ─► "1": Redirect connect
                                   "2": Redirect start (hear the message again)
                                   other, or empty: menu n+1 (goodbye after the third)
    connect ─► Dial(action=dial-status, timeout){Number sendDigits=extension}
    dial-status with DialCallStatus ─► Hangup after a conversation, else Say sorry + Hangup

``attempt`` counts the menus the member has heard: the clip's gather posts as attempt
:data:`CLIP_ATTEMPT` (0), so whatever it posts leads to menu 1. A member who presses nothing
hears exactly :data:`MAX_MENU_ATTEMPTS` menus, then goodbye (as the Champaign call tool does),
whichever way Twilio ends a silent ``<Gather>``: by going on to the next verb (its default:
the ``<Redirect>`` to the next menu), or by posting an empty ``Digits`` to the gather's action
(``actionOnEmptyResult``, or the finish key ``#`` pressed alone). Before, the clip's gather
posted as attempt 1, so an empty post there counted a menu nobody had heard, and the member
heard two.

The seed (Champaign) had 1 and 2 the other way round; the contract wins: 1 connects, 2 replays.

Rules
    - A key pressed while the campaign clip plays is posted to the menu URL as a menu choice, so
      "1" connects at once and "2" restarts the clip; the clip's gather waits only
      :data:`START_GATHER_TIMEOUT` seconds after the clip before moving on to the menu.
    - The attempt counter travels in the ``attempt`` query parameter (:func:`parse_attempt` reads
      it back and never fails). An invalid key counts as an attempt, so a caller pressing wrong keys
      is hung up on after :data:`MAX_MENU_ATTEMPTS` menus, like one who presses nothing.
    - The connect step is a ``<Redirect>`` rather than inline TwiML so that the ``/connect``
      handler alone moves the call to ``connected`` (switchboard.calltool.calls).
    - An extension is sent with ``sendDigits`` once the target answers; unless it already starts
      with a ``w`` (half a second's wait), :data:`EXTENSION_PAUSE` is put in front, because most
      switchboards drop digits sent the instant they pick up.

Failure modes: :class:`ValueError` for a base URL that is not absolute http(s) or has a query or
fragment, an empty call id or target number, an extension with characters other than
``0-9 * # w W``, or a broadcast with neither file nor text. Nothing else raises.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal, get_args
from urllib.parse import quote, urlencode, urlsplit

from twilio.twiml.voice_response import Dial, Gather, VoiceResponse

__all__ = [
    "ATTEMPT_PARAM",
    "CALL_PATH_PREFIX",
    "CLIP_ATTEMPT",
    "DEFAULT_DIAL_TIMEOUT",
    "EXTENSION_PAUSE",
    "MAX_MENU_ATTEMPTS",
    "MENU_GATHER_TIMEOUT",
    "START_GATHER_TIMEOUT",
    "STEPS",
    "CallScript",
    "CallUrls",
    "DialTarget",
    "Step",
    "after_dial_twiml",
    "broadcast_twiml",
    "connect_twiml",
    "goodbye_twiml",
    "menu_choice_twiml",
    "menu_step_twiml",
    "menu_twiml",
    "parse_attempt",
    "start_twiml",
]

Step = Literal["start", "menu", "connect", "dial-status", "status"]
STEPS: Final[tuple[Step, ...]] = get_args(Step)

CALL_PATH_PREFIX: Final = "/twilio/calls"
ATTEMPT_PARAM: Final = "attempt"
#: Menus played without an answer before the call says goodbye and hangs up.
MAX_MENU_ATTEMPTS: Final = 3
#: The ``attempt`` the campaign clip's gather posts with: no menu has been heard yet.
CLIP_ATTEMPT: Final = 0
#: Seconds the menu waits for a key after it has been played.
MENU_GATHER_TIMEOUT: Final = 5
#: Seconds the clip's gather waits after the clip: the menu follows, so no need to linger.
START_GATHER_TIMEOUT: Final = 1
#: Seconds the target's phone rings before the dial gives up (Twilio's default is 30).
DEFAULT_DIAL_TIMEOUT: Final = 30
#: One second of pause before an extension's digits.
EXTENSION_PAUSE: Final = "ww"

_POST: Final = "POST"
_EXTENSION: Final = re.compile(r"[0-9*#wW]+")
#: Dial outcomes after which the member has spoken to the target: nothing more to say.
_CONVERSED: Final = frozenset({"completed", "answered"})


@dataclass(frozen=True, slots=True)
class CallUrls:
    """The public URLs of one call's TwiML steps and callbacks."""

    base_url: str
    call_id: str

    def __post_init__(self) -> None:
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"the public base URL must be absolute http(s), not {self.base_url!r}")
        if parts.query or parts.fragment:
            raise ValueError("the public base URL must not have a query or a fragment")
        if not self.call_id:
            raise ValueError("the call id must not be empty")
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))

    def url(self, step: Step, query: Mapping[str, str | int] | None = None) -> str:
        path = f"{CALL_PATH_PREFIX}/{quote(self.call_id, safe='')}/{step}"
        suffix = f"?{urlencode(query)}" if query else ""
        return f"{self.base_url}{path}{suffix}"

    @property
    def start(self) -> str:
        return self.url("start")

    def menu(self, attempt: int = 1) -> str:
        return self.url("menu", {ATTEMPT_PARAM: attempt})

    @property
    def connect(self) -> str:
        return self.url("connect")

    @property
    def dial_status(self) -> str:
        """Where ``<Dial action>`` posts ``DialCallStatus``."""
        return self.url("dial-status")

    @property
    def status(self) -> str:
        """The member call's ``statusCallback`` (``CallStatus`` events), given to ``calls.create``."""
        return self.url("status")


@dataclass(frozen=True, slots=True)
class CallScript:
    """What a campaign's call says. Clips win over text; ``language`` and ``voice`` go to ``<Say>``.

    Without a ``sound_clip_url`` the start step says ``message_text``; with neither it goes
    straight to the menu.
    """

    sound_clip_url: str | None = None
    message_text: str | None = None
    menu_clip_url: str | None = None
    menu_text: str = "Press 1 to be connected. Press 2 to hear the message again."
    language: str = "en-US"
    voice: str | None = None
    goodbye_text: str = "Goodbye."
    not_connected_text: str = "Sorry, we could not connect your call. Goodbye."


@dataclass(frozen=True, slots=True)
class DialTarget:
    """Whom the connect step dials: an E.164 number, an optional extension and caller id."""

    number: str
    extension: str | None = None
    caller_id: str | None = None

    def __post_init__(self) -> None:
        if not self.number:
            raise ValueError("the target number must not be empty")
        if self.extension is not None and not _EXTENSION.fullmatch(self.extension):
            raise ValueError(
                f"an extension may hold only digits, *, # and w (a half-second wait), "
                f"not {self.extension!r}"
            )


def parse_attempt(value: str | None) -> int:
    """The menu attempt from its query parameter: 1 when missing or not a whole number, else
    between :data:`CLIP_ATTEMPT` (0) and ``MAX_MENU_ATTEMPTS + 1`` (which means "hang up"), so a
    tampered URL cannot loop or fail."""
    if value is None or not value.isascii() or not value.isdigit():
        return 1
    return min(int(value), MAX_MENU_ATTEMPTS + 1)


def _xml(response: VoiceResponse) -> str:
    xml: str = response.to_xml()
    return xml


def _say(parent: VoiceResponse | Gather, text: str, script: CallScript) -> None:
    parent.say(text, language=script.language, voice=script.voice)


def _end(response: VoiceResponse, script: CallScript, text: str | None = None) -> None:
    _say(response, text if text is not None else script.goodbye_text, script)
    response.hangup()


def start_twiml(call_id: str, base_url: str, script: CallScript) -> str:
    """The campaign's clip (or message) inside a one-digit gather that posts to the menu as
    attempt :data:`CLIP_ATTEMPT`, then a redirect to the first menu."""
    urls = CallUrls(base_url, call_id)
    response = VoiceResponse()
    if script.sound_clip_url or script.message_text:
        gather = Gather(
            num_digits=1,
            action=urls.menu(CLIP_ATTEMPT),
            method=_POST,
            timeout=START_GATHER_TIMEOUT,
        )
        if script.sound_clip_url:
            gather.play(script.sound_clip_url)
        else:
            _say(gather, script.message_text or "", script)
        response.append(gather)
    response.redirect(urls.menu(1), method=_POST)
    return _xml(response)


def menu_twiml(call_id: str, base_url: str, script: CallScript, attempt: int = 1) -> str:
    """Menu number ``attempt``: a one-digit gather posting to the menu URL (the choice is then
    handled by :func:`menu_choice_twiml`), then the next attempt, or goodbye after the last one.
    An ``attempt`` above :data:`MAX_MENU_ATTEMPTS` is goodbye and hang up at once; one below 1 is
    the first menu."""
    if attempt > MAX_MENU_ATTEMPTS:
        return goodbye_twiml(script)
    attempt = max(attempt, 1)
    urls = CallUrls(base_url, call_id)
    response = VoiceResponse()
    gather = Gather(
        num_digits=1, action=urls.menu(attempt), method=_POST, timeout=MENU_GATHER_TIMEOUT
    )
    if script.menu_clip_url:
        gather.play(script.menu_clip_url)
    else:
        _say(gather, script.menu_text, script)
    response.append(gather)
    # Twilio reaches what follows the gather only when no key was pressed within the timeout.
    if attempt < MAX_MENU_ATTEMPTS:
        response.redirect(urls.menu(attempt + 1), method=_POST)
    else:
        _end(response, script)
    return _xml(response)


def menu_choice_twiml(
    digits: str | None, call_id: str, base_url: str, script: CallScript, attempt: int = 1
) -> str:
    """The answer to a key pressed at menu ``attempt`` (:data:`CLIP_ATTEMPT` for the clip): "1"
    connects, "2" replays the campaign message, anything else (an empty ``Digits`` included:
    nothing pressed) is the next menu, ``attempt + 1``, or goodbye after the last."""
    urls = CallUrls(base_url, call_id)
    choice = (digits or "").strip()
    if choice == "1":
        response = VoiceResponse()
        response.redirect(urls.connect, method=_POST)
        return _xml(response)
    if choice == "2":
        response = VoiceResponse()
        response.redirect(urls.start, method=_POST)
        return _xml(response)
    return menu_twiml(call_id, base_url, script, max(attempt, CLIP_ATTEMPT) + 1)


def menu_step_twiml(
    digits: str | None, call_id: str, base_url: str, script: CallScript, attempt: int
) -> str:
    """The answer to a request to ``menu?attempt=<attempt>``: without ``Digits`` (a
    ``<Redirect>``) menu ``attempt`` is played; with ``Digits``, even empty (a gather's action),
    it is the choice made at that menu (:func:`menu_choice_twiml`)."""
    if digits is None:
        return menu_twiml(call_id, base_url, script, attempt)
    return menu_choice_twiml(digits, call_id, base_url, script, attempt)


def connect_twiml(
    call_id: str,
    base_url: str,
    target: DialTarget,
    *,
    timeout: int = DEFAULT_DIAL_TIMEOUT,
) -> str:
    """Dial the target and bridge it with the member; Twilio posts ``DialCallStatus`` to the
    dial-status URL when the dial ends (whoever hangs up), and continues with the answer."""
    urls = CallUrls(base_url, call_id)
    response = VoiceResponse()
    dial = Dial(action=urls.dial_status, method=_POST, timeout=timeout, caller_id=target.caller_id)
    send_digits = None
    if target.extension:
        send_digits = (
            target.extension if target.extension[0] in "wW" else EXTENSION_PAUSE + target.extension
        )
    dial.number(target.number, send_digits=send_digits)
    response.append(dial)
    return _xml(response)


def after_dial_twiml(dial_call_status: str | None, script: CallScript) -> str:
    """The answer to the dial-status callback: hang up after a conversation (``completed`` or
    ``answered``), else tell the member the target could not be reached, then hang up."""
    response = VoiceResponse()
    if dial_call_status in _CONVERSED:
        response.hangup()
    else:
        _end(response, script, script.not_connected_text)
    return _xml(response)


def goodbye_twiml(script: CallScript | None = None) -> str:
    """Say goodbye and hang up."""
    response = VoiceResponse()
    _end(response, script or CallScript())
    return _xml(response)


def broadcast_twiml(
    message: str | None, file_url: str | None, language: str | None = "en-US"
) -> str:
    """A voice broadcast: ``<Play>`` the file when there is one, else ``<Say>`` the message.

    Raises :class:`ValueError` when both are empty: an empty call would still be billed.
    """
    response = VoiceResponse()
    if file_url:
        response.play(file_url)
    elif message and message.strip():
        response.say(message, language=language)
    else:
        raise ValueError("a voice broadcast needs a file URL or a message")
    return _xml(response)
