"""The command line's views of issue 14 part 4: ``status --status``, ``clients list|show`` and
``send``'s options; and the pure pieces behind them (the status filter, masking, the table)."""

from __future__ import annotations

import argparse
import json
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from cli import main as cli
from cli import send_options
from cli.clients_view import MASK, client_rows, mask, masked_client
from cli.recipients import collect, render_table

SESSION = "0f8fad5b-d9cb-469f-a165-70867728950e"


# -- the deliveries of a session by status ----------------------------------------------------


def test_the_table_has_one_line_per_delivery_whatever_the_error_holds() -> None:
    table = render_table(
        [
            {
                "index": 0,
                "channel": "sms",
                "recipient": "+79161234567",
                "status": "deferred",
                "reason": "window-closed",
                "error_code": "window-closed",
                "error": "outside the\nwindow",
            },
            {
                "index": 12,
                "channel": "email",
                "status": "failed",
                "error_code": "http-500",
                "error": None,
            },
        ]
    )
    lines = table.splitlines()
    assert len(lines) == 3 and lines[0].split()[:4] == ["INDEX", "CHANNEL", "RECIPIENT", "STATUS"]
    assert lines[1].endswith("window-closed  outside the window")
    assert lines[2].split() == ["12", "email", "-", "failed", "-", "http-500", "-"]


def test_collect_follows_next_offset_to_the_end() -> None:
    pages = {0: ([{"index": 3}], 1000), 1000: ([], 2000), 2000: ([{"index": 2500}], None)}
    asked: list[str] = []

    def fetch(path: str) -> tuple[int, Any]:
        asked.append(path)
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
        found, after = pages[int(query["offset"][0])]
        return 200, {"recipients": found, "next_offset": after, "status": "completed"}

    status, _, found = collect(fetch, SESSION, frozenset({"failed", "deferred"}))
    assert status == 200 and [e["index"] for e in found] == [3, 2500]
    assert asked[0] == f"/v1/sessions/{SESSION}?status=deferred,failed&offset=0&limit=500"
    assert len(asked) == 3


def test_collect_stops_at_a_refusal() -> None:
    status, body, found = collect(
        lambda path: (404, {"errors": []}), SESSION, frozenset({"failed"})
    )
    assert (status, body, found) == (404, {"errors": []}, [])


