"""switchboard.fanout: one chunk of an audience becomes one job (or rejection) per delivery."""

from __future__ import annotations

from typing import Any

import pytest

from switchboard.fanout import CHUNK_SIZE, chunk_count, plan_chunk, template_variables
from switchboard.records import DispatchJob, Report, SessionState

NOW = 1_750_000_000.0


def session(channels: list[str], transport: dict[str, Any], recipients: int = 10) -> SessionState:
    return SessionState(
        session_id="s1",
        client_id="acme",
        channels=channels,
        recipients=recipients,
        deliveries=recipients * len(channels),
        chunks=chunk_count(recipients),
        trigger="immediate",
        status="dispatching",
        created_at=NOW,
        source="api",
        transport=transport,
        options={},
    )


def recipient(**addresses: str) -> dict[str, Any]:
    return {"addresses": addresses}


def test_one_job_per_recipient_and_channel_in_order() -> None:
    s = session(["sms", "email"], {"subject": "S", "message": "M"})
    people = [
        recipient(phone="+14155550100", email="a@b.co"),
        recipient(phone="+14155550101", email="c@d.co"),
    ]
    out = list(plan_chunk(s, 0, people, now=NOW))
    assert all(isinstance(o, DispatchJob) for o in out)
    assert [(o.index, o.channel, o.address) for o in out] == [
        (0, "sms", "+14155550100"),
        (0, "email", "a@b.co"),
        (1, "sms", "+14155550101"),
        (1, "email", "c@d.co"),
    ]
    job = out[0]
    assert isinstance(job, DispatchJob)
    assert (job.session_id, job.client_id, job.attempt) == ("s1", "acme", 1)
    assert job.key == "s1/0/sms"


def test_global_index_is_chunk_times_size_plus_offset() -> None:
    s = session(["sms"], {"message": "M"}, recipients=2000)
    people = [recipient(phone=f"+1415555{i:04d}") for i in range(3)]
    assert [j.index for j in plan_chunk(s, 2, people, now=NOW)] == [1000, 1001, 1002]
    assert [j.index for j in plan_chunk(s, 3, people, now=NOW, size=7)] == [21, 22, 23]
    assert [j.key for j in plan_chunk(s, 1, people[:1], now=NOW)] == [f"s1/{CHUNK_SIZE}/sms"]


def test_message_subject_and_html_rendered_per_recipient() -> None:
    transport = {
        "subject": "For {{ name }}",
        "message": "Hi {{ name }}, order {{ order }} ({{ shop }})",
        "fileUrl": "https://example.com/r.pdf",
        "extras": {
            "template_vars": {"shop": "Acme", "order": "0", "name": "Customer"},
            "html": "<p>Hi {{ name }} of {{ shop }}</p>",
            "reply_to": "help@acme.example",
        },
    }
    s = session(["email"], transport)
    people = [
        {"addresses": {"email": "a@b.co"}, "name": "<Ana>", "vars": {"order": "1", "name": "X"}},
        {"addresses": {"email": "c@d.co"}, "locale": "ne-NP"},
    ]
    a, b = plan_chunk(s, 0, people, now=NOW)
    assert isinstance(a, DispatchJob) and isinstance(b, DispatchJob)
    # profile vars win over template_vars, and the profile's name over both
    assert a.message == "Hi <Ana>, order 1 (Acme)"
    assert a.subject == "For <Ana>"
    assert a.extras["html"] == "<p>Hi &lt;Ana&gt; of Acme</p>"  # escaped for HTML only
    assert b.message == "Hi Customer, order 0 (Acme)"
    assert b.extras["html"] == "<p>Hi Customer of Acme</p>"
    # extras go along without template_vars; fileUrl and locale too
    assert a.extras == {"html": "<p>Hi &lt;Ana&gt; of Acme</p>", "reply_to": "help@acme.example"}
    assert "template_vars" not in b.extras
    assert a.file_url == "https://example.com/r.pdf"
    assert (a.locale, b.locale) == (None, "ne-NP")


def test_transport_without_subject_or_message() -> None:
    s = session(["voice"], {"fileUrl": "https://example.com/a.mp3"})
    (job,) = plan_chunk(s, 0, [recipient(phone="+14155550100")], now=NOW)
    assert isinstance(job, DispatchJob)
    assert (job.message, job.subject, job.extras) == (None, None, {})


