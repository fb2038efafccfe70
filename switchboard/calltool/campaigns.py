"""The call tool's campaigns (README: "The call tool"): configuration and requests. Pure.

A client's ``campaigns`` (``clients.<id>.campaigns`` in ``clients.yaml``) maps a campaign id to::

    save-the-bees:
      sound_clip_url: https://cdn.example.org/bees/message.mp3  # or message_text (spoken)
      menu_clip_url: https://cdn.example.org/bees/menu.mp3      # or menu_text (spoken)
      language: en-GB                # of every spoken text; default en-US
      caller_id: "+442071838750"     # the number members see; default: the voice channel's `from`
      default_region: GB             # members may type national numbers of this country
      checksum_secret_env: BEES_KEY  # enables checksummed manual targets (the secret's variable)
      silence_limit: 600             # seconds without a Twilio callback before `unknown`
      targets:
        - {id: mp-smith, name: Jane Smith MP, phone_number: "+442079460000",
           extension: "123", caller_id: "+442071838751"}

:func:`parse_campaigns` checks all of it and raises :class:`InvalidCampaigns` (a
:class:`~switchboard.errors.ConfigError`) listing every problem with its path, e.g.
``campaigns.save-the-bees.targets[0].phone_number``. Nothing here reads the environment:
``checksum_secret_env`` is only a name, resolved by the caller when a manual target arrives.

:func:`checksum_secret` gives the bytes that sign a campaign's manual targets, or a
:class:`~switchboard.errors.ConfigError` saying why there are none (the variable is unset, or
its secret is shorter than :data:`~switchboard.calltool.calls.MIN_SECRET_BYTES`);
:func:`checksum_secret_problems` lists those reasons for every campaign of a client, for
``switchboard clients apply`` and the worker's start, which refuse them: a campaign that names
a secret it cannot use would refuse every manual target.

:func:`resolve_call_request` reads the body of ``POST /api/call`` against the parsed campaigns
and returns a :class:`CallRequest` or raises :class:`~switchboard.errors.ValidationFailed` with
every problem (the field's name and why), ready for a 422.

Identifiers (campaign and target ids) are 1-64 characters of ``A-Z a-z 0-9 _ -``: they appear
in Kafka keys joined with ``/``, so they never contain one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import phonenumbers

from switchboard.calltool.calls import (
    MIN_SECRET_BYTES,
    InvalidMemberNumber,
    normalize_member_number,
    verify_target_checksum,
)
from switchboard.calltool.twiml import CallScript, DialTarget
from switchboard.errors import ConfigError, FieldError, ValidationFailed

__all__ = [
    "DEFAULT_LANGUAGE",
    "DEFAULT_SILENCE_LIMIT",
    "MANUAL_TARGETS_MISCONFIGURED",
    "CallRequest",
    "Campaign",
    "InvalidCampaigns",
    "SecretLookup",
    "Target",
    "checksum_secret",
    "checksum_secret_problems",
    "parse_campaigns",
    "resolve_call_request",
    "secret_from",
]

DEFAULT_LANGUAGE: Final = "en-US"
#: Seconds without any Twilio callback before the member call's status becomes ``unknown``.
#: Twilio reports ``initiated`` at once and gives up ringing after 60 s, so ten minutes of
#: silence means the callbacks are lost, not late.
DEFAULT_SILENCE_LIMIT: Final = 600.0
_MAX_SILENCE_LIMIT: Final = 24 * 3600.0

_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,63}")
_E164: Final = re.compile(r"\+[1-9]\d{5,14}")
_EXTENSION: Final = re.compile(r"[0-9*#wW]{1,40}")
_LANGUAGE: Final = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*")
_ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_MAX_TEXT: Final = 4000  # Twilio's limit for a whole TwiML document is 4,000 characters

_CAMPAIGN_KEYS: Final = frozenset(
    {
        "targets",
        "sound_clip_url",
        "message_text",
        "menu_clip_url",
        "menu_text",
        "language",
        "caller_id",
        "default_region",
        "checksum_secret_env",
        "silence_limit",
    }
)
_TARGET_KEYS: Final = frozenset({"id", "name", "phone_number", "extension", "caller_id"})


class InvalidCampaigns(ConfigError):
    """The campaigns configuration is unusable; ``errors`` has every problem with its path."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors: tuple[FieldError, ...] = tuple(errors)
        super().__init__(
            "invalid campaigns:\n" + "\n".join(f"  {e.field}: {e.error}" for e in self.errors)
        )


