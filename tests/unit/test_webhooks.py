"""switchboard.webhooks: signatures checked by the official library, the payload, the schedule."""

from __future__ import annotations

import base64
import itertools
import json
import math
import random
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from switchboard.status import StatusEvent
from switchboard.webhooks import (
    BASE_DELAYS,
    JITTER,
    WINDOW,
    encode,
    event_type,
    headers,
    next_delay,
    nominal_start,
    payload,
    sign,
    url_problem,
)


def secret(seed: int) -> str:
    return "whsec_" + base64.b64encode(bytes([seed]) * 32).decode()


CURRENT = secret(1)
PREVIOUS = secret(2)
STRANGER = secret(3)


def now() -> int:
    return int(time.time())


def delivered(**overrides: Any) -> StatusEvent:
    fields: dict[str, Any] = {
        "session_id": "s-1",
        "client_id": "acme",
        "status": "delivered",
        "recipient": "+15551230000",
        "channel": "sms",
        "attempt": 1,
        "provider_message_id": "SM123",
        "occurred_at": datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC),
        "event_id": "0b7d7a7e-6a54-4a39-9a57-6b0b1f7c2a11",
    }
    fields.update(overrides)
    return StatusEvent(**fields)


# -- signatures, verified by the official library ----------------------------------------------


def test_a_signed_webhook_verifies_with_the_official_library() -> None:
    event = delivered()
    body = encode(event)
    sent = headers([CURRENT], event.event_id, now(), body)
    assert set(sent) == {"webhook-id", "webhook-timestamp", "webhook-signature", "content-type"}
    assert sent["webhook-id"] == event.event_id
    assert sent["content-type"] == "application/json"
    assert Webhook(CURRENT).verify(body, sent) == payload(event)
    with pytest.raises(WebhookVerificationError):
        Webhook(STRANGER).verify(body, sent)


def test_during_a_rotation_either_secret_verifies() -> None:
    body = encode(delivered())
    sent = headers([CURRENT, PREVIOUS], "msg_1", now(), body)
    signatures = sent["webhook-signature"].split(" ")
    assert len(signatures) == 2
    assert all(s.startswith("v1,") for s in signatures)
    assert signatures[0] == sign([CURRENT], "msg_1", int(sent["webhook-timestamp"]), body)
    Webhook(CURRENT).verify(body, sent)
    Webhook(PREVIOUS).verify(body, sent)
    with pytest.raises(WebhookVerificationError):
        Webhook(STRANGER).verify(body, sent)


def test_the_signature_matches_the_library_signer_byte_for_byte() -> None:
    body = b'{"a":1}'
    ts = 1674087231
    expected = Webhook(CURRENT).sign("msg_x", datetime.fromtimestamp(ts, UTC), body.decode())
    assert sign([CURRENT], "msg_x", ts, body) == expected


def test_a_tampered_body_id_or_timestamp_fails_verification() -> None:
    body = encode(delivered())
    sent = headers([CURRENT], "msg_1", now(), body)
    with pytest.raises(WebhookVerificationError):
        Webhook(CURRENT).verify(body.replace(b"delivered", b"failed"), sent)
    with pytest.raises(WebhookVerificationError):
        Webhook(CURRENT).verify(body, {**sent, "webhook-id": "msg_2"})
    with pytest.raises(WebhookVerificationError):
        Webhook(CURRENT).verify(
            body, {**sent, "webhook-timestamp": str(int(sent["webhook-timestamp"]) - 1)}
        )


def test_a_secret_listed_twice_is_signed_once() -> None:
    assert len(sign([CURRENT, CURRENT], "m", 1, b"{}").split(" ")) == 1


def test_an_unpadded_secret_is_read_as_the_library_reads_it() -> None:
    raw = "whsec_" + base64.b64encode(b"k" * 20).decode()  # 20 bytes: one "=" of padding
    assert raw.endswith("=")
    sent = headers([raw.rstrip("=")], "m", now(), b"{}")
    Webhook(raw).verify(b"{}", sent)


@given(
    msg_id=st.from_regex(r"[A-Za-z0-9_\-]{1,64}", fullmatch=True),
    data=st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=4),
    rotation=st.booleans(),
)
@settings(max_examples=50, deadline=None)
def test_any_id_and_json_body_verifies(msg_id: str, data: dict[str, str], rotation: bool) -> None:
    body = json.dumps(data).encode()
    keys = [CURRENT, PREVIOUS] if rotation else [CURRENT]
    sent = headers(keys, msg_id, now(), body)
    assert Webhook(keys[-1]).verify(body, sent) == data


