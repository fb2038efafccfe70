"""``X-Twilio-Signature`` checks (streams.twilio.signature): the pure check, and requests
read by a real aiohttp server, signed as Twilio signs them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from urllib.parse import urlencode

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from multidict import MultiDict
from twilio.request_validator import RequestValidator
from yarl import URL

from streams.twilio.signature import public_url, signature_valid, verified_params

TOKEN = "twilio-auth-token-0123456789abcdef"
PUBLIC = "https://sb.example.com"
PARAMS = {"CallSid": "CA" + "1" * 32, "CallStatus": "ringing", "From": "+14155550100"}


def sign(url: str, params: object, token: str = TOKEN) -> str:
    return str(RequestValidator(token).compute_signature(url, params))


# -- the pure check --------------------------------------------------------------------------


def test_public_url_is_the_public_base_and_the_raw_path() -> None:
    assert public_url(PUBLIC, "/twilio/calls/a/start") == f"{PUBLIC}/twilio/calls/a/start"
    assert public_url(f"{PUBLIC}/", "/x?y=1") == f"{PUBLIC}/x?y=1"
    assert public_url(f"{PUBLIC}/sb/", "/x") == f"{PUBLIC}/sb/x", "a proxy's path prefix stays"
    with pytest.raises(ValueError, match="not a request path"):
        public_url(PUBLIC, "x")


def test_a_valid_signature() -> None:
    url = f"{PUBLIC}/twilio/calls/a/status"
    assert signature_valid(url, PARAMS, sign(url, PARAMS), TOKEN)


@pytest.mark.parametrize(
    ("url", "params", "token"),
    [
        (f"{PUBLIC}/twilio/calls/b/status", PARAMS, TOKEN),  # another URL
        (f"{PUBLIC}/twilio/calls/a/status?x=1", PARAMS, TOKEN),  # another query
        ("http://sb.example.com/twilio/calls/a/status", PARAMS, TOKEN),  # another scheme
        (f"{PUBLIC}/twilio/calls/a/status", {**PARAMS, "CallStatus": "completed"}, TOKEN),
        (f"{PUBLIC}/twilio/calls/a/status", {**PARAMS, "Digits": "1"}, TOKEN),  # an added one
        (f"{PUBLIC}/twilio/calls/a/status", PARAMS, "another-accounts-token"),
    ],
)
def test_anything_changed_is_invalid(url: str, params: dict[str, str], token: str) -> None:
    signed = f"{PUBLIC}/twilio/calls/a/status"
    assert not signature_valid(url, params, sign(signed, PARAMS), token)


@pytest.mark.parametrize("signature", [None, "", "not base64 at all"])
def test_a_missing_or_garbled_signature_is_invalid(signature: str | None) -> None:
    assert not signature_valid(f"{PUBLIC}/x", PARAMS, signature, TOKEN)


def test_an_empty_token_never_validates() -> None:
    assert not signature_valid(f"{PUBLIC}/x", {}, sign(f"{PUBLIC}/x", {}, ""), "")


def test_every_value_of_a_repeated_parameter_counts() -> None:
    url = f"{PUBLIC}/x"
    params = MultiDict([("MediaUrl", "https://a.example/1"), ("MediaUrl", "https://a.example/2")])
    signature = sign(url, params)
    assert signature_valid(url, params, signature, TOKEN)
    assert not signature_valid(url, {"MediaUrl": "https://a.example/1"}, signature, TOKEN)


def test_the_url_with_or_without_its_default_port() -> None:
    # Twilio signs some requests with ":443" and some without: both forms are accepted.
    signature = sign(f"{PUBLIC}:443/x", PARAMS)
    assert signature_valid(f"{PUBLIC}/x", PARAMS, signature, TOKEN)
    assert signature_valid(f"{PUBLIC}:443/x", PARAMS, sign(f"{PUBLIC}/x", PARAMS), TOKEN)


def test_a_json_body_is_checked_by_its_hash() -> None:
    body = json.dumps({"event": "x"})
    url = f"{PUBLIC}/hook?bodySHA256={hashlib.sha256(body.encode()).hexdigest()}"
    assert signature_valid(url, body, sign(url, {}), TOKEN)
    assert not signature_valid(url, body.replace("x", "y"), sign(url, {}), TOKEN)


def test_the_signature_settings_header_picks_the_algorithm() -> None:
    url = f"{PUBLIC}/x"
    sha256 = str(RequestValidator(TOKEN).compute_signature(url, PARAMS, "HMAC_SHA256"))
    settings = "key=webhooks_sharedkey_1,algorithm=HMAC_SHA256"
    assert signature_valid(url, PARAMS, sha256, TOKEN, settings_header=settings)
    assert not signature_valid(url, PARAMS, sha256, TOKEN)


# -- requests, through a real server ---------------------------------------------------------


@pytest.fixture
async def client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    async def handler(request: web.Request) -> web.Response:
        params = await verified_params(request, PUBLIC, TOKEN)
        if params is None:
            return web.Response(status=403)
        return web.json_response({"params": [[k, v] for k, v in params.items()]})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def test_a_signed_form_post(client: TestClient[web.Request, web.Application]) -> None:
    path = "/twilio/calls/c-1/menu?attempt=2"
    form = {**PARAMS, "Digits": "1"}
    headers = {"X-Twilio-Signature": sign(PUBLIC + path, form)}
    response = await client.post(path, data=form, headers=headers)
    assert response.status == 200
    assert dict((await response.json())["params"]) == form

    tampered = await client.post(path, data={**form, "Digits": "2"}, headers=headers)
    assert tampered.status == 403
    unsigned = await client.post(path, data=form)
    assert unsigned.status == 403


async def test_the_raw_path_is_what_counts(
    client: TestClient[web.Request, web.Application],
) -> None:
    # request.path decodes "%2F" and "%7E": a check over a URL rebuilt from it would refuse
    # this request, which Twilio signed over the URL exactly as given.
    path = "/twilio/calls/a%2Fb%7Ec/status?x=a+b%2Fc"
    headers = {"X-Twilio-Signature": sign(PUBLIC + path, PARAMS)}
    # encoded=True: sent byte for byte, as Twilio sends it (the test client would normalise it).
    url = URL(str(client.make_url("/")).rstrip("/") + path, encoded=True)
    response = await client.session.post(url, data=PARAMS, headers=headers)
    assert response.status == 200
    assert str(response.request_info.url).endswith(path)


async def test_a_signed_get(client: TestClient[web.Request, web.Application]) -> None:
    path = "/twilio/calls/c-1/status?" + urlencode(PARAMS)
    response = await client.get(path, headers={"X-Twilio-Signature": sign(PUBLIC + path, {})})
    assert response.status == 200
    assert dict((await response.json())["params"]) == PARAMS
    forged = await client.get(
        path + "&CallStatus=busy", headers={"X-Twilio-Signature": sign(PUBLIC + path, {})}
    )
    assert forged.status == 403


async def test_a_signed_json_post(client: TestClient[web.Request, web.Application]) -> None:
    body = json.dumps({"event": "x"}).encode()
    path = f"/hook?bodySHA256={hashlib.sha256(body).hexdigest()}"
    headers = {"X-Twilio-Signature": sign(PUBLIC + path, {}), "Content-Type": "application/json"}
    assert (await client.post(path, data=body, headers=headers)).status == 200
    changed = await client.post(path, data=body.replace(b"x", b"y"), headers=headers)
    assert changed.status == 403
