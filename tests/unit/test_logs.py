"""switchboard.logs: no credential reaches a log line, whatever logger wrote it."""

from __future__ import annotations

import io
import json
import logging

from switchboard.logs import JsonFormatter, RedactingFilter, TextFormatter, redact

KEY = "acme-0123456789abcdef"


def test_redact_hides_credentials_in_headers_tokens_and_parser_quotes() -> None:
    parser = f"400, message:\n  Invalid header value char:\n\n    b'Authorization: Bearer {KEY}\\x01'\n   ^"
    for text in (
        parser,
        f"Authorization: Bearer {KEY}",
        f"headers={{'Authorization': 'Bearer {KEY}'}}",
        f"proxy-authorization=Basic {KEY}",
        f"cookie: session={KEY}",
    ):
        clean = redact(text)
        assert KEY not in clean and "[redacted]" in clean, clean
        assert redact(clean) == clean
    assert redact("nothing secret here") == "nothing secret here"


def _emit(formatter: logging.Formatter, **kwargs: object) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger(f"test.redact.{id(stream)}")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        raise ValueError(f"Invalid header: b'Authorization: Bearer {KEY}\\x01'")
    except ValueError:
        logger.exception("Error handling request %s", f"Bearer {KEY}", **kwargs)  # type: ignore[arg-type]
    return stream.getvalue()


def test_the_filter_redacts_message_arguments_extras_and_traceback_in_json() -> None:
    line = _emit(JsonFormatter(), extra={"error": f"Authorization: Bearer {KEY}"})
    assert KEY not in line
    record = json.loads(line)
    assert "Traceback" in record["exc"] and "[redacted]" in record["exc"]
    assert record["error"] == "Authorization: [redacted]"


def test_the_filter_redacts_the_traceback_in_text() -> None:
    text = _emit(TextFormatter())
    assert KEY not in text and "Traceback" in text
