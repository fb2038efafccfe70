"""``switchboard clients list|show``: a clients file read back, with every secret masked. Pure.

What is masked: the API keys (their digests too: a digest is enough to test guessed keys
offline), the webhook secrets, and any option whose name says it holds a credential (``token``,
``secret``, ``password``, ``key``, ``authorization`` ...) or whose value looks like one (``whsec_``,
``sb_`` API keys, ``Bearer``/``Basic`` values, ``sha256:`` digests). An option ending in ``_env``
names an environment variable, not a secret, and is shown, as are the ``secrets`` of an ``http``
provider (variable names too) and templates that only refer to a secret (``{{secrets.key}}``).
Masking errs on the side of hiding: a value masked for nothing is a small loss, a secret shown
is not.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["MASK", "client_rows", "mask", "masked_client"]

MASK: Final = "****"

_SECRET_NAME: Final = re.compile(
    r"(secret|token|passw|api[-_]?keys?|(^|[-_])key$|authori[sz]ation|credential|private|signature|cookie)",
    re.IGNORECASE,
)
_SECRET_VALUE: Final = re.compile(r"^(whsec_|sb_|sha256:|bearer\s|basic\s)", re.IGNORECASE)
_ONLY_PLACEHOLDERS: Final = re.compile(r"^[^{}]*(\{\{\s*secrets\.\w+\s*\}\}[^{}]*)+$")


def mask(value: Any, name: str = "") -> Any:
    """``value`` (an option named ``name``) with every secret in it replaced by :data:`MASK`."""
    if name == "secrets" and isinstance(value, Mapping):
        return {str(k): v if isinstance(v, str) else MASK for k, v in value.items()}
    if isinstance(value, Mapping):
        return {str(k): mask(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask(v, name) for v in value]
    if name.lower().endswith("_env") or value is None or isinstance(value, bool | int | float):
        return value
    text = str(value)
    if _ONLY_PLACEHOLDERS.match(text):
        return text  # "Bearer {{secrets.key}}": the template, not the secret
    if _SECRET_NAME.search(name) or _SECRET_VALUE.match(text):
        return MASK
    return value


def masked_client(document: Any, client_id: str) -> dict[str, Any] | None:
    """The configuration of ``client_id`` in a clients document, masked; None when absent."""
    client = _clients(document).get(client_id)
    return mask(client) if isinstance(client, Mapping) else None


def client_rows(document: Any) -> list[dict[str, Any]]:
    """One summary per client, in id order: what ``clients list`` prints (no secret at all)."""
    rows = []
    for client_id, client in sorted(_clients(document).items()):
        client = client if isinstance(client, Mapping) else {}
        raw = client.get("channels")
        channels: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
        providers = ",".join(
            f"{name}:{(spec or {}).get('provider', '?') if isinstance(spec, Mapping) else '?'}"
            for name, spec in channels.items()
        )
        rows.append(
            {
                "client": client_id,
                "channels": providers or "-",
                "default_channels": ",".join(map(str, client.get("default_channels") or [])) or "-",
                "api_keys": len(client.get("api_keys") or []),
                "webhook_secret": "set" if client.get("webhook_secret") else "-",
                "time_windows": ",".join(map(str, client.get("time_windows") or {})) or "-",
                "campaigns": len(client.get("campaigns") or {}),
            }
        )
    return rows


def _clients(document: Any) -> Mapping[str, Any]:
    clients = document.get("clients") if isinstance(document, Mapping) else None
    return clients if isinstance(clients, Mapping) else {}
