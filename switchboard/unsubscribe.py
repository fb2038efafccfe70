"""One-click unsubscribe links for bulk email (RFC 2369 ``List-Unsubscribe``, RFC 8058). Pure.

Every bulk email (any email not sent with ``options.transactional: true``) carries::

    List-Unsubscribe: <https://PUBLIC_URL/v1/unsubscribe?t=TOKEN>
    List-Unsubscribe-Post: List-Unsubscribe=One-Click

``TOKEN`` names the client and the recipient's address and is signed with the deployment's
``SWITCHBOARD_UNSUBSCRIBE_SECRET`` (HMAC-SHA256), so the endpoint needs no lookup and nobody can
unsubscribe an address they did not receive mail at. A mail client's one-click ``POST`` with the
body ``List-Unsubscribe=One-Click`` records the unsubscribe (``streams/web/unsubscribe.py``).

Guarantees and failure modes:
    * :func:`verify` answers the (client, address) a token was made for only when its signature is
      the one :func:`sign` made with the same secret; anything else (altered, truncated, another
      secret, not base64, not our JSON) is ``None``. Signatures are compared in constant time.
    * Tokens do not expire: an unsubscribe link must keep working for as long as the mail sits
      in an inbox (CAN-SPAM asks for 30 days at least), and all it can do is stop bulk email to
      the address it names. Changing the secret revokes every link already sent.
    * The address is in the token in clear (base64url): the recipient already knows it, and an
      intermediary that sees the URL sees the mail too. The secret is never part of the URL.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Final
from urllib.parse import urlencode

__all__ = ["MIN_SECRET_BYTES", "ONE_CLICK", "PATH", "headers", "link", "sign", "verify"]

#: The endpoint's path, under ``SWITCHBOARD_PUBLIC_URL``.
PATH: Final = "/v1/unsubscribe"
#: The ``List-Unsubscribe-Post`` value, and the form field and value a one-click POST carries.
ONE_CLICK: Final = "List-Unsubscribe=One-Click"
#: The shortest secret accepted: 128 bits of a random string are out of reach of guessing.
MIN_SECRET_BYTES: Final = 16
# Domain separation: a signature made for an unsubscribe is no signature of anything else.
_CONTEXT: Final = b"switchboard-unsubscribe-v1\x1f"


def sign(secret: str, client_id: str, address: str) -> str:
    """The token naming ``client_id`` and ``address``: ``<payload>.<signature>``, base64url."""
    payload = json.dumps([client_id, address], separators=(",", ":"), ensure_ascii=False).encode()
    return f"{_b64(payload)}.{_b64(_mac(secret, payload))}"


def verify(secret: str, token: str) -> tuple[str, str] | None:
    """``(client_id, address)`` of a token :func:`sign` made with ``secret``; ``None`` for any
    token it did not (never raises)."""
    payload_text, dot, signature_text = token.partition(".")
    if not dot or len(token) > 2048:
        return None
    try:
        payload = _unb64(payload_text)
        signature = _unb64(signature_text)
    except (binascii.Error, ValueError):
        return None
    if not hmac.compare_digest(signature, _mac(secret, payload)):
        return None
    try:
        client_id, address = json.loads(payload)
    except (ValueError, TypeError):
        return None
    if not isinstance(client_id, str) or not isinstance(address, str):
        return None
    return client_id, address


def link(public_url: str, secret: str, client_id: str, address: str) -> str:
    """The one-click URL of ``address``'s unsubscribe from ``client_id``'s bulk email."""
    query = urlencode({"t": sign(secret, client_id, address)})
    return f"{public_url.rstrip('/')}{PATH}?{query}"


def headers(url: str) -> dict[str, str]:
    """The two headers of RFC 8058 for the one-click ``url``. There is no ``mailto:`` variant:
    Switchboard receives no mail, and a mailbox nobody reads is worse than none."""
    return {"List-Unsubscribe": f"<{url}>", "List-Unsubscribe-Post": ONE_CLICK}


def _mac(secret: str, payload: bytes) -> bytes:
    return hmac.new(secret.encode(), _CONTEXT + payload, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    if not text or not text.isascii():
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
