"""SlackTransport through slack_sdk (Web API and incoming webhooks) against a local Slack."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from switchboard.errors import ConfigError
from tests.fakes.slack_server import FakeSlackServer, SlackReply
from transports.base import OutboundMessage, Transport
from transports.errors import PermanentError, RetryableError
from transports.slack import SlackTransport, build_payload, is_webhook

BOT_TOKEN = "xoxb-test-token"
CHANNEL = "C0123456789"
HOOK_PATH = "/services/T0000/B0000/secretsecret"
HOOK = f"https://hooks.slack.com{HOOK_PATH}"


@pytest.fixture
async def server() -> AsyncIterator[FakeSlackServer]:
    async with FakeSlackServer(bot_tokens={BOT_TOKEN}) as fake:
        yield fake


@pytest.fixture
async def make(
    server: FakeSlackServer, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Callable[..., SlackTransport]]:
    monkeypatch.setenv("TEST_SLACK_TOKEN", BOT_TOKEN)
    built: list[SlackTransport] = []

    def factory(**overrides: Any) -> SlackTransport:
        options: dict[str, Any] = {
            "token_env": "TEST_SLACK_TOKEN",
            "base_url": server.api_url,
            "webhook_base": server.url,
            "timeout": 5,
        }
        options.update(overrides)
        transport = SlackTransport({k: v for k, v in options.items() if v is not None})
        built.append(transport)
        return transport

    yield factory
    for transport in built:
        await transport.aclose()


def slack(to: str = CHANNEL, **kwargs: Any) -> OutboundMessage:
    kwargs.setdefault("body", "Deploy finished")
    return OutboundMessage(channel="slack", to=to, reference="s1/0/slack", **kwargs)


# -- chat.postMessage -------------------------------------------------------------------------


async def test_posts_a_message(
    make: Callable[..., SlackTransport], server: FakeSlackServer
) -> None:
    transport = make()
    assert isinstance(transport, Transport)
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*Deploy* finished"}}]
    result = await transport.send(
        slack(subject="CI <main>", file_url="https://ci.example/1", extras={"blocks": blocks})
    )
    [post] = server.posts
    assert post == {
        "channel": CHANNEL,
        "text": "*CI &lt;main&gt;*\nDeploy finished\n<https://ci.example/1>",
        "blocks": blocks,
    }
    assert result.status == "delivered"
    assert result.provider_message_id is not None
    assert result.provider_message_id.startswith(f"{CHANNEL}:")


async def test_channel_names_resolve_to_ids(
    make: Callable[..., SlackTransport], server: FakeSlackServer
) -> None:
    result = await make().send(slack(to="#deploys", extras={"thread_ts": "1712345678.000100"}))
    assert server.posts[0]["thread_ts"] == "1712345678.000100"
    assert result.provider_message_id is not None
    assert result.provider_message_id.startswith("C")
    assert result.detail["channel"] != "#deploys"


async def test_blocks_without_text(
    make: Callable[..., SlackTransport], server: FakeSlackServer
) -> None:
    blocks = [{"type": "divider"}]
    await make().send(slack(body=None, extras={"blocks": blocks}))
    assert server.posts[0] == {"channel": CHANNEL, "blocks": blocks}


@pytest.mark.parametrize(
    "error", ["channel_not_found", "not_in_channel", "is_archived", "msg_too_long"]
)
async def test_permanent_errors(
    make: Callable[..., SlackTransport], server: FakeSlackServer, error: str
) -> None:
    server.script(CHANNEL, SlackReply(error=error))
    with pytest.raises(PermanentError) as caught:
        await make().send(slack())
    assert caught.value.code == error


async def test_invalid_auth_is_permanent(
    make: Callable[..., SlackTransport], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTHER_SLACK_TOKEN", "xoxb-revoked")
    with pytest.raises(PermanentError) as caught:
        await make(token_env="OTHER_SLACK_TOKEN").send(slack())
    assert caught.value.code == "invalid_auth"


async def test_ratelimited_honours_retry_after(
    make: Callable[..., SlackTransport], server: FakeSlackServer
) -> None:
    server.script(CHANNEL, SlackReply(error="ratelimited", retry_after="30", times=1))
    transport = make()
    with pytest.raises(RetryableError) as caught:
        await transport.send(slack())
    assert caught.value.code == "ratelimited"
    assert caught.value.retry_after == 30
    assert len(server.posts) == 1  # slack_sdk did not retry behind our back
    await transport.send(slack())


@pytest.mark.parametrize(("error", "status"), [("internal_error", 200), ("fatal_error", 500)])
async def test_transient_errors_are_retryable(
    make: Callable[..., SlackTransport], server: FakeSlackServer, error: str, status: int
) -> None:
    server.script(CHANNEL, SlackReply(error=error, status=status))
    with pytest.raises(RetryableError) as caught:
        await make().send(slack())
    assert caught.value.code == error


async def test_a_gateway_error_page_is_retryable(
    make: Callable[..., SlackTransport], server: FakeSlackServer
) -> None:
    server.script(CHANNEL, SlackReply(status=503))
    with pytest.raises(RetryableError) as caught:
        await make().send(slack())
    assert caught.value.code == "http-503"


async def test_timeout_is_retryable(
    make: Callable[..., SlackTransport], server: FakeSlackServer
) -> None:
    server.script(CHANNEL, SlackReply(delay=2, times=1))
    transport = make(timeout=0.2)
    with pytest.raises(RetryableError) as caught:
        await transport.send(slack())
    assert caught.value.code == "slack-timeout"
    await transport.send(slack())


async def test_dropped_connection_is_retryable(
    make: Callable[..., SlackTransport], server: FakeSlackServer
) -> None:
    server.script(CHANNEL, SlackReply(drop=True, times=1))
    transport = make()
    with pytest.raises(RetryableError) as caught:
        await transport.send(slack())
    assert caught.value.code == "slack-connection"
    assert len(server.posts) == 1
    await transport.send(slack())


async def test_refused_connection_is_retryable(make: Callable[..., SlackTransport]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with pytest.raises(RetryableError) as caught:
        await make(base_url=f"{closed}/api/").send(slack())
    assert caught.value.code == "slack-connection"


async def test_a_conversation_needs_a_bot_token(make: Callable[..., SlackTransport]) -> None:
    with pytest.raises(PermanentError) as caught:
        await make(token_env=None).send(slack())
    assert caught.value.code == "config"


# -- incoming webhooks --------------------------------------------------------------------------


async def test_posts_to_a_webhook(
    make: Callable[..., SlackTransport], server: FakeSlackServer
) -> None:
    result = await make(token_env=None).send(slack(to=HOOK, extras={"thread_ts": "1.2"}))
    assert result.status == "delivered"
    assert result.provider_message_id is None
    assert server.webhooks == [{"path": HOOK_PATH, "body": {"text": "Deploy finished"}}]
    assert server.posts == []


@pytest.mark.parametrize(
    ("error", "status"),
    [
        ("no_service", 404),
        ("channel_is_archived", 410),
        ("invalid_payload", 400),
        ("action_prohibited", 403),
    ],
)
async def test_webhook_errors_are_permanent(
    make: Callable[..., SlackTransport], server: FakeSlackServer, error: str, status: int
) -> None:
    server.script(HOOK_PATH, SlackReply(error=error))
    with pytest.raises(PermanentError) as caught:
        await make().send(slack(to=HOOK))
    assert caught.value.code == error
    assert str(status) in caught.value.message
    assert "secretsecret" not in caught.value.message  # the URL is a credential


async def test_webhook_url_and_body_stay_out_of_debug_logs(
    make: Callable[..., SlackTransport], server: FakeSlackServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await make().send(slack(to=HOOK))
    await make().send(slack())
    assert "secretsecret" not in caplog.text
    assert "Deploy finished" not in caplog.text


async def test_webhook_rate_limit_honours_retry_after(
    make: Callable[..., SlackTransport], server: FakeSlackServer
) -> None:
    server.script(HOOK_PATH, SlackReply(error="rate_limited", retry_after="12", times=1))
    transport = make()
    with pytest.raises(RetryableError) as caught:
        await transport.send(slack(to=HOOK))
    assert caught.value.code == "rate_limited"
    assert caught.value.retry_after == 12
    await transport.send(slack(to=HOOK))


async def test_webhook_server_error_is_retryable(
    make: Callable[..., SlackTransport], server: FakeSlackServer
) -> None:
    server.script(HOOK_PATH, SlackReply(error="rollup_error"))
    with pytest.raises(RetryableError) as caught:
        await make().send(slack(to=HOOK))
    assert caught.value.code == "rollup_error"


async def test_webhook_timeout_is_retryable(
    make: Callable[..., SlackTransport], server: FakeSlackServer
) -> None:
    server.script(HOOK_PATH, SlackReply(delay=2, times=1))
    with pytest.raises(RetryableError) as caught:
        await make(timeout=0.2).send(slack(to=HOOK))
    assert caught.value.code == "slack-timeout"


async def test_webhook_dropped_connection_is_retryable(
    make: Callable[..., SlackTransport], server: FakeSlackServer
) -> None:
    server.script(HOOK_PATH, SlackReply(drop=True, times=1))
    transport = make()
    with pytest.raises(RetryableError) as caught:
        await transport.send(slack(to=HOOK))
    assert caught.value.code == "slack-connection"
    await transport.send(slack(to=HOOK))


# -- pure parts -----------------------------------------------------------------------------------


def test_only_hooks_slack_com_is_a_webhook() -> None:
    assert is_webhook(HOOK)
    assert not is_webhook("http://hooks.slack.com/services/x")
    assert not is_webhook("https://hooks.slack.com.evil.example/services/x")
    assert not is_webhook(CHANNEL)


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"body": None}, "empty-message"),
        ({"extras": {"blocks": "nope"}}, "bad-extras"),
        ({"extras": {"unfurl_links": "yes"}}, "bad-extras"),
        ({"extras": {"thread_ts": 1.5}}, "bad-extras"),
    ],
)
def test_unusable_messages_are_permanent(kwargs: dict[str, Any], code: str) -> None:
    with pytest.raises(PermanentError) as caught:
        build_payload(slack(**kwargs), webhook=False)
    assert caught.value.code == code


def test_configuration_errors() -> None:
    with pytest.raises(ConfigError, match="not set"):
        SlackTransport({"token_env": "SWITCHBOARD_TEST_UNSET_VARIABLE"})
    assert SlackTransport({}).base_url == "https://slack.com/api/"