@dataclass(frozen=True, slots=True)
class Target:
    """Someone a member can be connected to: an E.164 number, maybe an extension and caller id."""

    target_id: str
    name: str
    phone_number: str
    extension: str | None = None
    caller_id: str | None = None

    def dial(self) -> DialTarget:
        return DialTarget(self.phone_number, self.extension, self.caller_id)


@dataclass(frozen=True, slots=True)
class Campaign:
    """One campaign: whom members may call, what they hear, and from which number."""

    campaign_id: str
    targets: Mapping[str, Target]
    sound_clip_url: str | None = None
    message_text: str | None = None
    menu_clip_url: str | None = None
    menu_text: str | None = None
    language: str = DEFAULT_LANGUAGE
    caller_id: str | None = None
    default_region: str | None = None
    checksum_secret_env: str | None = None
    silence_limit: float = DEFAULT_SILENCE_LIMIT

    def script(self) -> CallScript:
        """What the call says (:mod:`switchboard.calltool.twiml`); the menu text defaults to TwiML's."""
        base = CallScript()
        return CallScript(
            sound_clip_url=self.sound_clip_url,
            message_text=self.message_text,
            menu_clip_url=self.menu_clip_url,
            menu_text=self.menu_text or base.menu_text,
            language=self.language,
        )


@dataclass(frozen=True, slots=True)
class CallRequest:
    """A valid ``POST /api/call``: the campaign, whom to dial, and the member's E.164 number.

    ``target_id`` is None for a checksummed manual target, whose ``target`` then has only a
    number (and the id ``manual``)."""

    campaign: Campaign
    target: Target
    target_id: str | None
    member_number: str


# -- configuration ---------------------------------------------------------------------------


def parse_campaigns(raw: Any, where: str = "campaigns") -> dict[str, Campaign]:
    """Parse a client's ``campaigns`` mapping; raise :class:`InvalidCampaigns` naming every
    problem (unknown settings included, so a typo never silently disables something)."""
    errors: list[FieldError] = []
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise InvalidCampaigns([FieldError(where, "must be a mapping of campaign id to campaign")])
    campaigns: dict[str, Campaign] = {}
    for campaign_id, body in raw.items():
        path = f"{where}.{campaign_id}"
        if not isinstance(campaign_id, str) or not _ID.fullmatch(campaign_id):
            errors.append(FieldError(path, "a campaign id is 1-64 characters of A-Z a-z 0-9 _ -"))
            continue
        campaign = _campaign(campaign_id, body, path, errors)
        if campaign is not None:
            campaigns[campaign_id] = campaign
    if errors:
        raise InvalidCampaigns(errors)
    return campaigns