@pytest.mark.parametrize(
    ("secrets", "message"),
    [
        ([], "at least one secret"),
        ("whsec_" + "A" * 44, "not one string"),
        (["sk_" + "A" * 44], "starting with whsec_"),
        (["whsec_not*base64!"], "followed by base64"),
        (["whsec_"], "empty key"),
    ],
)
def test_bad_secrets_are_refused_without_echoing_them(secrets: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        sign(secrets, "m", 1, b"{}")
    for s in secrets if isinstance(secrets, list) else [secrets]:
        if len(s) > 6:
            assert s not in str(caught.value)


@pytest.mark.parametrize("msg_id", ["", "a.b", "a b", "a\nb", "é", "x" * 257])
def test_message_ids_that_could_confuse_the_signed_content_are_refused(msg_id: str) -> None:
    with pytest.raises(ValueError, match="webhook id"):
        sign([CURRENT], msg_id, 1, b"{}")


@pytest.mark.parametrize("timestamp", [-1, True, 1.5, "1"])
def test_timestamps_are_whole_non_negative_seconds(timestamp: Any) -> None:
    with pytest.raises(ValueError, match="timestamp"):
        sign([CURRENT], "m", timestamp, b"{}")


# -- payload ----------------------------------------------------------------------------------


def test_the_payload_is_the_standard_envelope_around_the_status_event() -> None:
    event = delivered()
    body = encode(event)
    assert json.loads(body) == {
        "type": "message.delivered",
        "timestamp": "2025-03-01T12:00:00.123456Z",
        "data": event.to_json(),
    }
    assert list(json.loads(body)) == ["type", "timestamp", "data"]
    assert payload(event)["data"]["event_id"] == event.event_id
    assert b" " not in body  # compact: what is signed is what is sent, no pretty-printing


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"status": "sent"}, "message.sent"),
        ({"status": "failed", "error_code": "30003"}, "message.failed"),
        ({"status": "suppressed"}, "message.suppressed"),
        ({"status": "completed", "recipient": None, "channel": None}, "session.completed"),
        ({"status": "cancelled", "recipient": None, "channel": None}, "session.cancelled"),
        ({"status": "completed"}, "session.completed"),
    ],
)
def test_the_type_names_the_subject_and_the_status(fields: dict[str, Any], expected: str) -> None:
    event = delivered(**fields)
    assert event_type(event) == expected
    assert payload(event)["type"] == expected


def test_the_body_is_deterministic_ascii_and_still_verifies_with_non_ascii_content() -> None:
    event = delivered(detail={"name": "Zoë ☎", "counts": {"delivered": 3}})
    body = encode(event)
    assert body == encode(event)
    assert body.isascii()
    assert json.loads(body)["data"]["detail"]["name"] == "Zoë ☎"
    assert Webhook(CURRENT).verify(body, headers([CURRENT], event.event_id, now(), body))


def test_a_detail_json_cannot_carry_is_an_error() -> None:
    with pytest.raises(ValueError, match="JSON compliant"):
        encode(delivered(detail={"ratio": math.nan}))


# -- retry schedule ---------------------------------------------------------------------------

seeds = st.integers(min_value=0, max_value=2**32)
attempts = st.integers(min_value=1, max_value=40)


def base(attempt: int) -> float:
    return BASE_DELAYS[min(attempt, len(BASE_DELAYS)) - 1]


def test_the_documented_schedule() -> None:
    assert BASE_DELAYS == (5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0)
    assert [nominal_start(n) for n in (1, 2, 3, 8, 13)] == [0, 5, 35, 13355, 85355]
    assert nominal_start(14) > WINDOW
    assert all(b2 >= 2 * b1 for b1, b2 in itertools.pairwise(BASE_DELAYS))


@given(attempt=attempts, seed=seeds)
def test_delays_are_jittered_within_bounds(attempt: int, seed: int) -> None:
    delay = next_delay(attempt, random.Random(seed), elapsed=0.0)
    assert delay is not None
    assert base(attempt) * (1 - JITTER) < delay <= base(attempt)


@given(seed=seeds, attempt=st.integers(min_value=1, max_value=len(BASE_DELAYS) - 1))
def test_delays_grow_until_the_plateau(seed: int, attempt: int) -> None:
    rng = random.Random(seed)
    first = next_delay(attempt, rng, elapsed=0.0)
    second = next_delay(attempt + 1, rng, elapsed=0.0)
    assert first is not None and second is not None
    assert second > first


