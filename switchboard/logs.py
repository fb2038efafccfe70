"""Structured logging: one JSON object per line (or readable text), with the ``extra`` fields.

``log.info("session opened", extra={"session_id": ...})`` becomes
``{"ts": "...", "level": "info", "logger": "streams.sessions", "msg": "session opened",
"session_id": "..."}``. Message bodies and credentials are never passed as extras.

Every line also goes through :class:`RedactingFilter` (on the handler, so it covers every
logger, ours and the libraries'): a credential in a message, an extra or a traceback (aiohttp's
HTTP parser quotes a malformed header line whole, ``Authorization: Bearer <key>`` included) is
replaced by ``[redacted]`` before the line is written.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any, Final

__all__ = ["JsonFormatter", "RedactingFilter", "TextFormatter", "logging_config", "redact"]

_STANDARD: Final = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


REDACTED: Final = "[redacted]"
#: A header that carries a credential, up to the end of its line or of the quoted text it is in
#: (a parser quotes the raw line as ``b'...'``, control bytes escaped).
_CREDENTIAL_HEADER: Final = re.compile(
    r"(?i)\b(authorization|proxy-authorization|cookie|set-cookie|x-api-key|x-twilio-signature)"
    r"(\s*[:=]\s*)[^\r\n'\"]*"
)
#: A credential in an auth scheme's form, wherever it is (a URL, an error's text, a repr).
_CREDENTIAL: Final = re.compile(r"(?i)\b(bearer|basic)(\s+)[^\s'\",;]+")


def redact(text: str) -> str:
    """``text`` with every credential replaced by ``[redacted]``: the value of an
    ``Authorization``-like header (to the end of its line or quote) and any ``Bearer``/``Basic``
    token. Idempotent."""
    text = _CREDENTIAL_HEADER.sub(lambda m: f"{m[1]}{m[2]}{REDACTED}", text)
    return _CREDENTIAL.sub(lambda m: f"{m[1]}{m[2]}{REDACTED}", text)


class RedactingFilter(logging.Filter):
    """Redacts credentials (:func:`redact`) from a record's message, string extras and
    traceback, in place; never drops a record. The traceback is formatted here, so a formatter
    writes the redacted text (``exc_text``) instead of formatting the exception again."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        for key, value in _extras(record).items():
            if isinstance(value, str):
                setattr(record, key, redact(value))
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(_extras(record))
        if record.exc_text:  # already formatted (and redacted) by RedactingFilter
            out["exc"] = record.exc_text
        elif record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = _extras(record)
        if extras:
            text += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return text


def logging_config(level: str, fmt: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for the worker (Faust and our loggers alike)."""
    formatter = (
        "switchboard.logs.JsonFormatter" if fmt == "json" else "switchboard.logs.TextFormatter"
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": {"()": formatter}},
        "filters": {"redact": {"()": "switchboard.logs.RedactingFilter"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "filters": ["redact"],
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        "loggers": {
            # Faust and aiokafka are chatty at INFO during every rebalance.
            "aiokafka": {"level": "WARNING"},
            "faust": {"level": "WARNING" if level.lower() == "info" else level.upper()},
            "mode": {"level": "WARNING" if level.lower() == "info" else level.upper()},
        },
    }