def _campaign(campaign_id: str, raw: Any, path: str, errors: list[FieldError]) -> Campaign | None:
    if not isinstance(raw, Mapping):
        errors.append(FieldError(path, "must be a mapping (targets, sound_clip_url, ...)"))
        return None
    before = len(errors)
    errors.extend(
        FieldError(f"{path}.{k}", "unknown setting") for k in raw if k not in _CAMPAIGN_KEYS
    )
    targets = _targets(raw.get("targets"), f"{path}.targets", errors)
    sound = _url(raw, "sound_clip_url", path, errors)
    message = _text(raw, "message_text", path, errors)
    _one_of(raw, "sound_clip_url", "message_text", path, errors)
    menu_clip = _url(raw, "menu_clip_url", path, errors)
    menu_text = _text(raw, "menu_text", path, errors)
    _one_of(raw, "menu_clip_url", "menu_text", path, errors)
    language = raw.get("language", DEFAULT_LANGUAGE)
    if not isinstance(language, str) or not _LANGUAGE.fullmatch(language):
        errors.append(FieldError(f"{path}.language", "must be a language tag such as en-US"))
    caller_id = _number(raw, "caller_id", path, errors)
    region = raw.get("default_region")
    if region is not None and (
        not isinstance(region, str) or region.upper() not in phonenumbers.SUPPORTED_REGIONS
    ):
        errors.append(
            FieldError(f"{path}.default_region", "must be a country code such as GB or US")
        )
    secret_env = raw.get("checksum_secret_env")
    if secret_env is not None and (
        not isinstance(secret_env, str) or not _ENV_NAME.fullmatch(secret_env)
    ):
        errors.append(
            FieldError(f"{path}.checksum_secret_env", "must name an environment variable")
        )
    limit = raw.get("silence_limit", DEFAULT_SILENCE_LIMIT)
    if (
        isinstance(limit, bool)
        or not isinstance(limit, int | float)
        or not 0 < limit <= _MAX_SILENCE_LIMIT
    ):
        errors.append(
            FieldError(f"{path}.silence_limit", "must be seconds, more than 0 and at most 86400")
        )
    if len(errors) > before:
        return None
    return Campaign(
        campaign_id=campaign_id,
        targets=targets,
        sound_clip_url=sound,
        message_text=message,
        menu_clip_url=menu_clip,
        menu_text=menu_text,
        language=language,
        caller_id=caller_id,
        default_region=region.upper() if isinstance(region, str) else None,
        checksum_secret_env=secret_env,
        silence_limit=float(limit),
    )


def _targets(raw: Any, path: str, errors: list[FieldError]) -> dict[str, Target]:
    if not isinstance(raw, list) or not raw:
        errors.append(
            FieldError(path, "must be a non-empty list of targets (id, name, phone_number)")
        )
        return {}
    targets: dict[str, Target] = {}
    seen: set[str] = set()  # every id, valid target or not: a duplicate is reported either way
    for index, item in enumerate(raw):
        where = f"{path}[{index}]"
        if not isinstance(item, Mapping):
            errors.append(FieldError(where, "must be a mapping with id, name and phone_number"))
            continue
        before = len(errors)
        errors.extend(
            FieldError(f"{where}.{k}", "unknown setting") for k in item if k not in _TARGET_KEYS
        )
        target_id = item.get("id")
        if not isinstance(target_id, str) or not _ID.fullmatch(target_id):
            errors.append(FieldError(f"{where}.id", "required: 1-64 characters of A-Z a-z 0-9 _ -"))
        elif target_id in seen:
            errors.append(FieldError(f"{where}.id", f"{target_id!r} is used by another target"))
        else:
            seen.add(target_id)
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            errors.append(FieldError(f"{where}.name", "required: the target's name"))
        phone = _number(item, "phone_number", where, errors, required=True)
        extension = item.get("extension")
        if isinstance(extension, int) and not isinstance(extension, bool) and extension >= 0:
            extension = str(extension)  # YAML reads `extension: 123` as a number
        if extension is not None and (
            not isinstance(extension, str) or not _EXTENSION.fullmatch(extension)
        ):
            errors.append(
                FieldError(
                    f"{where}.extension", "may hold only digits, *, # and w (a half-second wait)"
                )
            )
        caller_id = _number(item, "caller_id", where, errors)
        if len(errors) == before:
            assert isinstance(target_id, str)
            assert isinstance(name, str)
            assert phone is not None
            targets[target_id] = Target(target_id, name.strip(), phone, extension, caller_id)
    return targets