@given(seed=seeds)
def test_the_schedule_is_reproducible_from_the_seed(seed: int) -> None:
    run = [next_delay(n, random.Random(seed)) for n in range(1, 15)]
    assert run == [next_delay(n, random.Random(seed)) for n in range(1, 15)]


@given(seed=seeds)
def test_without_elapsed_the_nominal_schedule_makes_thirteen_attempts_within_a_day(
    seed: int,
) -> None:
    rng = random.Random(seed)
    attempt, started = 1, 0.0
    while (delay := next_delay(attempt, rng)) is not None:
        started += delay
        attempt += 1
    assert attempt == 13
    assert started <= WINDOW


@given(
    seed=seeds,
    durations=st.lists(st.floats(min_value=0, max_value=30), min_size=40, max_size=40),
    retry_afters=st.lists(
        st.none() | st.floats(min_value=0, max_value=2 * WINDOW), min_size=40, max_size=40
    ),
)
@settings(max_examples=300)
def test_no_attempt_starts_after_the_day_whatever_the_receiver_says(
    seed: int, durations: list[float], retry_afters: list[float | None]
) -> None:
    rng = random.Random(seed)
    attempt, started = 1, 0.0  # when the current attempt started, since the first one
    while True:
        elapsed = started + durations[attempt - 1]  # the attempt ran, then failed
        delay = next_delay(attempt, rng, retry_afters[attempt - 1], elapsed=elapsed)
        if delay is None:
            break
        retry_after = retry_afters[attempt - 1]
        if retry_after is not None:
            assert delay >= retry_after
        started = elapsed + delay
        assert started <= WINDOW
        attempt += 1
        assert attempt < 40  # 5 s at least between attempts, 4 h at most after the 8th
    assert attempt >= 1


@given(attempt=attempts, seed=seeds, retry_after=st.floats(min_value=0, max_value=20000))
def test_retry_after_is_a_floor(attempt: int, seed: int, retry_after: float) -> None:
    delay = next_delay(attempt, random.Random(seed), retry_after, elapsed=0.0)
    assert delay is not None
    assert delay >= retry_after
    assert delay == max(next_delay(attempt, random.Random(seed), elapsed=0.0) or 0, retry_after)


def test_a_retry_after_past_the_window_ends_the_retries() -> None:
    rng = random.Random(1)
    assert next_delay(1, rng, WINDOW + 1) is None
    assert next_delay(3, rng, 3600.0, elapsed=WINDOW - 3599) is None
    assert next_delay(3, rng, 3600.0, elapsed=WINDOW - 3600) == 3600.0


def test_one_number_is_drawn_per_call() -> None:
    rng, twin = random.Random(7), random.Random(7)
    next_delay(2, rng, 10.0)
    twin.random()
    assert rng.random() == twin.random()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attempt": 0}, "attempt"),
        ({"attempt": True}, "attempt"),
        ({"attempt": 1, "retry_after": -1.0}, "retry_after"),
        ({"attempt": 1, "retry_after": math.inf}, "retry_after"),
        ({"attempt": 1, "elapsed": math.nan}, "elapsed"),
    ],
)
def test_schedule_inputs_are_checked(kwargs: dict[str, Any], message: str) -> None:
    attempt = kwargs.pop("attempt")
    with pytest.raises(ValueError, match=message):
        next_delay(attempt, random.Random(0), **kwargs)


# -- URLs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "allow_http", "problem"),
    [
        ("https://hooks.example.com/switchboard?token=abc", False, None),
        ("https://hooks.example.com:8443/x", False, None),
        ("http://hooks.example.com/x", True, None),
        ("http://hooks.example.com/x", False, "must be https"),
        ("ftp://hooks.example.com/x", True, "must be https"),
        ("hooks.example.com/x", False, "must be https"),
        ("https://user:pw@hooks.example.com/", False, "credentials"),
        ("https://user@hooks.example.com/", False, "credentials"),
        ("https://:pw@hooks.example.com/", False, "credentials"),
        ("https:///x", False, "no host"),
        ("https://hooks.example.com:99999/", False, "cannot be parsed"),
        ("https://hooks.example.com/a b", False, "whitespace"),
        ("https://hooks.example.com/\r\nX: y", False, "whitespace"),
        ("", False, "empty"),
        ("https://h.example/" + "a" * 2100, False, "longer than"),
    ],
)
def test_url_problems(url: str, allow_http: bool, problem: str | None) -> None:
    found = url_problem(url, allow_http=allow_http)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found
