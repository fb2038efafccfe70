"""Manual call targets (issue 14, part 5): the checksum recipe of the README, the CLI that prints
a number's checksum, and the refusal of a checksum secret that would refuse every manual target
(``switchboard clients apply`` and the worker's start)."""

from __future__ import annotations

import hashlib
import hmac
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from cli.main import main
from streams.worker import apply_clients_file
from switchboard.calltool.calls import MIN_SECRET_BYTES, verify_target_checksum
from switchboard.calltool.campaigns import (
    MANUAL_TARGETS_MISCONFIGURED,
    checksum_secret,
    checksum_secret_problems,
    parse_campaigns,
    resolve_call_request,
    secret_from,
)
from switchboard.errors import ConfigError, ValidationFailed
from switchboard.settings import Settings
from tests.unit.calltool.test_campaigns import SPOKEN

ROOT = Path(__file__).resolve().parents[3]
SECRET = "a-campaign-secret-of-32-bytes-ok"
NUMBER = "+14155550198"
#: A spoken campaign whose manual targets are signed with the secret in PARK_SECRET.
CAMPAIGN: dict[str, Any] = {**SPOKEN, "checksum_secret_env": "PARK_SECRET"}


def recipe(number: str, secret: str) -> str:
    """The README's recipe, written from its words, not from the product's code."""
    message = b"switchboard/call-target/v1" + b"\x00" + number.encode("ascii")
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()[:32]


def clients_file(tmp_path: Path, secret_env: str = "PARK_SECRET") -> Path:
    path = tmp_path / "clients.yaml"
    campaign = {**CAMPAIGN, "checksum_secret_env": secret_env}
    path.write_text(yaml.safe_dump({"clients": {"acme": {"campaigns": {"park": campaign}}}}))
    return path


def test_the_recipe_is_what_the_product_accepts() -> None:
    campaigns = parse_campaigns({"park": CAMPAIGN})
    body = {
        "campaign_id": "park",
        "member_phone_number": "+14155552671",
        "target_phone_number": "+1 (415) 555-0198",
        "target_checksum": recipe(NUMBER, SECRET),
    }
    call = resolve_call_request(body, campaigns, secret_from({"PARK_SECRET": SECRET}))
    assert call.target.phone_number == NUMBER and call.target_id is None
    assert verify_target_checksum(NUMBER, recipe(NUMBER, SECRET), SECRET.encode())


def readme_recipe() -> tuple[str, str]:
    readme = (ROOT / "README.md").read_text()
    block = re.search(
        r"<!-- checksum-recipe:start -->\n(.*?)<!-- checksum-recipe:end -->", readme, re.S
    )
    assert block, "README.md lost its checksum-recipe markers"
    shell = re.search(r"```sh\n(.*?)```", block.group(1), re.S)
    python = re.search(r"```python\n(.*?)```", block.group(1), re.S)
    assert shell and python
    return shell.group(1), python.group(1)


def test_the_readme_s_python_recipe_runs_and_is_accepted() -> None:
    _, python = readme_recipe()
    env = {"ACME_CALL_SECRET": SECRET, "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", python], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == recipe(NUMBER, SECRET)
    assert verify_target_checksum(NUMBER, out.stdout, SECRET.encode())


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command")
def test_the_readme_s_shell_recipe_runs_and_is_accepted() -> None:
    shell, _ = readme_recipe()
    env = {"ACME_CALL_SECRET": SECRET, "PATH": "/usr/bin:/bin"}
    out = subprocess.run(["bash", "-c", shell], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == recipe(NUMBER, SECRET)
    assert verify_target_checksum(NUMBER, out.stdout, SECRET.encode())


def test_the_cli_prints_the_checksum_the_product_accepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PARK_SECRET", SECRET)
    path = clients_file(tmp_path)
    argv = ["calls", "checksum", "--client", "acme", "--campaign", "park", "--file", str(path)]
    assert main([*argv, "+1 415 555 0198"]) == 0
    printed = capsys.readouterr().out
    assert printed == recipe(NUMBER, SECRET) + "\n"
    assert main([*argv, "415 555 0198"]) == 2, "a target's number must be international"
    assert "country code" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "PARK_SECRET, which is not set"),
        ("short-secret", "12 bytes long; a checksum secret needs at least 16"),
    ],
)
def test_the_cli_says_why_a_campaign_cannot_sign(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    value: str | None,
    reason: str,
) -> None:
    if value is None:
        monkeypatch.delenv("PARK_SECRET", raising=False)
    else:
        monkeypatch.setenv("PARK_SECRET", value)
    argv = ["calls", "checksum", "--client", "acme", "--campaign", "park"]
    argv += ["--file", str(clients_file(tmp_path)), NUMBER]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "client acme, campaign park" in err and reason in err
    assert value is None or value not in err, "the secret is never quoted"


def test_a_secret_too_short_or_unset_is_named_with_client_campaign_and_reason() -> None:
    campaigns = parse_campaigns(
        {"park": CAMPAIGN, "plain": {**CAMPAIGN, "checksum_secret_env": None}}
    )
    short = "x" * (MIN_SECRET_BYTES - 1)
    [problem] = checksum_secret_problems("acme", campaigns, secret_from({"PARK_SECRET": short}))
    assert problem.startswith(
        "clients.acme.campaigns.park.checksum_secret_env (client acme, campaign park): "
    )
    assert f"{MIN_SECRET_BYTES - 1} bytes long" in problem and short not in problem
    [problem] = checksum_secret_problems("acme", campaigns, secret_from({}))
    assert "not set" in problem
    long_enough = secret_from(
        {"PARK_SECRET": "é" * (MIN_SECRET_BYTES // 2)}
    )  # bytes, not characters
    assert checksum_secret(campaigns["park"], long_enough) == ("é" * 8).encode()
    assert checksum_secret_problems("acme", campaigns, long_enough) == []
    with pytest.raises(ConfigError, match="no checksum_secret_env"):
        checksum_secret(campaigns["plain"], long_enough)


@pytest.mark.parametrize("environ", [{}, {"PARK_SECRET": "short"}])
def test_a_secret_that_cannot_sign_says_so_at_request_time(environ: dict[str, str]) -> None:
    """What apply now prevents, should a worker's environment differ: the caller is told the
    fault is the server's, not that the campaign takes no manual targets."""
    campaigns = parse_campaigns({"park": CAMPAIGN})
    body = {
        "campaign_id": "park",
        "member_phone_number": "+14155552671",
        "target_phone_number": NUMBER,
        "target_checksum": recipe(NUMBER, "short"),
    }
    with pytest.raises(ValidationFailed) as refused:
        resolve_call_request(body, campaigns, secret_from(environ))
    assert [e.error for e in refused.value.errors] == [MANUAL_TARGETS_MISCONFIGURED]


@pytest.mark.parametrize("value", [None, "short-secret"])
def test_clients_apply_refuses_a_secret_that_cannot_sign(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    """Refused before anything is written: no broker is needed to see it (none runs here)."""
    if value is None:
        monkeypatch.delenv("PARK_SECRET", raising=False)
    else:
        monkeypatch.setenv("PARK_SECRET", value)
    settings = Settings.from_env({"SWITCHBOARD_BOOTSTRAP_SERVERS": "127.0.0.1:9"})
    with pytest.raises(ConfigError) as refused:
        apply_clients_file(settings, clients_file(tmp_path))
    message = str(refused.value)
    assert "clients.acme.campaigns.park.checksum_secret_env (client acme, campaign park)" in message
    assert value is None or value not in message
