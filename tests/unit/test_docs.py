"""The documents a user reads must match the code: the README's settings table, the compose
file's variables, and the OpenAPI document's validity."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from openapi_spec_validator import validate

from streams.web.openapi import openapi_document
from switchboard.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def settings_table() -> str:
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for env, default, doc in Settings.reference():
        rows.append(f"| `{env}` | {f'`{default}`' if default else ''} | {doc} |")
    return "\n".join(rows)


def test_readme_settings_table_is_the_settings_reference() -> None:
    readme = (ROOT / "README.md").read_text()
    table = re.search(r"<!-- settings:start -->\n(.*?)\n<!-- settings:end -->", readme, re.S)
    assert table, "README.md lost its settings table markers"
    assert table.group(1) == settings_table(), (
        "regenerate it: .venv/bin/switchboard config --readme README.md"
    )


def test_compose_file_sets_only_real_settings() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = compose["services"]["switchboard"]["environment"]
    known = {name for name, _, _ in Settings.reference()}
    assert set(env) <= known, set(env) - known
    Settings.from_env({k: str(v) for k, v in env.items()})  # every value is accepted


def test_openapi_document_is_valid_openapi_3_1() -> None:
    document = openapi_document()
    validate(document)
    assert document["paths"]["/v1/messages"]["post"]["responses"]["202"]


def test_openapi_describes_the_webhook_with_every_status_event_field() -> None:
    import schemas
    from switchboard.status import StatusEvent
    from switchboard.webhooks import payload

    document = openapi_document()
    hook = document["webhooks"]["statusEvent"]["post"]
    assert {p["name"] for p in hook["parameters"]} == {
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
    }
    described = document["components"]["schemas"]["StatusEvent"]["properties"]
    avro_fields = {f["name"] for f in schemas.parsed("status_event")["fields"]}
    assert set(described) == avro_fields
    body = payload(StatusEvent(session_id="s", client_id="c", status="delivered", recipient="r"))
    assert set(body) == set(document["components"]["schemas"]["WebhookPayload"]["properties"])
    assert set(body["data"]) == set(described)


def test_settings_reject_bad_values_naming_each_variable() -> None:
    import pytest

    from switchboard.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        Settings.from_env(
            {
                "SWITCHBOARD_PARTITIONS": "many",
                "SWITCHBOARD_SANDBOX": "perhaps",
                "SWITCHBOARD_LOG_FORMAT": "xml",
            }
        )
    message = str(info.value)
    assert (
        "SWITCHBOARD_PARTITIONS" in message
        and "SWITCHBOARD_SANDBOX" in message
        and "SWITCHBOARD_LOG_FORMAT" in message
    )
    assert (
        Settings.from_env({"SWITCHBOARD_SANDBOX": "yes", "SWITCHBOARD_PARTITIONS": "4"}).partitions
        == 4
    )


def test_openapi_documents_every_status_the_views_answer() -> None:
    """What schemathesis found undocumented (issue 13): each operation lists its statuses."""
    paths = openapi_document()["paths"]

    def statuses(path: str, method: str) -> set[str]:
        return set(paths[path][method]["responses"])

    for path, method in (
        ("/v1/messages", "post"),
        ("/v1/sessions/{session_id}", "get"),
        ("/v1/sessions/{session_id}/trigger", "post"),
        ("/v1/sessions/{session_id}/cancel", "post"),
        ("/api/call", "post"),
        ("/v1/calls/{call_id}", "get"),
    ):
        assert "401" in statuses(path, method), (path, "authenticated: 401 documented")
    for path in ("/v1/messages", "/api/call"):  # a JSON body: every way it can be refused
        assert {"400", "413", "415", "422"} <= statuses(path, "post"), path
    assert {"400", "404", "503"} <= statuses("/v1/sessions/{session_id}", "get")
    assert {"400", "403", "404", "413", "415", "503"} <= statuses(
        "/twilio/calls/{call_id}/{step}", "post"
    )


def test_openapi_strings_are_as_strict_as_validation_about_empty_values() -> None:
    document = openapi_document()
    call = document["paths"]["/api/call"]["post"]["requestBody"]["content"]["application/json"]
    properties = call["schema"]["properties"]
    assert (
        properties["campaign_id"]["minLength"]
        == properties["member_phone_number"]["minLength"]
        == 1
    )
    instruction = document["components"]["schemas"]["Instruction"]["properties"]
    key = instruction["idempotency_key"]["anyOf"][0]
    assert key["pattern"] == r"\S" and key["maxLength"] == 255, "a blank key is refused"
    assert instruction["client_id"]["anyOf"][0]["minLength"] == 1
    [header] = document["paths"]["/v1/messages"]["post"]["parameters"]
    assert header["schema"]["minLength"] == 1 and header["schema"]["pattern"] == r"\S"


def test_openapi_documents_every_public_route() -> None:
    """Issue 14, part 5: Twilio's message endpoints were missing. Every route a view registers is
    an operation of the document, except the workers' internal ones."""
    views = (ROOT / "streams" / "web", ROOT / "streams" / "twilio")
    source = "\n".join(p.read_text() for folder in views for p in folder.glob("*.py"))
    routes = set(re.findall(r'@app\.page\("([^"]+)"', source))
    routes |= set(re.findall(r'router\.add_get\("([^"]+)"', source))  # the console's
    internal = {r for r in routes if r.startswith("/internal/")}
    # The console's page and files are for a browser; its JSON and SSE endpoints are API.
    browser = {r for r in routes if r.startswith("/console") and not r.startswith("/console/api/")}
    assert {"/twilio/messages/status", "/twilio/messages/inbound", "/console"} <= routes
    assert routes - internal - browser == set(openapi_document()["paths"])


