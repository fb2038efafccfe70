"""Address validation and normalisation, per kind of address. Pure functions.

Each ``normalize_*`` function returns the canonical form of a valid address and raises
:class:`AddressError` (whose message is the reason, ready for a ``FieldError``) otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Final
from urllib.parse import SplitResult, urlsplit

import phonenumbers
from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES

from switchboard.e164 import valid_e164

__all__ = [
    "NORMALIZERS",
    "AddressError",
    "normalize_email",
    "normalize_phone",
    "normalize_push_token",
    "normalize_slack",
    "normalize_url",
]


class AddressError(ValueError):
    """The address is not valid; the message says why."""


_PHONE_CHARACTERS: Final = re.compile(r"\+[0-9 ()\-.]+")


def normalize_phone(value: str) -> str:
    """An E.164 number (``+`` and country code), checked for plausibility with libphonenumber.

    Spaces, dashes, dots and parentheses are allowed and dropped. Letters (vanity numbers) and
    extensions are refused: a message cannot dial an extension, and silently dropping it would
    reach the wrong person."""
    text = value.strip()
    if text.startswith("whatsapp:"):
        text = text[len("whatsapp:") :]
    if not text.startswith("+"):
        raise AddressError(
            "not a valid E.164 phone number: it must start with + and the country code"
        )
    # The usual form, ``+`` and digits: libphonenumber's answer without its parser
    # (switchboard/e164.py), which leaves every other case, and every number it would refuse,
    # to the library.
    return valid_e164(text) or _library_phone(text)


def _library_phone(text: str) -> str:
    """:func:`normalize_phone` of ``text`` (stripped, starting with ``+``) by libphonenumber
    alone: the answer :func:`switchboard.e164.valid_e164` gives faster, and every other."""
    if not _PHONE_CHARACTERS.fullmatch(text):
        raise AddressError(
            "not a valid E.164 phone number: only digits after the +, "
            "with optional spaces, dashes, dots or parentheses"
        )
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException as exc:
        raise AddressError(f"not a valid E.164 phone number: {exc._msg}") from None
    if number.extension:
        raise AddressError("not a valid E.164 phone number: extensions are not supported")
    if not phonenumbers.is_possible_number(number):
        raise AddressError("not a valid E.164 phone number: wrong number of digits for its country")
    if not phonenumbers.is_valid_number(number):
        raise AddressError("not a valid E.164 phone number: no such number range in its country")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


#: The plain ASCII addresses almost every audience is made of: a dot-atom local part and a
#: lower-case-able domain of letter-digit-hyphen labels under an alphabetic top-level domain.
#: For these, email-validator's answer is known without running it (about 25 µs per address,
#: paid by every recipient of a campaign): the address as given, its domain lower-cased.
#: ``tests/unit/test_addresses.py`` checks that equivalence over generated addresses.
_PLAIN_EMAIL: Final = re.compile(
    r"(?P<local>[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*)"
    r"@(?P<domain>(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63})"
)
_RESERVED_DOMAINS: Final = frozenset(SPECIAL_USE_DOMAIN_NAMES)
_ROLE_MAILBOXES: Final = frozenset(CASE_INSENSITIVE_MAILBOX_NAMES)


def normalize_email(value: str) -> str:
    """A syntactically valid address (no DNS lookup); the domain is lower-cased and IDNA-checked."""
    plain = _PLAIN_EMAIL.fullmatch(value.strip())
    if plain is not None and len(plain["local"]) <= 64 and len(plain[0]) <= 254:
        domain = plain["domain"].lower()
        if "--" not in domain and not _reserved(domain):
            local = plain["local"]
            # email-validator lower-cases the role mailboxes of RFC 2142 (postmaster, ftp, ...).
            if local.lower() in _ROLE_MAILBOXES:
                local = local.lower()
            return f"{local}@{domain}"
    try:
        result = validate_email(value.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise AddressError(f"not a valid email address: {exc}") from None
    normalized: str = result.normalized
    return normalized


def _reserved(domain: str) -> bool:
    """Whether ``domain`` is a special-use name (RFC 6761: ``test``, ``localhost``...) or under
    one: a set lookup per label (asked for every email recipient of an audience)."""
    while domain not in _RESERVED_DOMAINS:
        dot = domain.find(".")
        if dot < 0:
            return False
        domain = domain[dot + 1 :]
    return True


_APNS_TOKEN: Final = re.compile(r"[0-9a-fA-F]{64,200}")
_FCM_TOKEN: Final = re.compile(r"[A-Za-z0-9_\-:]{100,4096}")


def normalize_push_token(value: str) -> str:
    """An APNs device token (hex, 64+ characters, lower-cased) or an FCM registration token."""
    text = value.strip()
    if _APNS_TOKEN.fullmatch(text):
        return text.lower()
    if _FCM_TOKEN.fullmatch(text):
        return text
    raise AddressError(
        "not a valid push token: expected an APNs device token (64 or more hex characters) "
        "or an FCM registration token (100 or more characters of A-Z a-z 0-9 _ - :)"
    )


_SLACK_ID: Final = re.compile(r"[CGDU][A-Z0-9]{8,}")
_SLACK_NAME: Final = re.compile(r"#[a-z0-9][a-z0-9_\-]{0,79}")


def normalize_slack(value: str) -> str:
    """A Slack conversation id (``C…``, ``G…``, ``D…``, ``U…``), a ``#channel-name``, or an
    incoming-webhook URL (``https://hooks.slack.com/...``)."""
    text = value.strip()
    if _SLACK_ID.fullmatch(text) or _SLACK_NAME.fullmatch(text):
        return text
    if text.startswith(("https://", "http://")):
        parts = _split_url(text)
        if parts.scheme == "https" and parts.hostname == "hooks.slack.com":
            return text
        raise AddressError("not a valid Slack webhook URL: it must be https://hooks.slack.com/...")
    raise AddressError(
        "not a valid Slack address: expected a conversation id such as C0123456789, "
        "a #channel-name, or an incoming-webhook URL"
    )


def normalize_url(value: str, *, allow_http: bool = False) -> str:
    """An absolute https URL (http too when ``allow_http``) with a host."""
    text = value.strip()
    parts = _split_url(text)
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes:
        raise AddressError(f"not a valid URL: the scheme must be {' or '.join(schemes)}")
    if not parts.hostname:
        raise AddressError("not a valid URL: it has no host")
    return text


def _split_url(text: str) -> SplitResult:
    # urlsplit silently skips tabs and line breaks (WHATWG rules), but the text we would return
    # still has them; and it raises ValueError for a malformed IPv6 host or port.
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in text):
        raise AddressError("not a valid URL: it contains spaces or control characters")
    try:
        parts = urlsplit(text)
        _ = parts.port  # raises ValueError for a port that is not a number
    except ValueError as exc:
        raise AddressError(f"not a valid URL: {exc}") from None
    return parts


#: Normaliser for each recipient-profile address field.
NORMALIZERS: Final[Mapping[str, Callable[[str], str]]] = {
    "phone": normalize_phone,
    "email": normalize_email,
    "push_token": normalize_push_token,
    "slack": normalize_slack,
}