def _one_of(
    raw: Mapping[str, Any], clip: str, text: str, path: str, errors: list[FieldError]
) -> None:
    """A recording or a spoken text: exactly one of the two settings."""
    given = [key for key in (clip, text) if raw.get(key) is not None]
    if not given:
        errors.append(FieldError(f"{path}.{clip}", f"required (or {text}, spoken)"))
    elif len(given) == 2:
        errors.append(FieldError(f"{path}.{text}", f"give {clip} or {text}, not both"))


def _url(raw: Mapping[str, Any], key: str, path: str, errors: list[FieldError]) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        errors.append(
            FieldError(f"{path}.{key}", "must be an absolute http(s) URL Twilio can fetch")
        )
        return None
    return str(value)


def _text(raw: Mapping[str, Any], key: str, path: str, errors: list[FieldError]) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > _MAX_TEXT:
        errors.append(FieldError(f"{path}.{key}", f"must be a text of 1 to {_MAX_TEXT} characters"))
        return None
    return value.strip()


def _number(
    raw: Mapping[str, Any], key: str, path: str, errors: list[FieldError], *, required: bool = False
) -> str | None:
    value = raw.get(key)
    if value is None:
        if required:
            errors.append(
                FieldError(f"{path}.{key}", "required: an E.164 number such as +14155550100")
            )
        return None
    if not isinstance(value, str) or not _E164.fullmatch(value.strip()):
        errors.append(FieldError(f"{path}.{key}", "must be an E.164 number such as +14155550100"))
        return None
    try:
        return normalize_member_number(value)
    except InvalidMemberNumber as exc:
        errors.append(FieldError(f"{path}.{key}", str(exc)))
        return None


# -- checksum secrets ------------------------------------------------------------------------

#: The 422 of a manual target whose campaign names a checksum secret this worker cannot use.
MANUAL_TARGETS_MISCONFIGURED: Final = (
    "this campaign's manual targets are misconfigured on the server; the operator's log says why"
)

SecretLookup = Callable[[str], bytes | None]
"""The bytes of a checksum secret, by the name of its environment variable; None when unset."""


def secret_from(environ: Mapping[str, str]) -> SecretLookup:
    """A :data:`SecretLookup` over ``environ`` (``os.environ`` in the worker and the CLI): the
    variable's value as UTF-8 bytes, the bytes the checksum's HMAC is keyed with; None when the
    variable is unset or empty."""

    def lookup(name: str) -> bytes | None:
        value = environ.get(name)
        return value.encode() if value else None

    return lookup


def checksum_secret(campaign: Campaign, secret: SecretLookup) -> bytes:
    """The key of ``campaign``'s manual-target checksums.

    Raises:
        ConfigError: the campaign names no ``checksum_secret_env``, the variable is unset, or it
            holds fewer than :data:`~switchboard.calltool.calls.MIN_SECRET_BYTES` bytes. The message
            names the variable and says why; it never quotes the secret.
    """
    name = campaign.checksum_secret_env
    if name is None:
        raise ConfigError("the campaign has no checksum_secret_env: it takes no manual targets")
    key = secret(name)
    if key is None:
        raise ConfigError(
            f"checksum_secret_env names {name}, which is not set: every manual target would be "
            "refused"
        )
    if len(key) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"the secret in {name} is {len(key)} bytes long; a checksum secret needs at least "
            f"{MIN_SECRET_BYTES} (e.g. `openssl rand -hex 32`), or every manual target is refused"
        )
    return key


def checksum_secret_problems(
    client_id: str, campaigns: Mapping[str, Campaign], secret: SecretLookup
) -> list[str]:
    """Why each campaign of ``client_id`` that names a ``checksum_secret_env`` cannot use it, as
    ``clients.<client>.campaigns.<campaign>.checksum_secret_env: <reason>``; empty when all can."""
    problems = []
    for campaign_id, campaign in campaigns.items():
        if campaign.checksum_secret_env is None:
            continue
        try:
            checksum_secret(campaign, secret)
        except ConfigError as exc:
            problems.append(
                f"clients.{client_id}.campaigns.{campaign_id}.checksum_secret_env "
                f"(client {client_id}, campaign {campaign_id}): {exc}"
            )
    return problems