def test_openapi_call_schema_is_the_shape_of_get_v1_calls() -> None:
    from datetime import UTC, datetime, timedelta

    import jsonschema

    from switchboard.calltool import calls

    at = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
    call = calls.new_call(
        "7b7d0c56-8f8e-4c55-9d54-1f2f8b0a4e11",
        "park",
        "+14155550123",
        "+14155550199",
        at,
        target_id="mayor",
    )
    fresh = calls.combined_state(call)
    call = calls.record_call_sid(call, "CA" + "0" * 32)
    call = calls.record_member_status(call, "initiated", at, provider_sequence=0)
    call = calls.start(call, at + timedelta(seconds=5)).call
    call = calls.connect(call, at + timedelta(seconds=20)).call
    call = calls.record_target_status(
        call, "completed", at + timedelta(minutes=2), dial_call_sid="CA1"
    )
    call = calls.record_member_status(
        call, "completed", at + timedelta(minutes=3), provider_sequence=3
    )
    failed = calls.creation_failed(calls.new_call("c", "park", "+1", "+1", at), at, "21211").call
    document = openapi_document()
    schema = {**document["components"]["schemas"]["Call"], "components": document["components"]}
    for state in (fresh, calls.combined_state(call), calls.combined_state(failed)):
        jsonschema.validate(state, schema)
        assert set(state) == set(schema["properties"]) == set(schema["required"])


def test_readme_documents_every_campaign_option_and_the_twilio_options() -> None:
    """Issue 14, part 5: options that worked but were documented nowhere."""
    from switchboard.calltool.campaigns import _CAMPAIGN_KEYS
    from switchboard.validation import MAX_RETRIES

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## The call tool") : readme.index("## Scaling out")]
    table = re.findall(r"^\| `([a-z_]+)`(?: or `([a-z_]+)`)? \|", section, re.M)
    assert {name for row in table for name in row if name} == set(_CAMPAIGN_KEYS)
    for needle in (
        "`api_base`",
        "SendAsMms",
        "lookups.twilio.com/v2/PhoneNumbers",
        "/twilio/messages/inbound",
        "IncomingPhoneNumbers",
        "`To` number",
        f"from 0 (the default) to {MAX_RETRIES}",
        "at most 10,080 (7 days)",
    ):
        assert needle in readme, needle
