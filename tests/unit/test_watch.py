"""``switchboard status SESSION --watch``: the line drawn, the loop's ends, and the command
against a fake Send API on loopback."""

from __future__ import annotations

import http.server
import io
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from cli import main as cli
from cli.watch import LINE_EVERY, render, watch


def _doc(final: int, status: str = "dispatching", **counts: int) -> dict[str, Any]:
    return {
        "session_id": "0f8fad5b-d9cb-469f-a165-70867728950e",
        "status": status,
        "deliveries": 200,
        "final": final,
        "counts": counts,
    }


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_render_shows_bar_percentage_counts_and_rate() -> None:
    line = render(_doc(50, delivered=40, failed=10), 12.5)
    assert line.startswith("0f8fad5b dispatching  [######" + "." * 18 + "]")
    assert " 25.0% 50/200" in line
    assert "delivered 40 failed 10" in line
    assert line.endswith("12.5/s")
    plain = render(_doc(200, "completed", delivered=200), None, bar=False)
    assert "[" not in plain and "100.0% 200/200" in plain and "/s" not in plain


def test_tty_redraws_one_line_until_completed() -> None:
    answers = iter(
        [
            (503, {}),
            (200, _doc(0)),
            (0, None),
            (200, _doc(100, delivered=100)),
            (200, _doc(200, "completed", delivered=200)),
        ]
    )
    out, clock = io.StringIO(), Clock()
    code = watch(lambda: next(answers), out, interval=1.0, tty=True, clock=clock, sleep=clock.sleep)
    assert code == 0
    text = out.getvalue()
    assert text.count("\r\x1b[K") == 3 and text.endswith("\n") and text.count("\n") == 1
    assert "50.0% 100/200" in text and "completed" in text
    assert "50.0/s" in text  # 100 final deliveries in the 2 s after the first answer


def test_plain_output_prints_changes_at_most_every_line_every() -> None:
    progress = [_doc(i * 10, delivered=i * 10) for i in range(20)] + [
        _doc(200, "completed", delivered=200)
    ]
    answers: Iterator[tuple[int, Any]] = iter((200, d) for d in progress)
    out, clock = io.StringIO(), Clock()
    assert (
        watch(lambda: next(answers), out, interval=1.0, tty=False, clock=clock, sleep=clock.sleep)
        == 0
    )
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert LINE_EVERY == 10.0
    assert len(lines) == 3  # polls 1 s apart: the first (t=0), t=10, and the completion (t=20)
    assert "completed" in lines[-1] and "100.0%" in lines[-1]


def test_a_refusal_ends_the_watch_with_1() -> None:
    out = io.StringIO()
    assert (
        watch(lambda: (404, {"errors": ["no such session"]}), out, tty=False, sleep=lambda s: None)
        == 1
    )
    assert "404" in out.getvalue()


def test_ctrl_c_ends_the_watch_with_130() -> None:
    def interrupted() -> tuple[int, Any]:
        raise KeyboardInterrupt

    out = io.StringIO()
    assert watch(interrupted, out, tty=True) == 130


def test_status_watch_against_a_fake_api(capsys: pytest.CaptureFixture[str]) -> None:
    """The command polls GET /v1/sessions/{id}?limit=1 with the API key until completed."""
    polls: list[tuple[str, str | None]] = []
    pages = [
        _doc(0),
        _doc(120, delivered=100, failed=20),
        _doc(200, "completed", delivered=170, failed=30),
    ]

    class Api(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            polls.append((self.path, self.headers.get("Authorization")))
            body = json.dumps(pages[min(len(polls), len(pages)) - 1]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        argv = ["status", "0f8fad5b-d9cb-469f-a165-70867728950e", "--watch", "--interval", "0.1"]
        code = cli.main([*argv, "--url", url, "--api-key", "k1"])
    finally:
        server.shutdown()
        server.server_close()
    assert code == 0
    assert polls[0] == ("/v1/sessions/0f8fad5b-d9cb-469f-a165-70867728950e?limit=1", "Bearer k1")
    assert len(polls) == 3
    out = capsys.readouterr().out
    assert out.splitlines()[-1].startswith("0f8fad5b completed")
    assert "delivered 170 failed 30" in out
