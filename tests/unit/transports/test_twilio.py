"""The Twilio transports, through the real ``twilio`` SDK against the local fake Twilio server
(:mod:`tests.fakes.twilio_server`): what each channel sends, how each failure is classified,
pacing, and that the auth token never leaks."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from twilio.base.exceptions import TwilioServiceException
from twilio.request_validator import RequestValidator

from switchboard.clients import ChannelConfig
from switchboard.errors import ConfigError
from tests.fakes.twilio_server import TEST_AUTH_TOKEN, Behaviour, FakeTwilioServer
from transports.base import OutboundMessage, SendResult, Transport
from transports.errors import PermanentError, RetryableError, SuppressedError, TransportError
from transports.registry import PROVIDERS, build
from transports.twilio import (
    TWILIO_CHANNELS,
    TwilioMessagingTransport,
    TwilioVoiceTransport,
    classify_error,
    twilio_transport,
)

TOKEN_ENV = "SWITCHBOARD_TEST_TWILIO_TOKEN"
SENDER = "+14155550100"
OTHER_SENDER = "+14155550101"
RECIPIENT = "+14155550123"
SERVICE_SID = "MG" + "ab" * 16

MakeTransport = Callable[..., Transport]


@pytest.fixture
async def server() -> AsyncIterator[FakeTwilioServer]:
    async with FakeTwilioServer() as fake:
        yield fake


@pytest.fixture
async def make(
    server: FakeTwilioServer, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[MakeTransport]:
    """Build transports pointed at the fake server; options override (None removes one)."""
    monkeypatch.setenv(TOKEN_ENV, TEST_AUTH_TOKEN)
    made: list[Transport] = []

    def factory(channel: str = "sms", **overrides: Any) -> Transport:
        options: dict[str, Any] = {
            "account_sid": server.account_sid,
            "auth_token_env": TOKEN_ENV,
            "from": [SENDER, OTHER_SENDER],
            "api_base": server.base_url,
            "rate_per_second": 1000,
            "timeout": 5,
        }
        options.update(overrides)
        transport = twilio_transport(channel, {k: v for k, v in options.items() if v is not None})
        made.append(transport)
        return transport

    yield factory
    for transport in made:
        await transport.aclose()


def sms(**fields: Any) -> OutboundMessage:
    return OutboundMessage(**{"channel": "sms", "to": RECIPIENT, "body": "Hello Ana", **fields})


# -- what is sent ----------------------------------------------------------------------------


async def test_sms_is_sent_from_the_first_sender(
    make: MakeTransport, server: FakeTwilioServer
) -> None:
    result = await make().send(sms())

    assert isinstance(result, SendResult)
    assert result.status == "sent"
    assert result.provider_message_id is not None
    assert result.provider_message_id.startswith("SM")
    assert len(result.provider_message_id) == 34
    assert result.detail == {"twilio_status": "queued", "segments": 1, "from": SENDER}
    [request] = server.messages()
    assert request.authorized
    assert request.account_sid == server.account_sid
    assert request.form == {"To": (RECIPIENT,), "From": (SENDER,), "Body": ("Hello Ana",)}
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert request.headers["User-Agent"].startswith("twilio-python/9.13.0")


async def test_a_message_sender_wins_and_segments_are_reported(
    make: MakeTransport, server: FakeTwilioServer
) -> None:
    result = await make().send(sms(sender=OTHER_SENDER, body="x" * 200))

    assert result.detail["segments"] == 2
    assert result.detail["from"] == OTHER_SENDER
    assert server.messages()[0].get("From") == OTHER_SENDER


@pytest.mark.parametrize(
    ("file_url", "extras"),
    [
        ("https://cdn.example.com/a/photo.jpg", {}),
        ("https://cdn.example.com/a/PHOTO.JPEG?size=large", {}),
        ("https://cdn.example.com/banner.png", {}),
        ("https://cdn.example.com/anim.gif#x", {}),
        ("https://cdn.example.com/render?id=7", {"media": True}),
    ],
)
async def test_an_image_makes_an_mms(
    make: MakeTransport, server: FakeTwilioServer, file_url: str, extras: dict[str, Any]
) -> None:
    result = await make().send(sms(file_url=file_url, extras=extras))

    assert result.provider_message_id is not None
    assert result.provider_message_id.startswith("MM")
    [request] = server.messages()
    assert request.getall("MediaUrl") == (file_url,)
    assert request.get("Body") == "Hello Ana"


async def test_an_mms_may_have_no_text(make: MakeTransport, server: FakeTwilioServer) -> None:
    await make().send(sms(body=None, file_url="https://cdn.example.com/photo.png"))

    [request] = server.messages()
    assert "Body" not in request.form
    assert request.getall("MediaUrl") == ("https://cdn.example.com/photo.png",)


@pytest.mark.parametrize(
    ("file_url", "extras"),
    [
        ("https://cdn.example.com/terms.pdf", {}),
        ("https://cdn.example.com/photo.jpg", {"media": False}),
    ],
)
async def test_other_files_are_linked_in_the_body(
    make: MakeTransport, server: FakeTwilioServer, file_url: str, extras: dict[str, Any]
) -> None:
    await make().send(sms(file_url=file_url, extras=extras))

    [request] = server.messages()
    assert "MediaUrl" not in request.form
    assert request.get("Body") == f"Hello Ana\n{file_url}"


async def test_send_as_mms_is_passed_on(make: MakeTransport, server: FakeTwilioServer) -> None:
    await make().send(sms(extras={"send_as_mms": True}))

    assert server.messages()[0].get("SendAsMms") == "true"


async def test_status_callback_is_passed(make: MakeTransport, server: FakeTwilioServer) -> None:
    await make().send(sms(status_callback="https://sb.example.com/twilio/status?d=s1%2F0%2Fsms"))

    assert (
        server.messages()[0].get("StatusCallback")
        == "https://sb.example.com/twilio/status?d=s1%2F0%2Fsms"
    )


async def test_messaging_service_is_used_without_an_explicit_sender(
    make: MakeTransport, server: FakeTwilioServer
) -> None:
    transport = make(messaging_service_sid=SERVICE_SID)

    result = await transport.send(sms())
    await transport.send(sms(sender=OTHER_SENDER))

    first, second = server.messages()
    assert first.get("MessagingServiceSid") == SERVICE_SID
    assert "From" not in first.form
    assert result.detail["twilio_status"] == "accepted"
    assert result.detail["messaging_service_sid"] == SERVICE_SID
    assert second.get("From") == OTHER_SENDER
    assert "MessagingServiceSid" not in second.form


async def test_messaging_service_alone_is_enough(
    make: MakeTransport, server: FakeTwilioServer
) -> None:
    await make(messaging_service_sid=SERVICE_SID, **{"from": None}).send(sms())

    assert server.messages()[0].get("MessagingServiceSid") == SERVICE_SID


async def test_a_messaging_service_chosen_per_message_wins_over_the_first_number(
    make: MakeTransport, server: FakeTwilioServer
) -> None:
    """What the per-client-messageservices manager asks for, through extras."""
    transport = make()
    await transport.send(sms(extras={"messaging_service_sid": SERVICE_SID}))
    with pytest.raises(PermanentError, match="MG followed by 32 hex digits"):
        await transport.send(sms(extras={"messaging_service_sid": "MG-not-a-sid"}))

    [sent] = server.messages()
    assert sent.get("MessagingServiceSid") == SERVICE_SID and "From" not in sent.form


async def test_whatsapp_free_text(make: MakeTransport, server: FakeTwilioServer) -> None:
    result = await make("whatsapp", **{"from": "whatsapp:+14155550102"}).send(
        OutboundMessage(channel="whatsapp", to=RECIPIENT, body="Your order shipped")
    )

    assert result.detail["from"] == "whatsapp:+14155550102"
    [request] = server.messages()
    assert request.form == {
        "To": (f"whatsapp:{RECIPIENT}",),
        "From": ("whatsapp:+14155550102",),
        "Body": ("Your order shipped",),
    }


async def test_whatsapp_template(make: MakeTransport, server: FakeTwilioServer) -> None:
    content_sid = "HX" + "cd" * 16
    message = OutboundMessage(
        channel="whatsapp",
        to=RECIPIENT,
        body=None,
        extras={"content_sid": content_sid, "content_variables": {"1": "Ana", "2": "Ñandú"}},
        status_callback="https://sb.example.com/twilio/status",
    )

    await make("whatsapp", **{"from": ["+14155550102"]}).send(message)

    [request] = server.messages()
    assert request.get("To") == f"whatsapp:{RECIPIENT}"
    assert request.get("From") == "whatsapp:+14155550102"
    assert request.get("ContentSid") == content_sid
    assert json.loads(request.get("ContentVariables") or "") == {"1": "Ana", "2": "Ñandú"}
    assert "Body" not in request.form
    assert request.get("StatusCallback") == "https://sb.example.com/twilio/status"


async def test_voice_says_the_body_in_the_recipients_language(
    make: MakeTransport, server: FakeTwilioServer
) -> None:
    transport = make("voice", machine_detection="Enable")
    message = OutboundMessage(
        channel="voice",
        to=RECIPIENT,
        body="Your <order> & parcel shipped",
        locale="es_MX",
        status_callback="https://sb.example.com/twilio/calls",
    )

    result = await transport.send(message)

    assert isinstance(transport, TwilioVoiceTransport)
    assert result.provider_message_id is not None
    assert result.provider_message_id.startswith("CA")
    assert result.detail == {"twilio_status": "queued", "from": SENDER}
    [call] = server.calls()
    assert (call.get("To"), call.get("From")) == (RECIPIENT, SENDER)
    assert call.get("StatusCallback") == "https://sb.example.com/twilio/calls"
    assert call.get("MachineDetection") == "Enable"
    root = ET.fromstring(call.get("Twiml") or "")
    assert root.tag == "Response"
    [say] = list(root)
    assert say.tag == "Say"
    assert say.attrib == {"language": "es-MX"}
    assert say.text == "Your <order> & parcel shipped"


async def test_voice_plays_the_file(make: MakeTransport, server: FakeTwilioServer) -> None:
    await make("voice").send(
        OutboundMessage(
            channel="voice",
            to=RECIPIENT,
            body="ignored",
            file_url="https://cdn.example.com/clip.mp3",
        )
    )

    [call] = server.calls()
    root = ET.fromstring(call.get("Twiml") or "")
    assert [(child.tag, child.text) for child in root] == [
        ("Play", "https://cdn.example.com/clip.mp3")
    ]
    assert "MachineDetection" not in call.form
    assert "StatusCallback" not in call.form


async def test_nothing_to_send_is_permanent_and_not_sent(
    make: MakeTransport, server: FakeTwilioServer
) -> None:
    with pytest.raises(PermanentError) as sms_error:
        await make().send(sms(body=""))
    with pytest.raises(PermanentError) as call_error:
        await make("voice").send(OutboundMessage(channel="voice", to=RECIPIENT, body=None))
    with pytest.raises(PermanentError) as call_too_long:
        await make("voice").send(OutboundMessage(channel="voice", to=RECIPIENT, body="a" * 5000))

    assert sms_error.value.code == call_error.value.code == "empty-message"
    assert call_too_long.value.code == "twiml-too-long"
    assert server.requests == []


# -- failures --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("behaviour", "kind", "code", "retry_after"),
    [
        (Behaviour.rate_limited(retry_after=7), RetryableError, "20429", 7.0),
        (Behaviour.rate_limited(retry_after=None), RetryableError, "20429", None),
        (Behaviour.error(500, 20500, "Internal Server Error"), RetryableError, "20500", None),
        (Behaviour.error(503), RetryableError, "http-503", None),
        (Behaviour.error(400, 30001, "Queue overflow"), RetryableError, "30001", None),
        (
            Behaviour.error(400, 21610, "Attempt to send to unsubscribed recipient"),
            SuppressedError,
            "21610",
            None,
        ),
        (
            Behaviour.error(400, 21211, "The 'To' number is not a valid phone number."),
            PermanentError,
            "21211",
            None,
        ),
        (
            Behaviour.error(400, 21408, "Permission to send an SMS has not been enabled"),
            PermanentError,
            "21408",
            None,
        ),
        (
            Behaviour.error(400, 21612, "The 'To' phone number is not currently reachable"),
            PermanentError,
            "21612",
            None,
        ),
        (
            Behaviour.error(403, 21614, "'To' number is not a valid mobile number"),
            PermanentError,
            "21614",
            None,
        ),
        (Behaviour.error(422, 99999, "Something new"), PermanentError, "99999", None),
    ],
)
async def test_twilio_errors_are_classified(
    make: MakeTransport,
    server: FakeTwilioServer,
    behaviour: Behaviour,
    kind: type[TransportError],
    code: str,
    retry_after: float | None,
) -> None:
    server.script(behaviour, to=RECIPIENT)

    with pytest.raises(TransportError) as caught:
        await make().send(sms())

    assert type(caught.value) is kind
    assert caught.value.code == code
    assert caught.value.retry_after == retry_after
    assert caught.value.retryable is (kind is RetryableError)
    assert caught.value.suppressed is (kind is SuppressedError)
    assert caught.value.__cause__ is None  # the SDK's exception (and its request) is not chained


async def test_retry_after_may_be_a_date(make: MakeTransport, server: FakeTwilioServer) -> None:
    server.script(Behaviour.rate_limited(retry_after="Thu, 01 Jan 2099 00:00:00 GMT"))

    with pytest.raises(RetryableError) as caught:
        await make().send(sms())

    assert caught.value.retry_after is not None
    assert caught.value.retry_after > 10**8


async def test_scripts_are_per_destination_and_counted(
    make: MakeTransport, server: FakeTwilioServer
) -> None:
    server.script(Behaviour.error(400, 21610), to="+14155550199")
    server.script(Behaviour.rate_limited(), times=1)
    transport = make()

    with pytest.raises(SuppressedError):
        await transport.send(sms(to="+14155550199"))
    with pytest.raises(RetryableError):
        await transport.send(sms())
    await transport.send(sms())  # the global script was used up


async def test_an_invalid_number_is_rejected_by_twilio(make: MakeTransport) -> None:
    with pytest.raises(PermanentError) as caught:
        await make().send(sms(to="+0123"))

    assert caught.value.code == "21211"
    assert "not a valid phone number" in caught.value.message


async def test_bad_credentials_are_permanent_and_never_shown(
    make: MakeTransport, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="transports.twilio.sdk")
    wrong = "wrong-token-0123456789abcdef"
    monkeypatch.setenv("OTHER_TOKEN", wrong)

    with pytest.raises(PermanentError) as caught:
        await make(auth_token_env="OTHER_TOKEN").send(sms())

    assert type(caught.value) is PermanentError
    assert caught.value.code == "20003"
    assert "401" in caught.value.message
    assert "$OTHER_TOKEN" in caught.value.message  # what to fix
    assert wrong not in str(caught.value)
    assert wrong not in repr(caught.value.args)
    assert wrong not in caplog.text
    assert "twilio-python" in caplog.text  # the SDK did log, without the credentials


async def test_the_token_is_not_logged_on_success(
    make: MakeTransport, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="transports.twilio.sdk")
    transport = make()

    await transport.send(sms())

    assert "POST Request" in caplog.text
    assert TEST_AUTH_TOKEN not in caplog.text
    assert TEST_AUTH_TOKEN not in repr(transport)


async def test_a_slow_answer_times_out_as_retryable(
    make: MakeTransport, server: FakeTwilioServer
) -> None:
    server.script(Behaviour.slow(5000))
    started = time.monotonic()

    with pytest.raises(RetryableError) as caught:
        await make(timeout=0.2).send(sms())

    assert caught.value.code == "twilio-timeout"
    assert time.monotonic() - started < 2


async def test_a_slow_answer_within_the_timeout_succeeds(
    make: MakeTransport, server: FakeTwilioServer
) -> None:
    server.script(Behaviour.slow(100))

    result = await make(timeout=2).send(sms())

    assert result.status == "sent"


async def test_a_dropped_connection_is_retryable(
    make: MakeTransport, server: FakeTwilioServer
) -> None:
    server.script(Behaviour.dropped(), times=1)
    transport = make()

    with pytest.raises(RetryableError) as caught:
        await transport.send(sms())
    assert caught.value.code == "twilio-connection"
    assert len(server.requests) == 1  # the request did arrive: Twilio may have accepted it

    assert (await transport.send(sms())).status == "sent"  # the client recovers


async def test_a_refused_connection_is_retryable(make: MakeTransport) -> None:
    closed = FakeTwilioServer()
    await closed.start()
    base = closed.base_url
    await closed.close()

    with pytest.raises(RetryableError) as caught:
        await make(api_base=base).send(sms())

    assert caught.value.code == "twilio-connection"


# -- pacing ----------------------------------------------------------------------------------


async def test_concurrent_sends_from_one_sender_are_paced(
    make: MakeTransport, server: FakeTwilioServer
) -> None:
    transport = make(rate_per_second=20)
    # Open the connection first (from another sender), so only pacing spaces the arrivals.
    await transport.send(sms(sender=OTHER_SENDER))
    started = time.monotonic()

    results = await asyncio.gather(*(transport.send(sms(to=f"+1415555{i:04d}")) for i in range(8)))

    assert all(r.status == "sent" for r in results)
    assert time.monotonic() - started >= 7 / 20 - 0.01  # unpaced, all eight take milliseconds
    paced = [r for r in server.messages() if r.get("From") == SENDER]
    arrivals = [r.received_at for r in paced]
    # 1/20 s apart, less generous scheduling jitter: without pacing the gaps are ~1 ms.
    assert min(b - a for a, b in itertools.pairwise(arrivals)) >= 0.025
    # The order of the calls is the order of the requests (FIFO).
    assert [r.to for r in paced] == [f"+1415555{i:04d}" for i in range(8)]


async def test_senders_are_paced_independently(
    make: MakeTransport, server: FakeTwilioServer
) -> None:
    transport = make(rate_per_second=4)
    started = time.monotonic()

    await asyncio.gather(transport.send(sms()), transport.send(sms(sender=OTHER_SENDER)))

    assert time.monotonic() - started < 0.2  # each sender's first message goes at once
    assert len(server.messages()) == 2


async def test_in_flight_requests_are_bounded(
    make: MakeTransport, server: FakeTwilioServer
) -> None:
    server.script(Behaviour.slow(150))
    transport = make(max_in_flight=2, rate_per_second=1000)

    await asyncio.gather(*(transport.send(sms(to=f"+1415555{i:04d}")) for i in range(6)))

    arrivals = sorted(r.received_at for r in server.requests)
    # Two at a time: the third request arrives only once one of the first two is answered.
    assert arrivals[2] - arrivals[0] >= 0.12
    assert arrivals[4] - arrivals[2] >= 0.12


# -- the fake server's status callbacks ------------------------------------------------------


async def test_status_callbacks_are_signed_like_twilios(
    make: MakeTransport, server: FakeTwilioServer
) -> None:
    received: list[tuple[str, dict[str, str], bool]] = []

    async def callback(request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        # The exact URL called: request.url would re-quote the query (%2F becomes /).
        url = f"http://{request.host}{request.raw_path}"
        valid = RequestValidator(TEST_AUTH_TOKEN).validate(
            url, form, request.headers["X-Twilio-Signature"]
        )
        received.append((url, form, valid))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/twilio/status", callback)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        url = f"http://127.0.0.1:{port}/twilio/status?delivery=s1%2F0%2Fsms"
        result = await make().send(sms(status_callback=url))
        assert result.provider_message_id is not None
        answer = await server.send_status_callback(result.provider_message_id, "undelivered", 30003)
    finally:
        await runner.cleanup()

    assert answer == 204
    [(seen_url, form, valid)] = received
    assert valid
    assert seen_url == url
    assert form["MessageSid"] == form["SmsSid"] == result.provider_message_id
    assert form["MessageStatus"] == "undelivered"
    assert form["ErrorCode"] == "30003"
    assert (form["From"], form["To"], form["AccountSid"]) == (SENDER, RECIPIENT, server.account_sid)
    assert server.resources[result.provider_message_id]["status"] == "undelivered"
    with pytest.raises(LookupError):
        await server.send_status_callback("SM" + "0" * 32, "delivered")


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("channel", "overrides", "problem"),
    [
        ("sms", {"account_sid": None}, "account_sid is required"),
        ("sms", {"account_sid": "AC123"}, "account_sid is required"),
        ("sms", {"auth_token_env": None}, "auth_token_env is required"),
        (
            "sms",
            {"auth_token_env": "SWITCHBOARD_TEST_UNSET_VARIABLE"},
            "SWITCHBOARD_TEST_UNSET_VARIABLE, which is not set",
        ),
        ("sms", {"from": None}, "or messaging_service_sid is required"),
        ("sms", {"from": ["4155550100"]}, "is not an E.164 number, short code or alphanumeric ID"),
        ("whatsapp", {"from": ["ACME"]}, "is not an E.164 number"),
        ("sms", {"from": 14155550100}, "must be a number or a list"),
        ("sms", {"messaging_service_sid": "MG1"}, "messaging_service_sid must be MG"),
        ("voice", {"messaging_service_sid": SERVICE_SID}, "not voice"),
        ("sms", {"api_base": "127.0.0.1:8080"}, "api_base must be an http(s) URL"),
        ("sms", {"rate_per_second": 0}, "rate_per_second must be a positive number"),
        ("sms", {"timeout": "soon"}, "timeout must be a positive number"),
        ("sms", {"max_in_flight": 0}, "max_in_flight must be a positive integer"),
        ("sms", {"machine_detection": "Enable"}, "voice only"),
        ("sms", {"auth_token": "secret"}, "unknown option 'auth_token'"),
        ("email", {}, "twilio cannot send email"),
    ],
)
def test_unusable_options_are_config_errors(
    server: FakeTwilioServer,
    monkeypatch: pytest.MonkeyPatch,
    channel: str,
    overrides: dict[str, Any],
    problem: str,
) -> None:
    monkeypatch.setenv(TOKEN_ENV, TEST_AUTH_TOKEN)
    options: dict[str, Any] = {
        "account_sid": server.account_sid,
        "auth_token_env": TOKEN_ENV,
        "from": [SENDER],
    }
    options.update(overrides)

    with pytest.raises(ConfigError) as caught:
        twilio_transport(channel, {k: v for k, v in options.items() if v is not None})

    assert problem in str(caught.value)
    assert TEST_AUTH_TOKEN not in str(caught.value)


def test_every_problem_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as caught:
        twilio_transport("sms", {"from": ["415-555"], "rate_per_second": -1})

    text = str(caught.value)
    for problem in ("account_sid", "auth_token_env", "'415-555'", "rate_per_second"):
        assert problem in text


def test_options_are_defaulted_per_channel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, TEST_AUTH_TOKEN)
    base = {
        "account_sid": "AC" + "0" * 32,
        "auth_token_env": TOKEN_ENV,
        "messaging_service_sid": None,
    }

    sms_transport = twilio_transport("sms", {**base, "from": "+14155550100"})
    whatsapp = twilio_transport("whatsapp", {**base, "from": ["whatsapp:+14155550102"]})
    short_code = twilio_transport("sms", {**base, "from": ["88222", "ACME Inc"]})

    assert isinstance(sms_transport, TwilioMessagingTransport)
    assert isinstance(whatsapp, TwilioMessagingTransport)
    assert isinstance(short_code, TwilioMessagingTransport)
    assert sms_transport.name == whatsapp.name == "twilio"
    assert sms_transport.options.rate_per_second is None  # by sender type
    assert sms_transport.options.max_in_flight == 50
    assert sms_transport.options.messaging_service_sid is None
    assert whatsapp.options.rate_per_second is None
    assert whatsapp.options.senders == ("+14155550102",)
    assert short_code.options.senders == ("88222", "ACME Inc")
    assert isinstance(sms_transport, Transport)


@pytest.mark.parametrize(
    ("exc", "kind", "code"),
    [
        (
            TwilioServiceException("https://twilio.com/e/21211", "Invalid 'To'", 400, 21211),
            PermanentError,
            "21211",
        ),
        (
            TwilioServiceException("https://twilio.com/e/20500", "Internal", 500, 20500),
            RetryableError,
            "20500",
        ),
        (
            TwilioServiceException("https://twilio.com/e/21610", "Unsubscribed", 400, 21610),
            SuppressedError,
            "21610",
        ),
        (ConnectionResetError("reset by peer"), RetryableError, "twilio-connection"),
        (
            json.JSONDecodeError("Expecting value", "<html>", 0),
            RetryableError,
            "twilio-bad-response",
        ),
        (TimeoutError(), RetryableError, "twilio-timeout"),
    ],
)
def test_classify_error(exc: BaseException, kind: type[TransportError], code: str) -> None:
    error = classify_error(exc)

    assert type(error) is kind
    assert error.code == code


def test_the_registry_builds_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The line to add to ``transports.registry.PROVIDERS`` fits its factory signature."""
    monkeypatch.setenv(TOKEN_ENV, TEST_AUTH_TOKEN)
    monkeypatch.setitem(PROVIDERS, "twilio", (TWILIO_CHANNELS, twilio_transport))
    options = {"account_sid": "AC" + "0" * 32, "auth_token_env": TOKEN_ENV, "from": [SENDER]}

    assert isinstance(build("voice", ChannelConfig("twilio", options)), TwilioVoiceTransport)
    assert isinstance(build("whatsapp", ChannelConfig("twilio", options)), TwilioMessagingTransport)
    with pytest.raises(ConfigError, match="cannot send email"):
        build("email", ChannelConfig("twilio", options))


@pytest.mark.parametrize(
    ("channel", "sender", "rate"),
    [
        ("sms", "+14155550100", 1.0),  # a long code
        ("sms", "+18445550100", 3.0),  # toll-free
        ("sms", "88222", 100.0),  # a short code
        ("sms", "ACME Inc", 10.0),  # an alphanumeric sender ID
        ("sms", "MG" + "0" * 32, 10.0),  # a Messaging Service
        ("whatsapp", "+14155550100", 80.0),
        ("voice", "voice:AC" + "0" * 32, 1.0),  # calls per second, per account
    ],
)
def test_senders_are_paced_by_type_unless_the_channel_sets_a_rate(
    channel: str, sender: str, rate: float
) -> None:
    from transports.twilio import default_rate

    assert default_rate(channel, sender) == rate
