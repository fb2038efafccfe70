"""switchboard.gateway: the ``http`` provider's options, templates and response mapping (pure)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import yaml

from switchboard.errors import ConfigError
from switchboard.gateway import GatewayConfig, Template, classify
from switchboard.gateway.config import AddressRule
from switchboard.gateway.response import Outcome, path_get

ENV = {"SPARROW_TOKEN": "tok-123456", "GW_KEY": "key-abcdef"}


def parse(channel: str = "sms", **options: Any) -> GatewayConfig:
    options.setdefault("url", "https://gw.example/v1/send")
    options.setdefault("body", {"to": "{{to}}", "text": "{{body}}"})
    return GatewayConfig.parse(channel, options, ENV)


def values(**over: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "to": "+14155550100",
        "body": "Hello",
        "subject": None,
        "from": None,
        "attempt": 1,
        "reference": "s1/0/sms",
        "session_id": "s1",
        "channel": "sms",
        "locale": None,
        "file_url": None,
        "extras": {},
    }
    out.update(over)
    return out


def problems_of(**options: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(**options)
    return str(caught.value)


# -- templates ----------------------------------------------------------------------------------


def compile_(source: Any, secrets: tuple[str, ...] = ()) -> Template:
    problems: list[str] = []
    template = Template.compile(source, "body", secrets, problems)
    assert problems == []
    return template


def test_a_whole_value_placeholder_keeps_its_type() -> None:
    template = compile_({"n": "{{attempt}}", "to": "{{to}}", "meta": "{{extras.meta}}"})
    rendered = template.render(values(to=["a", "b"], extras={"meta": {"k": [1, 2]}}))
    assert rendered == {"n": 1, "to": ["a", "b"], "meta": {"k": [1, 2]}}


def test_a_placeholder_inside_text_is_text() -> None:
    template = compile_({"msg": "#{{attempt}}: {{body}} to {{to}}", "flag": "x{{extras.on}}"})
    rendered = template.render(values(to=["a", "b"], extras={"on": True}))
    assert rendered == {"msg": "#1: Hello to a,b", "flag": "xtrue"}


def test_a_key_whose_value_is_empty_is_dropped_but_a_literal_empty_string_stays() -> None:
    template = compile_(
        {
            "subject": "{{subject}}",
            "from": "{{from}}",
            "x": "{{extras.none}}",
            "lit": "",
            "list": ["{{from}}", "keep"],
            "nested": {"s": "{{subject}}"},
            "zero": "{{extras.zero}}",
        }
    )
    rendered = template.render(values(**{"from": ""}, extras={"zero": 0}))
    assert rendered == {"lit": "", "list": ["keep"], "zero": 0}


def test_bulk_repeats_a_one_item_list_that_uses_to_once_per_address() -> None:
    template = compile_(
        {"messages": [{"destinations": [{"to": "{{to}}"}], "text": "{{body}}"}], "all": ["{{to}}"]}
    )
    rendered = template.render(values(to=["a", "b"]))
    assert rendered == {
        "messages": [{"destinations": [{"to": "a"}, {"to": "b"}], "text": "Hello"}],
        "all": ["a", "b"],
    }
    single = template.render(values(to="a"))
    assert single["messages"][0]["destinations"] == [{"to": "a"}] and single["all"] == ["a"]


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ({"t": "{{bdy}}"}, "body.t: unknown placeholder {{bdy}}"),
        ({"t": "{{secrets.nope}}"}, "body.t: {{secrets.nope}} names a secret not declared"),
        ({"t": ["ok", "{{to}"]}, "body.t[1]: an unclosed or malformed {{placeholder}}"),
        ({"t": "{{ body }} }}"}, "body.t: an unclosed or malformed"),
        ({"t": "{{extras.}}"}, "body.t: unknown placeholder {{extras.}}"),
    ],
)
def test_template_problems_name_their_field(source: Any, problem: str) -> None:
    problems: list[str] = []
    Template.compile(source, "body", (), problems)
    assert any(p.startswith(problem) for p in problems), problems


# -- options ------------------------------------------------------------------------------------


def test_a_sparrow_like_form_gateway_in_bulk_mode() -> None:
    config = parse(
        url="http://api.sparrowsms.example/v2/sms/",
        format="form",
        secrets={"token": "SPARROW_TOKEN"},
        body={"token": "{{secrets.token}}", "from": "{{from}}", "to": "{{to}}", "text": "{{body}}"},
        address={"strip": "+977", "digits_only": True},
        bulk={"max_addresses": 100, "join": ","},
        **{"from": "InfoAlert"},
    )
    assert config.bulk is not None and config.bulk.join == ","
    request = config.request(values(to=["9812345678", "9841234567"], **{"from": "InfoAlert"}))
    assert request.method == "POST" and request.url == "http://api.sparrowsms.example/v2/sms/"
    assert request.headers == {"Content-Type": "application/x-www-form-urlencoded"}
    assert request.content is not None
    assert parse_qsl(request.content.decode()) == [
        ("token", "tok-123456"),
        ("from", "InfoAlert"),
        ("to", "9812345678,9841234567"),
        ("text", "Hello"),
    ]
    assert "tok-123456" not in repr(config), "secrets stay out of the repr"


def test_a_json_request_with_a_secret_header() -> None:
    config = parse(
        secrets={"key": "GW_KEY"},
        headers={
            "Authorization": "Bearer {{secrets.key}}",
            "X-Ref": "{{reference}}",
            "X-Empty": "{{subject}}",
        },
        body={
            "to": "{{to}}",
            "text": "{{body}}",
            "attempt": "{{attempt}}",
            "subject": "{{subject}}",
        },
    )
    request = config.request(values())
    assert request.headers == {
        "Authorization": "Bearer key-abcdef",
        "X-Ref": "s1/0/sms",
        "Content-Type": "application/json",
    }
    assert request.content is not None
    assert json.loads(request.content) == {"to": "+14155550100", "text": "Hello", "attempt": 1}


def test_a_get_request_carries_its_fields_in_the_query_and_url_values_are_encoded() -> None:
    config = parse(
        url="https://gw.example/send/{{to}}?v=2",
        method="get",
        secrets={"token": "SPARROW_TOKEN"},
        body={"token": "{{secrets.token}}", "text": "{{body}}", "to": ["{{to}}"]},
    )
    request = config.request(values(body="a&b=c"))
    assert request.content is None and request.method == "GET"
    url = urlsplit(request.url)
    assert url.path == "/send/%2B14155550100"
    assert parse_qsl(url.query) == [
        ("v", "2"),
        ("token", "tok-123456"),
        ("text", "a&b=c"),
        ("to", "+14155550100"),
    ]


def test_form_lists_repeat_their_key_without_join() -> None:
    config = parse(format="form", bulk={"max_addresses": 10})
    request = config.request(values(to=["a", "b"]))
    assert request.content == b"to=a&to=b&text=Hello"


def test_every_problem_is_named_at_once() -> None:
    text = problems_of(
        url="ftp://gw.example",
        method="DELETE",
        timeout=0,
        max_in_flight=0,
        colour="red",
        secrets={"token": "UNSET_VARIABLE"},
        headers={"Bad Header": "x"},
        body={"text": "{{body}}"},
        address={"prefix": 1},
        response={
            "success": ["2xx", "700"],
            "message_id": "data..id",
            "success_when": {"path": "ok"},
        },
        bulk={"max_addresses": 1, "match": "to"},
    )
    for expected in (
        "colour: unknown option",
        "secrets.token: names UNSET_VARIABLE, which is not set",
        "method: must be one of POST, PUT, PATCH, GET",
        "url: must be an http(s) URL with a host",
        "headers.Bad Header: not a valid header name",
        "body: no {{to}}",
        "response.success[1]: a status (429), a class (5xx) or a range (500-599)",
        "response.message_id: a path into the JSON answer",
        "response.success_when: {path:",
        "bulk.max_addresses: required",
        "bulk.match: reads an item of bulk.results, which is not set",
        "address.prefix: must be a string",
        "timeout: must be a positive number",
        "max_in_flight: must be a whole number",
    ):
        assert expected in text, (expected, text)
    assert text.startswith("invalid http options for sms:")


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"method": "GET", "format": "json"},                          "format: a GET request carries its fields in the query"),
        ({"format": "form", "body": {"to": "{{to}}", "n": {"a": 1}}},  "body.n: with format form, a field is a value or a list of values"),
        ({"url": "https://{{to}}.gw.example/"},                        "url: the host cannot hold a placeholder"),
        ({"url": None},                                                "url: required"),
        ({"url": "https://user:pw@gw.example/"},                       "url: credentials go in headers, from secrets"),
        ({"response": {"retryable": ["599-500"]}},                     "response.retryable[0]: the range ends before it starts"),
        ({"response": {"sucess": ["2xx"]}},                            "response.sucess: unknown option"),
        ({"bulk": {"max_addresses": 5, "linger": 9}},                  "bulk.linger: seconds from 0 to 5"),
    ],
)  # fmt: skip
def test_option_problems(options: dict[str, Any], problem: str) -> None:
    assert problem in problems_of(**options)


def test_only_text_channels() -> None:
    with pytest.raises(ConfigError, match="http cannot send email; it sends sms, whatsapp"):
        parse("email")


def test_address_rule_strips_then_keeps_digits_then_prefixes() -> None:
    assert AddressRule().apply("+9779812345678") == "+9779812345678"
    assert AddressRule(strip="+977", digits_only=True).apply("+9779812345678") == "9812345678"
    assert AddressRule(prefix="whatsapp:").apply("+14155550100") == "whatsapp:+14155550100"
    assert AddressRule(prefix="00", digits_only=True).apply("+1 (415) 555-0100") == "0014155550100"


def test_bulk_groups_by_every_used_field_but_to() -> None:
    config = parse(
        body={"to": "{{to}}", "text": "{{body}}", "from": "{{from}}"}, bulk={"max_addresses": 5}
    )
    same = config.group_key(values(to="a")) == config.group_key(values(to="b"))
    other_text = config.group_key(values(body="Bye")) != config.group_key(values())
    unused = config.group_key(values(reference="s1/9/sms")) == config.group_key(values())
    assert same and other_text and unused


# -- responses ----------------------------------------------------------------------------------


def rules(**options: Any) -> Any:
    return parse(**options).rules


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (200, "ok"),
        (202, "ok"),
        (301, "permanent"),
        (400, "permanent"),
        (401, "permanent"),
        (404, "permanent"),
        (429, "retryable"),
        (500, "retryable"),
        (503, "retryable"),
    ],
)
def test_default_status_mapping(status: int, kind: str) -> None:
    [outcome] = classify(rules(), status, None, ["a"])
    assert outcome.kind == kind
    if kind != "ok":
        assert (
            outcome.code == f"http-{status}"
            and outcome.error == f"the gateway answered HTTP {status}"
        )


def test_configured_statuses_and_json_conditions() -> None:
    r = rules(
        response={
            "success": [200],
            "retryable": ["502-504"],
            "message_id": "data.ids.0",
            "success_when": {"path": "response_code", "equals": [200, "queued"]},
            "retryable_when": {"path": "response_code", "equals": 1011},
            "error": "response",
            "error_code": "response_code",
        }
    )
    assert classify(r, 200, {"response_code": "200", "data": {"ids": ["m1"]}}, ["a"]) == [
        Outcome("ok", "m1")
    ]
    [refused] = classify(r, 200, {"response_code": 1002, "response": "Invalid Receiver"}, ["a"])
    assert refused.kind == "permanent" and refused.code == "1002"
    assert (
        refused.error == "the gateway answered HTTP 200 with response_code: 1002: Invalid Receiver"
    )
    [busy] = classify(r, 200, {"response_code": 1011}, ["a"], retry_after=7.0)
    assert busy.kind == "retryable" and busy.retry_after == 7.0
    assert classify(r, 500, None, ["a"])[0].kind == "permanent", "only 502-504 are retryable here"
    assert classify(r, 201, {"response_code": 200}, ["a"])[0].kind == "permanent"
    assert classify(r, 503, None, ["a"], retry_after=3)[0].retry_after == 3
    assert classify(r, 400, None, ["a"], retry_after=3)[0].retry_after is None


def test_a_bulk_answer_without_results_is_shared() -> None:
    outcomes = classify(rules(response={"message_id": "batch"}), 200, {"batch": 42}, ["a", "b"])
    assert outcomes == [Outcome("ok", "42"), Outcome("ok", "42")]
    assert [o.kind for o in classify(rules(), 503, None, ["a", "b"])] == ["retryable"] * 2


def test_bulk_results_map_to_each_address() -> None:
    r = rules(
        bulk={
            "max_addresses": 10,
            "results": "data.messages",
            "match": "to",
            "message_id": "id",
            "success_when": {"path": "status", "equals": "queued"},
        },
        response={"error": "reason"},
    )
    answer = {
        "data": {
            "messages": [
                {"to": "9779841234567", "id": "m2", "status": "queued"},
                {"to": "+9779812345678", "id": "m1", "status": "rejected", "reason": "DND number"},
            ]
        }
    }
    one, two, three = classify(r, 200, answer, ["+9779812345678", "+9779841234567", "+1555"])
    assert one == Outcome("permanent", code="gateway-refused", error="DND number")
    assert two == Outcome("ok", "m2")
    assert three == Outcome("ok"), "accepted with the request, not listed: no id"


def test_bulk_results_by_position() -> None:
    r = rules(bulk={"max_addresses": 10, "results": "ids"})
    assert classify(r, 200, {"ids": [{"x": 1}]}, ["a", "b"]) == [Outcome("ok"), Outcome("ok")]
    r = rules(bulk={"max_addresses": 10, "results": "ids", "message_id": "id"})
    assert classify(r, 200, {"ids": [{"id": "p"}, {"id": "q"}]}, ["a", "b"]) == [
        Outcome("ok", "p"),
        Outcome("ok", "q"),
    ]


def test_paths() -> None:
    doc = {"a": {"b": [{"c": "x"}, 5]}, "n": None}
    assert path_get(doc, "a.b.0.c") == "x" and path_get(doc, "a.b.1") == 5
    assert path_get(doc, "a.b.2") is None and path_get(doc, "a.x.y") is None
    assert path_get("text", "a") is None and path_get(doc, None) is None


def test_an_error_text_is_clipped() -> None:
    [outcome] = classify(rules(response={"error": "e"}), 400, {"e": "x" * 500}, ["a"])
    assert outcome.error is not None and len(outcome.error) == 200


def test_a_secret_with_a_line_break_is_refused_without_its_value() -> None:
    with pytest.raises(ConfigError) as caught:
        GatewayConfig.parse(
            "sms",
            {"url": "https://gw.example/", "secrets": {"k": "K"}, "body": {"to": "{{to}}"}},
            {"K": "abc\r\nX-Evil: 1"},
        )
    assert "secrets.k: the value of K holds a line break" in str(caught.value)
    assert "X-Evil" not in str(caught.value)


def test_a_configured_content_type_is_kept() -> None:
    config = parse(headers={"content-type": "application/vnd.gw+json"})
    assert config.request(values()).headers == {"content-type": "application/vnd.gw+json"}


def test_the_readme_examples_parse() -> None:
    """The two clients.yaml examples of the README's section on ``provider: http`` are valid."""
    readme = Path(__file__).parents[2].joinpath("README.md").read_text()
    section = readme.split("### Any HTTP SMS gateway", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.S)
    assert len(blocks) == 2
    env = {"SPARROW_TOKEN": "t0ken", "ACME_GW_KEY": "k3y"}
    for block in blocks:
        [(channel, options)] = yaml.safe_load(block).items()
        assert options.pop("provider") == "http"
        GatewayConfig.parse(channel, options, env)