def test_missing_address_is_a_rejected_report() -> None:
    s = session(["sms", "email"], {"subject": "S", "message": "M"})
    out = list(plan_chunk(s, 0, [recipient(email="a@b.co"), {"name": "nobody"}], now=NOW))
    assert [type(o).__name__ for o in out] == ["Report", "DispatchJob", "Report", "Report"]
    report = out[0]
    assert isinstance(report, Report)
    assert report.status == "rejected"
    assert report.error_code == "no-address"
    assert report.error == "the recipient has no phone for sms"
    assert (report.session_id, report.client_id, report.channel, report.index) == (
        "s1",
        "acme",
        "sms",
        0,
    )
    assert report.address == ""
    assert report.occurred_at == NOW
    assert report.key == "s1/0/sms"
    last = out[3]
    assert isinstance(last, Report)
    assert (last.index, last.channel, last.error) == (
        1,
        "email",
        "the recipient has no email for email",
    )


def test_missing_template_variable_is_a_rejected_report() -> None:
    s = session(["sms"], {"message": "Hi {{ name }}, code {{ code }}"})
    people = [
        {"addresses": {"phone": "+14155550100"}, "name": "Ana", "vars": {"code": "1"}},
        {"addresses": {"phone": "+14155550101"}, "name": "Bo"},
    ]
    ok, bad = plan_chunk(s, 0, people, now=NOW)
    assert isinstance(ok, DispatchJob) and ok.message == "Hi Ana, code 1"
    assert isinstance(bad, Report)
    assert (bad.status, bad.error_code, bad.index, bad.address) == (
        "rejected",
        "template",
        1,
        "+14155550101",
    )
    assert bad.error == "template variable 'code' has no value for this recipient"


def test_missing_variable_in_the_subject_or_html_is_rejected_too() -> None:
    s = session(["email"], {"subject": "{{ x }}", "message": "m"})
    (r,) = plan_chunk(s, 0, [recipient(email="a@b.co")], now=NOW)
    assert isinstance(r, Report) and r.error_code == "template"
    s = session(["email"], {"subject": "s", "message": "m", "extras": {"html": "{{ y }}"}})
    (r,) = plan_chunk(s, 0, [recipient(email="a@b.co")], now=NOW)
    assert isinstance(r, Report) and r.error_code == "template"


def test_malformed_template_is_a_rejected_report() -> None:
    s = session(["sms"], {"message": "Hi {{ user.name }}"})
    (r,) = plan_chunk(s, 0, [recipient(phone="+14155550100")], now=NOW)
    assert isinstance(r, Report)
    assert (r.status, r.error_code) == ("rejected", "template")


def test_defaults_fill_missing_variables() -> None:
    s = session(["sms"], {"message": 'Hi {{ name | default("there") }}'})
    (job,) = plan_chunk(s, 0, [recipient(phone="+14155550100")], now=NOW)
    assert isinstance(job, DispatchJob) and job.message == "Hi there"


def test_empty_chunk_plans_nothing() -> None:
    assert list(plan_chunk(session(["sms"], {"message": "m"}), 0, [], now=NOW)) == []


def test_template_variables_precedence() -> None:
    transport = {"extras": {"template_vars": {"a": 1, "b": 2, "name": "T"}}}
    assert template_variables(transport, {"vars": {"b": "3"}, "name": "N"}) == {
        "a": 1,
        "b": "3",
        "name": "N",
    }
    assert template_variables({}, {}) == {}
    assert template_variables({"extras": None}, {"vars": None, "name": None}) == {}


@pytest.mark.parametrize(
    ("recipients", "size", "expected"),
    [(0, 500, 1), (1, 500, 1), (500, 500, 1), (501, 500, 2), (1_000_000, 500, 2000), (10, 3, 4)],
)
def test_chunk_count(recipients: int, size: int, expected: int) -> None:
    assert chunk_count(recipients, size) == expected


def test_chunk_size_default() -> None:
    assert chunk_count(CHUNK_SIZE + 1) == 2


def test_a_high_priority_sessions_jobs_and_rejections_travel_in_its_lane() -> None:
    state = session(["sms"], {"type": "sms", "message": "Code {{code}}"}, recipients=2)
    high = SessionState(
        **{
            **{f: getattr(state, f) for f in state.__dataclass_fields__},
            "options": {"priority": "high"},
        }
    )
    items = list(
        plan_chunk(
            high,
            0,
            [
                {"addresses": {"phone": "+14155550100"}, "vars": {"code": "1"}},
                {"addresses": {"phone": "+14155550101"}},  # no code: rejected
            ],
            now=NOW,
        )
    )
    assert [type(i).__name__ for i in items] == ["DispatchJob", "Report"]
    assert all(item.priority == "high" for item in items)
    assert all(
        item.priority == "normal"
        for item in plan_chunk(
            state, 0, [{"addresses": {"phone": "+14155550100"}, "vars": {"code": "1"}}], now=NOW
        )
    )
