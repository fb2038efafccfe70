"""Audience files for `switchboard send --audience FILE` (switchboard/audience_file.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.audience_file import AudienceFileError, read_audience


def test_one_address_per_line_skipping_blanks_and_comments(tmp_path: Path) -> None:
    path = tmp_path / "audience.txt"
    path.write_text("# customers\n+14155550100\n\n  ana@example.com  \n")
    assert list(read_audience(path)) == ["+14155550100", "ana@example.com"]


def test_jsonl_strings_and_profiles(tmp_path: Path) -> None:
    path = tmp_path / "audience.jsonl"
    path.write_text('"+14155550100"\n{"email": "ana@example.com", "name": "Ana"}\n\n')
    assert list(read_audience(path)) == [
        "+14155550100",
        {"email": "ana@example.com", "name": "Ana"},
    ]


@pytest.mark.parametrize(
    ("text", "error"), [("{oops\n", "line 1: not JSON"), ('"ok"\n42\n', "line 2: expected")]
)
def test_jsonl_errors_name_the_line(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "audience.jsonl"
    path.write_text(text)
    with pytest.raises(AudienceFileError, match=error):
        list(read_audience(path))


def test_csv_profile_columns_and_template_variables(tmp_path: Path) -> None:
    path = tmp_path / "audience.csv"
    path.write_text(
        "phone,name,order,timezone\n+14155550100,Ana,1234,\n+14155550101,,,Asia/Kathmandu\n,,,\n"
    )
    assert list(read_audience(path)) == [
        {"phone": "+14155550100", "name": "Ana", "vars": {"order": "1234"}},
        {"phone": "+14155550101", "timezone": "Asia/Kathmandu"},
    ]


def test_csv_needs_a_header_and_rows_no_longer_than_it(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(AudienceFileError, match="header"):
        list(read_audience(empty))
    wide = tmp_path / "wide.csv"
    wide.write_text("phone\n+14155550100,extra\n")
    with pytest.raises(AudienceFileError, match="line 2"):
        list(read_audience(wide))