# -- POST /api/call --------------------------------------------------------------------------


def resolve_call_request(
    data: Mapping[str, Any], campaigns: Mapping[str, Campaign], secret: SecretLookup
) -> CallRequest:
    """Read a ``POST /api/call`` body: ``campaign_id``, ``member_phone_number`` and either
    ``target_id`` or a manual ``target_phone_number`` with its ``target_checksum``.

    Raises:
        ValidationFailed: every problem at once, each with the body field it concerns. A manual
            target is refused unless the campaign names a checksum secret ("does not accept
            manual targets") that is set and at least 16 bytes long
            (:data:`MANUAL_TARGETS_MISCONFIGURED`), and the checksum matches (compared in
            constant time).
    """
    errors: list[FieldError] = []
    campaign = _pick_campaign(data.get("campaign_id"), campaigns, errors)
    member = _member(data.get("member_phone_number"), campaign, errors)
    target = _pick_target(data, campaign, secret, errors) if campaign is not None else None
    if errors:
        raise ValidationFailed(errors)
    assert campaign is not None
    assert member is not None
    assert target is not None
    manual = data.get("target_id") is None
    return CallRequest(campaign, target, None if manual else target.target_id, member)


def _pick_campaign(
    value: Any, campaigns: Mapping[str, Campaign], errors: list[FieldError]
) -> Campaign | None:
    if not isinstance(value, str) or not value:
        errors.append(FieldError("campaign_id", "required: the campaign's id"))
        return None
    campaign = campaigns.get(value)
    if campaign is None:
        errors.append(FieldError("campaign_id", "no such campaign"))
    return campaign


def _member(value: Any, campaign: Campaign | None, errors: list[FieldError]) -> str | None:
    if not isinstance(value, str):
        errors.append(FieldError("member_phone_number", "required: the member's phone number"))
        return None
    try:
        return normalize_member_number(value, campaign.default_region if campaign else None)
    except InvalidMemberNumber as exc:
        errors.append(FieldError("member_phone_number", str(exc)))
        return None


def _pick_target(
    data: Mapping[str, Any], campaign: Campaign, secret: SecretLookup, errors: list[FieldError]
) -> Target | None:
    target_id = data.get("target_id")
    number, checksum = data.get("target_phone_number"), data.get("target_checksum")
    if target_id is not None:
        if number is not None or checksum is not None:
            errors.append(FieldError("target_id", "give target_id or a manual target, not both"))
            return None
        target = campaign.targets.get(target_id) if isinstance(target_id, str) else None
        if target is None:
            errors.append(FieldError("target_id", "no such target in this campaign"))
        return target
    if number is None and checksum is None:
        errors.append(
            FieldError("target_id", "required (or target_phone_number with target_checksum)")
        )
        return None
    if not isinstance(number, str) or not number.strip():
        errors.append(FieldError("target_phone_number", "required with target_checksum"))
        return None
    if not isinstance(checksum, str) or not checksum.strip():
        errors.append(FieldError("target_checksum", "required with target_phone_number"))
        return None
    if campaign.checksum_secret_env is None:
        errors.append(
            FieldError("target_phone_number", "this campaign does not accept manual targets")
        )
        return None
    try:
        key = checksum_secret(campaign, secret)
    except ConfigError:
        # Refused at `clients apply` and at the worker's start, so only a worker whose
        # environment differs gets here. The caller is told where the fault is (not the
        # configuration itself); the view logs the reason for the operator.
        errors.append(FieldError("target_phone_number", MANUAL_TARGETS_MISCONFIGURED))
        return None
    valid = verify_target_checksum(number, checksum, key)
    if not valid:
        errors.append(FieldError("target_checksum", "does not match target_phone_number"))
        return None
    return Target("manual", "manual target", normalize_member_number(number))
