"""transports.smtp against a real aiosmtpd server on loopback."""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from switchboard.errors import ConfigError
from transports.base import OutboundMessage, SendResult, Transport
from transports.errors import PermanentError, RetryableError
from transports.smtp import SmtpTransport, build_email

SENDER = "Acme <noreply@acme.example>"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Handler:
    """Accepts everything unless told otherwise; records what arrived and on which connection."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[tuple[tuple[str, int], str, list[str], bytes]] = []
        self.quits = 0
        self.rcpt_reply: dict[str, str] = {}
        self.data_reply: str | None = None

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        reply = self.rcpt_reply.get(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_reply is not None:
            return self.data_reply
        with self.lock:
            self.messages.append(
                (
                    session.peer,
                    envelope.mail_from,
                    list(envelope.rcpt_tos),
                    envelope.original_content,
                )
            )
        return "250 2.0.0 Queued as abc123"

    async def handle_QUIT(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.quits += 1
        return "221 Bye"

    def parsed(self, i: int = -1) -> EmailMessage:
        raw = self.messages[i][3]
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        return msg

    @property
    def peers(self) -> list[tuple[str, int]]:
        return [m[0] for m in self.messages]


class Server:
    def __init__(self, port: int) -> None:
        self.port = port
        self.handler = Handler()
        self.controller: Controller | None = None

    def start(self) -> None:
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server(free_port())
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
async def make(server: Server) -> AsyncIterator[Callable[..., SmtpTransport]]:
    built: list[SmtpTransport] = []

    def factory(**overrides: Any) -> SmtpTransport:
        options: dict[str, Any] = {
            "from": SENDER,
            "host": "127.0.0.1",
            "port": server.port,
            "security": "none",
            "timeout": 5,
        }
        options.update(overrides)
        transport = SmtpTransport(options)
        built.append(transport)
        return transport

    yield factory
    for transport in built:
        await transport.aclose()


def mail(to: str = "ana@example.com", **kwargs: Any) -> OutboundMessage:
    kwargs.setdefault("body", "Hello Ana, your order shipped.")
    kwargs.setdefault("subject", "Your order")
    kwargs.setdefault("reference", "s1/0/email")
    return OutboundMessage(channel="email", to=to, **kwargs)


# -- success -----------------------------------------------------------------------------------


async def test_send_full_message(server: Server, make: Callable[..., SmtpTransport]) -> None:
    transport = make()
    assert isinstance(transport, Transport)
    result = await transport.send(
        mail(
            file_url="https://example.com/invoice.pdf",
            extras={
                "html": "<p>Hello <b>Ana</b></p>",
                "reply_to": "help@acme.example",
                "headers": {"X-Campaign": "spring-sale", "List-Unsubscribe": "<https://u.example>"},
            },
        )
    )
    assert isinstance(result, SendResult)
    assert result.status == "delivered"
    assert "Queued as abc123" in result.detail["smtp_reply"]

    (_peer, mail_from, rcpts, _raw) = server.handler.messages[0]
    assert mail_from == "noreply@acme.example"
    assert rcpts == ["ana@example.com"]
    msg = server.handler.parsed()
    assert msg["From"] == SENDER
    assert msg["To"] == "ana@example.com"
    assert msg["Subject"] == "Your order"
    assert msg["Message-ID"] == result.provider_message_id
    assert msg["Message-ID"].endswith("@acme.example>")
    assert msg["Date"]
    assert msg["X-Switchboard-Reference"] == "s1/0/email"
    assert msg["Reply-To"] == "help@acme.example"
    assert msg["X-Campaign"] == "spring-sale"
    assert msg["List-Unsubscribe"] == "<https://u.example>"
    assert msg.get_content_type() == "multipart/alternative"
    text = msg.get_body(preferencelist=("plain",))
    html = msg.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    plain = text.get_content()
    assert plain.startswith("Hello Ana, your order shipped.")
    assert "https://example.com/invoice.pdf" in plain
    assert plain.index("shipped.") < plain.index("https://example.com/invoice.pdf")
    assert html.get_content().strip() == "<p>Hello <b>Ana</b></p>"


async def test_plain_text_only(server: Server, make: Callable[..., SmtpTransport]) -> None:
    await make().send(mail(body="Grüße ✓", reference=""))
    msg = server.handler.parsed()
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content().strip() == "Grüße ✓"
    assert msg["Reply-To"] is None
    assert msg["X-Switchboard-Reference"] is None


async def test_file_url_without_text(server: Server, make: Callable[..., SmtpTransport]) -> None:
    await make().send(mail(body=None, file_url="https://example.com/a.pdf"))
    assert server.handler.parsed().get_content().strip() == "https://example.com/a.pdf"


async def test_message_ids_are_unique(server: Server, make: Callable[..., SmtpTransport]) -> None:
    transport = make()
    ids = {(await transport.send(mail())).provider_message_id for _ in range(3)}
    assert len(ids) == 3


# -- headers refused ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Bcc": "spy@evil.example"},
        {"from": "ceo@acme.example"},
        {"Content-Type": "text/html"},
        {"MESSAGE-ID": "<x@y>"},
        {"Reply-To": "x@y.example"},
        {"X Bad": "1"},
        {"X:Bad": "1"},
        {"": "1"},
        {"X-Ünicode": "1"},
        {"X-Inject": "a\r\nBcc: spy@evil.example"},
        {"X-Newline": "a\nb"},
        {"X-Number": 3},
    ],
)
async def test_reserved_or_malformed_headers_are_permanent(
    server: Server, make: Callable[..., SmtpTransport], headers: dict[str, Any]
) -> None:
    with pytest.raises(PermanentError) as info:
        await make().send(mail(extras={"headers": headers}))
    assert info.value.code == "bad-header"
    assert not info.value.retryable
    assert server.handler.messages == []


def test_build_email_refuses_headers_without_a_server() -> None:
    with pytest.raises(PermanentError, match="cannot be set"):
        build_email(mail(extras={"headers": {"To": "x@y.example"}}), SENDER)
    with pytest.raises(PermanentError, match="one line of text"):
        build_email(mail(extras={"headers": {"X-A": "1\r\n"}}), SENDER)


# -- refusals and failures ---------------------------------------------------------------------


async def test_550_recipient_refusal_is_permanent(
    server: Server, make: Callable[..., SmtpTransport]
) -> None:
    server.handler.rcpt_reply["nobody@example.com"] = "550 5.1.1 No such user"
    with pytest.raises(PermanentError) as info:
        await make().send(mail(to="nobody@example.com"))
    assert type(info.value) is PermanentError
    assert info.value.code == "550"
    assert "No such user" in info.value.message


@pytest.mark.parametrize("reply", ["450 4.2.1 Mailbox busy", "451 4.7.1 Greylisted, try later"])
async def test_4xx_recipient_refusal_is_retryable(
    server: Server, make: Callable[..., SmtpTransport], reply: str
) -> None:
    server.handler.rcpt_reply["ana@example.com"] = reply
    with pytest.raises(RetryableError) as info:
        await make().send(mail())
    assert info.value.code == reply[:3]


async def test_451_after_data_is_retryable(
    server: Server, make: Callable[..., SmtpTransport]
) -> None:
    server.handler.data_reply = "451 4.3.0 Local error in processing"
    with pytest.raises(RetryableError) as info:
        await make().send(mail())
    assert info.value.code == "451"


async def test_554_after_data_is_permanent(
    server: Server, make: Callable[..., SmtpTransport]
) -> None:
    server.handler.data_reply = "554 5.7.1 Message rejected as spam"
    with pytest.raises(PermanentError) as info:
        await make().send(mail())
    assert info.value.code == "554"


async def test_a_refusal_does_not_break_the_next_send(
    server: Server, make: Callable[..., SmtpTransport]
) -> None:
    transport = make()
    await transport.send(mail())
    server.handler.rcpt_reply["nobody@example.com"] = "550 No such user"
    with pytest.raises(PermanentError):
        await transport.send(mail(to="nobody@example.com"))
    assert (await transport.send(mail())).status == "delivered"
    assert len(server.handler.messages) == 2


async def test_connection_refused_is_retryable() -> None:
    transport = SmtpTransport(
        {"from": SENDER, "host": "127.0.0.1", "port": free_port(), "security": "none", "timeout": 2}
    )
    with pytest.raises(RetryableError) as info:
        await transport.send(mail())
    assert info.value.code == "smtp-connection"
    await transport.aclose()


# -- the connection pool -----------------------------------------------------------------------


async def test_sequential_sends_reuse_one_connection(
    server: Server, make: Callable[..., SmtpTransport]
) -> None:
    transport = make()
    for _ in range(4):
        await transport.send(mail())
    assert len(server.handler.messages) == 4
    assert len(set(server.handler.peers)) == 1


async def test_concurrent_sends_use_at_most_max_connections(
    server: Server, make: Callable[..., SmtpTransport]
) -> None:
    transport = make(max_connections=2)
    await asyncio.gather(*(transport.send(mail(to=f"u{i}@example.com")) for i in range(8)))
    assert len(server.handler.messages) == 8
    assert 1 <= len(set(server.handler.peers)) <= 2
    await asyncio.gather(*(transport.send(mail()) for _ in range(4)))
    assert len(set(server.handler.peers)) <= 2  # the pooled ones were reused


async def test_recovers_when_the_server_closed_the_idle_connection(
    server: Server, make: Callable[..., SmtpTransport]
) -> None:
    transport = make()
    await transport.send(mail())
    server.restart()  # every open connection is gone
    result = await transport.send(mail())
    assert result.status == "delivered"
    assert len(server.handler.messages) == 2
    first, second = server.handler.peers
    assert first != second
    assert (await transport.send(mail())).status == "delivered"
    assert server.handler.peers[2] == second  # and the new connection is pooled


async def test_aclose_quits_idle_connections(
    server: Server, make: Callable[..., SmtpTransport]
) -> None:
    transport = make()
    await transport.send(mail())
    await transport.aclose()
    for _ in range(50):
        if server.handler.quits:
            break
        await asyncio.sleep(0.01)
    assert server.handler.quits == 1
    await transport.aclose()  # idempotent
    assert (await transport.send(mail())).status == "delivered"  # reconnects


# -- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options", [{}, {"from": ""}, {"from": "noreply"}, {"from": ["a@b.example"]}]
)
def test_from_is_required(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="needs `from`"):
        SmtpTransport(options)


@pytest.mark.parametrize("security", ["ssl", "STARTTLS", "", "true"])
def test_bad_security(security: str) -> None:
    with pytest.raises(ConfigError, match="security"):
        SmtpTransport({"from": SENDER, "security": security})


@pytest.mark.parametrize(("security", "port"), [("tls", 465), ("starttls", 587), ("none", 25)])
def test_default_port_follows_security(security: str, port: int) -> None:
    assert SmtpTransport({"from": SENDER, "security": security}).port == port
    assert SmtpTransport({"from": SENDER}).port == 587


def test_password_env_must_be_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SB_TEST_SMTP_PASSWORD", raising=False)
    with pytest.raises(ConfigError, match="SB_TEST_SMTP_PASSWORD"):
        SmtpTransport({"from": SENDER, "password_env": "SB_TEST_SMTP_PASSWORD"})
    monkeypatch.setenv("SB_TEST_SMTP_PASSWORD", "s3cret")
    SmtpTransport({"from": SENDER, "password_env": "SB_TEST_SMTP_PASSWORD", "username": "u"})


@pytest.mark.parametrize(
    "options", [{"port": "smtp"}, {"timeout": "soon"}, {"max_connections": "many"}]
)
def test_non_numeric_options_are_config_errors(options: dict[str, Any]) -> None:
    # Pins a fixed bug. Before the fix: int()/float() raise ValueError, not ConfigError, so TransportRegistry.get (documented
    # to raise ConfigError for a misconfigured provider) lets a ValueError out, and
    # streams/dispatch._send ("nothing here raises") only catches ConfigError.
    with pytest.raises(ConfigError):
        SmtpTransport({"from": SENDER, **options})
