"""FcmTransport (aiohttp, service-account OAuth) against a local FCM v1 API and token endpoint."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from switchboard.errors import ConfigError
from tests.fakes.fcm_server import FakeFcmServer, FcmReply
from tests.fakes.tls import ServiceAccount, make_service_account
from transports.base import OutboundMessage, Transport
from transports.errors import PermanentError, RetryableError, SuppressedError
from transports.fcm import FcmTransport, build_request, classify

TOKEN = "fcm-registration-token-1"
OTHER = "fcm-registration-token-2"


@pytest.fixture
async def server() -> AsyncIterator[FakeFcmServer]:
    async with FakeFcmServer() as fake:
        yield fake


@pytest.fixture
def account(server: FakeFcmServer, tmp_path: Path) -> ServiceAccount:
    account = make_service_account(
        tmp_path / "sa", token_uri=server.token_uri, project_id=server.project_id
    )
    server.register(account)
    return account


@pytest.fixture
async def make(
    server: FakeFcmServer, account: ServiceAccount
) -> AsyncIterator[Callable[..., FcmTransport]]:
    built: list[FcmTransport] = []

    def factory(**overrides: Any) -> FcmTransport:
        options: dict[str, Any] = {
            "service_account_file": str(account.path),
            "base_url": server.url,
            "timeout": 5,
        }
        options.update(overrides)
        transport = FcmTransport({k: v for k, v in options.items() if v is not None})
        built.append(transport)
        return transport

    yield factory
    for transport in built:
        await transport.aclose()


def push(to: str = TOKEN, **kwargs: Any) -> OutboundMessage:
    kwargs.setdefault("body", "Your order shipped")
    kwargs.setdefault("subject", "Order 1234")
    return OutboundMessage(channel="push", to=to, reference="s1/0/push", **kwargs)


async def test_sends_with_an_oauth_token(
    make: Callable[..., FcmTransport], server: FakeFcmServer, account: ServiceAccount
) -> None:
    transport = make()
    assert isinstance(transport, Transport)
    extras = {"data": {"order": "1234", "count": 2}, "android": {"priority": "NORMAL"}}
    result = await transport.send(push(extras=extras))

    assert result.status == "delivered"  # the provider reports no device receipt: final
    assert result.provider_message_id is not None
    assert result.provider_message_id.startswith(f"projects/{server.project_id}/messages/")
    [claims] = server.token_requests
    assert claims["iss"] == account.info["client_email"]
    assert claims["aud"] == server.token_uri
    [sent] = server.messages
    assert sent["authorization"].startswith("Bearer ya29.")
    assert sent["body"] == {
        "message": {
            "token": TOKEN,
            "notification": {"title": "Order 1234", "body": "Your order shipped"},
            "data": {"order": "1234", "count": "2"},
            "android": {"priority": "NORMAL"},
        }
    }


async def test_service_account_from_environment(
    make: Callable[..., FcmTransport],
    server: FakeFcmServer,
    account: ServiceAccount,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEST_FCM_ACCOUNT", account.json)
    await make(service_account_file=None, service_account_env="TEST_FCM_ACCOUNT").send(push())
    assert len(server.messages) == 1


async def test_access_token_is_cached_and_shared(
    make: Callable[..., FcmTransport], server: FakeFcmServer
) -> None:
    transport = make()
    await asyncio.gather(*(transport.send(push()) for _ in range(10)))
    await transport.send(push())
    assert len(server.token_requests) == 1
    assert len({m["authorization"] for m in server.messages}) == 1


async def test_access_token_is_renewed_before_it_expires(
    make: Callable[..., FcmTransport], server: FakeFcmServer
) -> None:
    server.token_lifetime = 60  # inside the refresh margin: every send needs a new one
    transport = make()
    await transport.send(push())
    await transport.send(push())
    assert len(server.token_requests) == 2


async def test_refreshes_once_on_401(
    make: Callable[..., FcmTransport], server: FakeFcmServer
) -> None:
    transport = make()
    await transport.send(push())
    server.revoke_tokens()
    await transport.send(push())
    assert len(server.token_requests) == 2
    first, refused, retried = (m["authorization"] for m in server.messages)
    assert refused == first != retried


async def test_third_party_auth_error_is_permanent_without_refresh(
    make: Callable[..., FcmTransport], server: FakeFcmServer
) -> None:
    server.fail(TOKEN, "THIRD_PARTY_AUTH_ERROR")
    with pytest.raises(PermanentError) as caught:
        await make().send(push())
    assert caught.value.code == "THIRD_PARTY_AUTH_ERROR"
    assert len(server.token_requests) == 1


async def test_unregistered_token_is_suppressed(
    make: Callable[..., FcmTransport], server: FakeFcmServer
) -> None:
    server.fail(TOKEN, "UNREGISTERED")
    with pytest.raises(SuppressedError) as caught:
        await make().send(push())
    assert caught.value.code == "UNREGISTERED"


@pytest.mark.parametrize("code", ["INVALID_ARGUMENT", "SENDER_ID_MISMATCH"])
async def test_permanent_errors(
    make: Callable[..., FcmTransport], server: FakeFcmServer, code: str
) -> None:
    server.fail(TOKEN, code)
    with pytest.raises(PermanentError) as caught:
        await make().send(push())
    assert not isinstance(caught.value, SuppressedError)
    assert caught.value.code == code


@pytest.mark.parametrize("code", ["UNAVAILABLE", "INTERNAL"])
async def test_retryable_errors(
    make: Callable[..., FcmTransport], server: FakeFcmServer, code: str
) -> None:
    server.fail(TOKEN, code)
    with pytest.raises(RetryableError) as caught:
        await make().send(push())
    assert caught.value.code == code


async def test_quota_exceeded_honours_retry_after(
    make: Callable[..., FcmTransport], server: FakeFcmServer
) -> None:
    server.fail(TOKEN, "QUOTA_EXCEEDED", retry_after="42", times=1)
    transport = make()
    with pytest.raises(RetryableError) as caught:
        await transport.send(push())
    assert caught.value.code == "QUOTA_EXCEEDED"
    assert caught.value.retry_after == 42
    await transport.send(push())  # the quota came back


async def test_a_proxy_error_page_is_retryable(
    make: Callable[..., FcmTransport], server: FakeFcmServer
) -> None:
    server.script(TOKEN, FcmReply(status=502, raw="<html>Bad Gateway</html>"))
    with pytest.raises(RetryableError) as caught:
        await make().send(push())
    assert caught.value.code == "http-502"


async def test_the_server_checks_the_data_values(
    make: Callable[..., FcmTransport], server: FakeFcmServer
) -> None:
    # The transport turns data values into strings; the fake would refuse anything else.
    await make().send(push(extras={"data": {"flag": True, "nested": {"a": 1}}}))
    assert server.messages[0]["body"]["message"]["data"] == {"flag": "true", "nested": '{"a": 1}'}


async def test_timeout_is_retryable(
    make: Callable[..., FcmTransport], server: FakeFcmServer
) -> None:
    server.script(TOKEN, FcmReply(delay=2, times=1))
    transport = make(timeout=0.2)
    with pytest.raises(RetryableError) as caught:
        await transport.send(push())
    assert caught.value.code == "fcm-timeout"
    await transport.send(push())


async def test_dropped_connection_is_retryable(
    make: Callable[..., FcmTransport], server: FakeFcmServer
) -> None:
    server.script(TOKEN, FcmReply(drop=True, times=1))
    transport = make()
    with pytest.raises(RetryableError) as caught:
        await transport.send(push())
    assert caught.value.code == "fcm-connection"
    await transport.send(push())


async def test_refused_connection_is_retryable(make: Callable[..., FcmTransport]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with pytest.raises(RetryableError) as caught:
        await make(base_url=closed).send(push())
    assert caught.value.code == "fcm-connection"


async def test_refused_credentials_are_permanent(
    make: Callable[..., FcmTransport], server: FakeFcmServer
) -> None:
    server.fail_token_requests("invalid_grant", 400)
    with pytest.raises(PermanentError) as caught:
        await make().send(push())
    assert caught.value.code == "invalid_grant"
    assert server.messages == []


async def test_token_endpoint_outage_is_retryable(
    make: Callable[..., FcmTransport], server: FakeFcmServer
) -> None:
    server.fail_token_requests("backend_error", 503)
    transport = make()
    with pytest.raises(RetryableError):
        await transport.send(push())
    await transport.send(push())


async def test_a_foreign_key_is_refused_by_the_token_endpoint(
    make: Callable[..., FcmTransport],
    server: FakeFcmServer,
    account: ServiceAccount,
    tmp_path: Path,
) -> None:
    impostor = make_service_account(tmp_path / "impostor", token_uri=server.token_uri)
    impostor.info["private_key_id"] = account.info["private_key_id"]  # claims to be the real key
    impostor.path.write_text(json.dumps(impostor.info))
    with pytest.raises(PermanentError) as caught:
        await make(service_account_file=str(impostor.path)).send(push())
    assert caught.value.code == "invalid_grant"


async def test_wrong_project_is_permanent(
    make: Callable[..., FcmTransport], server: FakeFcmServer
) -> None:
    with pytest.raises(PermanentError) as caught:
        await make(project_id="someone-else").send(push())
    assert caught.value.code == "PERMISSION_DENIED"


def test_provider_neutral_extras_fill_android_fields() -> None:
    body = build_request(
        push(extras={"priority": 10, "collapse_id": "order", "ttl": 60, "android": {"ttl": "5s"}})
    )
    assert body["message"]["android"] == {"priority": "HIGH", "collapse_key": "order", "ttl": "5s"}


def test_a_data_only_push_has_no_notification() -> None:
    body = build_request(push(body=None, subject=None, extras={"data": {"sync": "1"}}))
    assert "notification" not in body["message"]
    with pytest.raises(PermanentError) as caught:
        build_request(push(body=None, subject=None))
    assert caught.value.code == "empty-push"


@pytest.mark.parametrize(
    "extras", [{"data": ["x"]}, {"android": "high"}, {"priority": "urgent"}, {"ttl": "1h"}]
)
def test_unusable_extras_are_permanent(extras: dict[str, Any]) -> None:
    with pytest.raises(PermanentError) as caught:
        build_request(push(extras=extras))
    assert caught.value.code == "bad-extras"


def test_classify_reads_status_without_details() -> None:
    error = classify(404, {"error": {"code": 404, "status": "NOT_FOUND", "message": "gone"}})
    assert type(error) is PermanentError
    assert error.code == "NOT_FOUND"
    assert classify(503, None, 7).retry_after == 7


def test_configuration_errors(account: ServiceAccount, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="exactly one"):
        FcmTransport({})
    with pytest.raises(ConfigError, match="not set"):
        FcmTransport({"service_account_env": "SWITCHBOARD_TEST_UNSET_VARIABLE"})
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({**account.info, "private_key": "nope"}))
    with pytest.raises(ConfigError, match="PEM"):
        FcmTransport({"service_account_file": str(broken)})
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"client_email": "a@b"}))
    with pytest.raises(ConfigError, match="private_key, token_uri"):
        FcmTransport({"service_account_file": str(partial)})
    no_project = tmp_path / "no-project.json"
    no_project.write_text(json.dumps({k: v for k, v in account.info.items() if k != "project_id"}))
    with pytest.raises(ConfigError, match="project_id"):
        FcmTransport({"service_account_file": str(no_project)})
    assert (
        FcmTransport({"service_account_file": str(no_project), "project_id": "p"}).project_id == "p"
    )
