"""The web console against a real worker (README: "The console").

Over HTTP: the page and its files, sign-in by header, the session list scoped to the client, the
recipients filter, and the event stream (only the client's own events; the status topic is read
only while a stream is open). In a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``, installed by ``make browser``) driven with selenium signs in, watches a
campaign appear, opens a manual session, presses "Trigger now", and sees the session reach
``completed`` without a reload; the screenshot's path is printed.
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
from http.client import HTTPConnection
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Keys, WorkerFactory
from tests.integration.harness import Worker, http, wait_for

pytestmark = pytest.mark.kafka

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def sms(count: int, start: int = 0) -> list[str]:
    return [f"+1415555{n:04d}" for n in range(start, start + count)]


class EventStream:
    """``GET /console/api/events`` read in a thread: the events it sent, in order."""

    def __init__(self, worker: Worker, key: str, query: str = "") -> None:
        self.events: list[tuple[str, Any]] = []
        self._conn = HTTPConnection("127.0.0.1", worker.port, timeout=60)
        self._conn.request(
            "GET", "/console/api/events" + query, headers={"Authorization": f"Bearer {key}"}
        )
        self.response = self._conn.getresponse()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        name, data = "message", []
        try:
            while True:
                line = self.response.readline()
                if not line:
                    return
                text = line.decode().rstrip("\n")
                if text.startswith("event:"):
                    name = text[6:].strip()
                elif text.startswith("data:"):
                    data.append(text[5:].strip())
                elif not text and data:
                    self.events.append((name, json.loads("\n".join(data))))
                    name, data = "message", []
        except (OSError, ValueError, AttributeError):
            return  # closed by close(), under the reader's feet (http.client drops its file)

    def named(self, name: str) -> list[Any]:
        return [data for n, data in self.events if n == name]

    def sessions(self) -> set[str]:
        return {s["session_id"] for update in self.named("activity") for s in update["sessions"]}

    def close(self) -> None:
        if self._conn.sock is not None:
            self._conn.sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(10)
        self._conn.close()


def test_page_and_files_are_served_with_a_strict_policy(worker: Worker) -> None:
    page = http("GET", f"{worker.url}/console")
    assert page.status == 200 and "console.js" in page.body
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    script = http("GET", f"{worker.url}/console/static/console.js")
    assert script.status == 200 and script.headers["Content-Type"].startswith(
        "application/javascript"
    )
    assert http("GET", f"{worker.url}/console/static/../api.py").status == 404
    assert http("GET", f"{worker.url}/console/static/secret.txt").status == 404


def test_the_list_is_the_clients_own_sessions_newest_first(worker: Worker, keys: Keys) -> None:
    assert http("GET", f"{worker.url}/console/api/sessions").status == 401
    assert http("GET", f"{worker.url}/console/api/sessions", key="nope").status == 401
    assert http("GET", f"{worker.url}/console/api/sessions?limit=0", key=keys.acme).status == 400
    first = worker.send_sms(keys.acme, sms(2))
    second = worker.send_sms(keys.acme, sms(1), trigger="manual")
    theirs = worker.send_sms(keys.other, sms(1))
    worker.wait_completed(first, keys.acme)

    def listed() -> list[dict[str, Any]] | None:
        answer = http("GET", f"{worker.url}/console/api/sessions", key=keys.acme)
        ids = [s["session_id"] for s in answer.body["sessions"]]
        return answer.body["sessions"] if second in ids and first in ids else None

    sessions = wait_for(listed, 30, 0.2, "both sessions listed")
    ids = [s["session_id"] for s in sessions]
    assert theirs not in ids
    assert ids.index(second) < ids.index(first)  # newest first
    entry = sessions[ids.index(first)]
    assert entry["status"] == "completed" and entry["channels"] == ["sms"]
    assert entry["counts"] == {"delivered": 2} and "recipients" not in entry


def test_recipients_filter_by_status(worker: Worker, keys: Keys) -> None:
    session_id = worker.send_sms(keys.acme, sms(3))
    worker.wait_completed(session_id, keys.acme)
    base = f"{worker.url}/v1/sessions/{session_id}"
    delivered = http("GET", f"{base}?status=delivered", key=keys.acme).body
    assert [r["index"] for r in delivered["recipients"]] == [0, 1, 2]
    failed = http("GET", f"{base}?status=failed,expired", key=keys.acme).body
    assert failed["recipients"] == [] and failed["next_offset"] is None
    bad = http("GET", f"{base}?status=delivered,bogus", key=keys.acme)
    assert bad.status == 400 and "bogus" in bad.body["errors"][0]["error"]


def test_the_stream_carries_only_the_clients_events_and_stops_when_closed(
    worker: Worker, keys: Keys
) -> None:
    assert http("GET", f"{worker.url}/console/api/events").status == 401
    stream = EventStream(worker, keys.acme)
    try:
        assert stream.response.getheader("Content-Type") == "text/event-stream"
        hello = wait_for(lambda: stream.named("hello"), 30, 0.1, "hello")
        assert hello[0]["client_id"] == "acme"
        theirs = worker.send_sms(keys.other, sms(2))
        ours = worker.send_sms(keys.acme, sms(2))
        worker.wait_completed(theirs, keys.other)
        wait_for(lambda: ours in stream.sessions(), 30, 0.1, "our session's activity")
        update = next(u for u in stream.named("activity") if u["sessions"])
        assert all(e["client_id"] == "acme" for e in update["events"])
        wait_for(
            lambda: any(
                s["completed"]
                for u in stream.named("activity")
                for s in u["sessions"]
                if s["session_id"] == ours
            ),
            30,
            0.1,
            "completed",
        )
        assert theirs not in stream.sessions()
    finally:
        stream.close()

    def stopped() -> bool:
        records = [r.get("msg") for r in worker.log_records()]
        return records.count("console feed stopped") >= records.count("console feed started") >= 1

    wait_for(stopped, 30, 0.2, "the feed to stop once no stream is open")


def test_the_console_in_a_real_browser(worker: Worker, keys: Keys, tmp_path: Path) -> None:
    """Headless Chromium signs in, sees a campaign appear live, triggers a manual session and
    watches it reach ``completed``, all without a reload."""
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.fail(f"{CHROMIUM} and {CHROMEDRIVER} are needed: `make browser` installs them")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--no-first-run",
        "--window-size=1280,900",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    shot = tmp_path / "console.png"
    try:
        driver.get(f"{worker.url}/console")
        driver.find_element(By.ID, "key").send_keys(keys.acme)
        driver.find_element(By.ID, "signin-button").click()
        text = lambda element_id: driver.find_element(By.ID, element_id).text  # noqa: E731
        wait_for(lambda: text("live") == "live", 30, 0.1, "the live stream")
        driver.execute_script("window.notReloaded = true")

        manual = worker.send_sms(keys.acme, sms(4, 100), trigger="manual")
        campaign = worker.send_sms(keys.acme, sms(5, 200))
        row = f'tr[data-session="{campaign}"]'
        wait_for(
            lambda: driver.find_elements(By.CSS_SELECTOR, f'{row}[data-status="completed"]'),
            60,
            0.2,
            "the campaign's row to show it completed",
        )
        driver.save_screenshot(str(tmp_path / "console-list.png"))
        driver.find_element(By.CSS_SELECTOR, f'tr[data-session="{manual}"]').click()
        wait_for(lambda: text("s-status") == "waiting", 30, 0.1, "the manual session's page")
        driver.find_element(By.ID, "trigger").click()
        wait_for(lambda: text("s-status") == "completed", 60, 0.2, "the session to complete")
        delivered = driver.find_elements(By.CSS_SELECTOR, '#recipients tr[data-status="delivered"]')
        assert len(delivered) == 4
        assert driver.execute_script("return window.notReloaded") is True
        driver.save_screenshot(str(shot))

        # Another manual session, cancelled from its page (a link followed: no reload either).
        held = worker.send_sms(keys.acme, sms(3, 400), trigger="manual")
        driver.execute_script("location.hash = arguments[0]", f"#/session/{held}")
        wait_for(
            lambda: text("s-id") == held and text("s-status") == "waiting", 30, 0.1, "its page"
        )
        driver.find_element(By.ID, "cancel").click()
        cancelled = '#recipients tr[data-status="cancelled"]'
        wait_for(
            lambda: len(driver.find_elements(By.CSS_SELECTOR, cancelled)) == 3,
            60,
            0.2,
            "its recipients to show cancelled",
        )
        assert driver.execute_script("return window.notReloaded") is True
        print(f"console screenshots: {shot} and {tmp_path / 'console-list.png'}")
    finally:
        driver.quit()
    assert shot.stat().st_size > 0


def test_the_list_gathers_every_workers_sessions(
    worker: Worker, keys: Keys, make_worker: WorkerFactory
) -> None:
    """With two workers, each holds part of the sessions table: the one asked scans its own part
    and asks the other for the rest. (Last in the module: the group is left with one worker.)"""
    sessions = [worker.send_sms(keys.acme, sms(1, 300 + n)) for n in range(12)]
    for session_id in sessions:
        worker.wait_completed(session_id, keys.acme)
    second = make_worker(prefix=worker.prefix).start()
    try:
        for each in (worker, second):
            wait_for(
                lambda w=each: http("GET", f"{w.url}/readyz").body.get("settled") is True,
                90,
                0.5,
                "the group to settle",
            )
        own = {"X-Switchboard-Forwarded": "1"}  # a worker's own part only, as another asks it
        parts = [
            {
                s["session_id"]
                for s in http(
                    "GET", f"{each.url}/console/api/sessions?limit=200", key=keys.acme, headers=own
                ).body["sessions"]
            }
            for each in (worker, second)
        ]
        assert all(set(sessions) - part for part in parts)  # neither holds them all...
        assert set(sessions) <= parts[0] | parts[1]  # ...together they do
        for each in (worker, second):
            answer = http("GET", f"{each.url}/console/api/sessions?limit=200", key=keys.acme)
            assert answer.status == 200 and answer.body["partial"] is False
            assert set(sessions) <= {s["session_id"] for s in answer.body["sessions"]}
    finally:
        second.stop()