# -- switchboard status --status ------------------------------------------------------------


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> tuple[str, list[str]]:
    """The Send API as the CLI calls it (``cli._http``): one filtered page, or 404 for another
    session."""
    asked: list[str] = []

    def http(args: Any, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        asked.append(path)
        if SESSION not in path:
            return 404, {"errors": [{"field": "session_id", "error": "no such session"}]}
        return 200, {
            "session_id": SESSION,
            "status": "dispatching",
            "counts": {"failed": 1},
            "next_offset": None,
            "recipients": [
                {
                    "index": 0,
                    "channel": "sms",
                    "recipient": "+14155550100",
                    "status": "deferred",
                    "reason": "window-closed",
                    "error_code": "window-closed",
                    "error": "outside the sms window 08:00-21:00 (mon) in UTC; released at 2026-12-07T08:00:00Z",
                },
                {
                    "index": 1,
                    "channel": "sms",
                    "recipient": "+14155550101",
                    "status": "failed",
                    "reason": None,
                    "error_code": "30005",
                    "error": "Twilio error 30005",
                },
            ],
        }

    monkeypatch.setattr(cli, "_http", http)
    return "http://127.0.0.1:6066", asked


def test_status_shows_the_deferred_and_failed_deliveries_with_why(
    api: tuple[str, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, asked = api
    code = cli.main(["status", SESSION, "--status", "deferred", "--status", "failed", "--url", url])
    assert code == 0
    assert asked == [f"/v1/sessions/{SESSION}?status=deferred,failed&offset=0&limit=500"]
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"session {SESSION}: dispatching (failed 1); 2 deferred/failed"
    assert "window-closed" in out[2] and "in UTC; released at 2026-12-07T08:00:00Z" in out[2]
    assert out[3].split()[3:6] == ["failed", "-", "30005"]


def test_status_json_prints_the_deliveries(
    api: tuple[str, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = api
    assert cli.main(["status", SESSION, "--status", "failed", "--json", "--url", url]) == 0
    assert [e["index"] for e in json.loads(capsys.readouterr().out)] == [0, 1]


def test_status_refuses_an_unknown_status_before_asking(
    api: tuple[str, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, asked = api
    assert cli.main(["status", SESSION, "--status", "deferred,lost", "--url", url]) == 2
    assert "not a delivery status: lost" in capsys.readouterr().err and asked == []


def test_status_of_an_unknown_session_fails(
    api: tuple[str, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = api
    other = "1f8fad5b-d9cb-469f-a165-70867728950e"
    assert cli.main(["status", other, "--status", "failed", "--url", url]) == 1
    assert "no such session" in capsys.readouterr().out


# -- switchboard clients list|show ----------------------------------------------------------

CLIENTS = """
clients:
  acme:
    api_keys: ["sha256:c48a01f49fd0f2cc404bc3cbbc80e91457a3d41bb429a695243de4c61794155c"]
    webhook_secret: "whsec_ZGVtby13ZWJob29rLXNlY3JldC0wMDAx"
    previous_webhook_secret: "whsec_b2xkLXdlYmhvb2stc2VjcmV0LTAwMDE="
    default_channels: [sms]
    channels:
      sms: {provider: twilio, account_sid: AC123, auth_token_env: ACME_TOKEN, from: ["+14155550100"]}
      whatsapp:
        provider: http
        url: https://gw.example/v1/messages
        secrets: {key: ACME_GW_KEY}
        headers: {Authorization: "Bearer {{secrets.key}}", X-Api-Key: "literal-key-123"}
        body: {to: "{{to}}", token: "plain-token-in-body"}
      push: {provider: apns, key_env: ACME_P8, key_id: ABC123, team_id: TEAM1, topic: com.acme}
    campaigns:
      park: {checksum_secret_env: ACME_CALL_SECRET, message_text: hi, menu_text: menu,
             targets: [{id: mayor, name: Mayor, phone_number: "+14155550199"}]}
    time_windows:
      sms: {start: "08:00", end: "21:00"}
  beta:
    channels: {email: {provider: smtp, from: b@example.com, host: smtp.example.com, password: hunter2}}
"""

SECRETS = ("c48a01f4", "whsec_", "literal-key-123", "plain-token-in-body", "hunter2", "b2xk")


@pytest.fixture
def clients_file(tmp_path: Path) -> Path:
    path = tmp_path / "clients.yaml"
    path.write_text(CLIENTS)
    return path


def test_clients_list_summarises_without_a_secret(
    clients_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["clients", "list", "--file", str(clients_file)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["CLIENT", "CHANNELS"] and len(lines) == 3
    assert lines[1].split()[:6] == [
        "acme",
        "sms:twilio,whatsapp:http,push:apns",
        "sms",
        "1",
        "set",
        "sms",
    ]
    assert lines[2].split()[:2] == ["beta", "email:smtp"]
    assert not any(secret in out for secret in SECRETS)


def test_clients_show_masks_every_secret_and_shows_the_rest(
    clients_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["clients", "show", "acme", "--file", str(clients_file)]) == 0
    out = capsys.readouterr().out
    assert not any(secret in out for secret in SECRETS), out
    for shown in (
        "auth_token_env: ACME_TOKEN",
        "account_sid: AC123",
        "key_env: ACME_P8",
        "key_id: ABC123",
        "key: ACME_GW_KEY",
        "Bearer {{secrets.key}}",
        "checksum_secret_env: ACME_CALL_SECRET",
        "to: '{{to}}'",
    ):
        assert shown in out, shown
    assert cli.main(["clients", "show", "beta", "--file", str(clients_file)]) == 0
    assert "password: '****'" in capsys.readouterr().out


def test_clients_show_of_an_unknown_client_fails(
    clients_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["clients", "show", "gamma", "--file", str(clients_file)]) == 1
    assert "has no client 'gamma'" in capsys.readouterr().err


def test_masking_rules() -> None:
    assert mask({"api_keys": ["sha256:ab", "sha256:cd"]}) == {"api_keys": [MASK, MASK]}
    assert mask({"Authorization": "Basic dXNlcjpwYXNz"}) == {"Authorization": MASK}
    assert mask({"note": "Bearer abc"}) == {"note": MASK}, "a value that looks like one"
    assert mask({"token_env": "X", "retries": 3, "on": True}) == {
        "token_env": "X",
        "retries": 3,
        "on": True,
    }
    assert masked_client({"clients": {}}, "x") is None and client_rows(None) == []


# -- switchboard send's options ---------------------------------------------------------------


def _send_args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    send_options.add_arguments(p)
    return p.parse_args(list(argv))


def test_send_options_map_onto_the_contracts_fields() -> None:
    args = _send_args(
        "--schedule",
        "2026-12-31T09:00:00Z",
        "--retries",
        "3",
        "--retry-interval",
        "1,5",
        "--webhook-url",
        "https://hooks.example/sb",
        "--priority",
        "high",
        "--transactional",
    )
    assert send_options.options_from(args) == {
        "trigger": "scheduled",
        "scheduledTimestamp": "2026-12-31T09:00:00Z",
        "retries": 3,
        "retryIntervalMinutes": "1,5",
        "webhookUrl": "https://hooks.example/sb",
        "priority": "high",
        "transactional": True,
    }
    assert send_options.options_from(_send_args()) == {}
    assert send_options.options_from(_send_args("--manual")) == {"trigger": "manual"}
    assert send_options.options_from(_send_args("--ttl", "300")) == {"ttlSeconds": 300}
    assert send_options.options_from(_send_args("--expires-at", "2026-12-06T10:00:00Z")) == {
        "expiresAt": "2026-12-06T10:00:00Z"
    }


@pytest.mark.parametrize(
    "argv",
    [
        ["--schedule", "tomorrow"],
        ["--schedule", "2026-12-31T09:00:00"],  # no offset
        ["--schedule", "2026-12-31T09:00:00Z", "--manual"],
        ["--retries", "three"],
        ["--priority", "urgent"],
        ["--ttl", "five"],
        ["--expires-at", "2026-12-06T10:00:00"],  # no offset
        ["--ttl", "60", "--expires-at", "2026-12-06T10:00:00Z"],
    ],
)
def test_send_refuses_malformed_flags(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        _send_args(*argv)
    assert exited.value.code == 2 and capsys.readouterr().err


def test_send_posts_the_options(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    sent: list[Any] = []

    def http(args: Any, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        sent.append((method, path, body))
        return 202, {"session_id": SESSION, "status": "accepted", "recipients": 1}

    monkeypatch.setattr(cli, "_http", http)
    argv = ["send", "--to", "+14155550100", "-m", "hi", "--retries", "2"]
    argv += ["--webhook-url", "https://hooks.example/sb", "--priority", "high"]
    code = cli.main(argv)
    assert code == 0
    assert sent[0][2]["options"] == {
        "retries": 2,
        "webhookUrl": "https://hooks.example/sb",
        "priority": "high",
    }
