"""switchboard.render: a tiny placeholder language that can never evaluate anything."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchboard.render import MissingVariable, TemplateSyntaxError, placeholders, render

NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True)


@pytest.mark.parametrize(
    ("template", "variables", "expected"),
    [
        ("Hello {{name}}!", {"name": "Ana"}, "Hello Ana!"),
        ("Hello {{ name }}!", {"name": "Ana"}, "Hello Ana!"),
        ("{{a}}{{b}}{{a}}", {"a": "1", "b": "2"}, "121"),
        ("Order {{ order_id }} x{{n}}", {"order_id": 1234, "n": 2}, "Order 1234 x2"),
        ("{{ f }} {{ g }}", {"f": 3.0, "g": 1.5}, "3 1.5"),
        ("{{ yes }}/{{ no }}", {"yes": True, "no": False}, "true/false"),
        ("{{\n  name\n}}", {"name": "multi"}, "multi"),
        ("{{ empty }}|", {"empty": ""}, "|"),
        ("no placeholders at all", {}, "no placeholders at all"),
        ("{ single } braces {name}", {}, "{ single } braces {name}"),
        ("an unclosed {{ name", {}, "an unclosed {{ name"),
    ],
)
def test_placeholders_are_filled(template: str, variables: dict[str, Any], expected: str) -> None:
    assert render(template, variables) == expected


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ('Hello {{ name | default("there") }}!', "Hello there!"),
        ("Hello {{ name | default('there') }}!", "Hello there!"),
        ('Hello {{name|default("there")}}!', "Hello there!"),
        ('Hello {{ name | default( "" ) }}!', "Hello !"),
        ("{{ name | default('say \"hi\"') }}", 'say "hi"'),
        ('{{ name | default("it\'s") }}', "it's"),
    ],
)
def test_default_when_missing(template: str, expected: str) -> None:
    assert render(template, {}) == expected
    assert render(template, {"name": None}) == expected


def test_value_wins_over_default() -> None:
    assert render('Hi {{ name | default("there") }}', {"name": "Ana"}) == "Hi Ana"


def test_missing_variable() -> None:
    with pytest.raises(MissingVariable) as info:
        render("Hello {{ name }}, order {{ order }}", {"name": "Ana"})
    assert info.value.name == "order"
    assert str(info.value) == "template variable 'order' has no value for this recipient"
    assert isinstance(info.value, KeyError)


@pytest.mark.parametrize(
    "template",
    [
        "{{ user.name }}",
        "{{ 1+1 }}",
        "{{ name | upper }}",
        "{{ name | default(there) }}",
        "{{ items[0] }}",
        "{{ f() }}",
        "{{ }}",
        "{{ 9lives }}",
        "{{ a b }}",
        "{{ __import__('os').system('id') }}",
        "ok {{ name }} then {{ bad.one }}",
    ],
)
def test_anything_but_a_name_is_a_syntax_error(template: str) -> None:
    with pytest.raises(TemplateSyntaxError, match="is not a placeholder"):
        render(template, {"name": "Ana", "user": "x", "a": "1", "items": "x"})
    with pytest.raises(TemplateSyntaxError):
        placeholders(template)


def test_syntax_error_is_raised_before_missing_variables() -> None:
    with pytest.raises(TemplateSyntaxError):
        render("{{ missing }} {{ x.y }}", {})


def test_placeholders_lists_names() -> None:
    template = 'Hi {{ name }}, {{ order_id }} {{name}} {{ a | default("b") }}'
    assert placeholders(template) == {"name", "order_id", "a"}
    assert placeholders("plain") == set()


def test_html_escaping_only_when_asked() -> None:
    value = {"name": "<b>Tom & \"Jerry\" 'x'</b>"}
    assert render("<p>{{ name }}</p>", value) == "<p><b>Tom & \"Jerry\" 'x'</b></p>"
    assert render("<p>{{ name }}</p>", value, escape_html=True) == (
        "<p>&lt;b&gt;Tom &amp; &quot;Jerry&quot; &#x27;x&#x27;&lt;/b&gt;</p>"
    )


def test_html_escaping_applies_to_defaults_not_the_template() -> None:
    assert render('<i>{{ x | default("a<b") }}</i>', {}, escape_html=True) == "<i>a&lt;b</i>"


# -- properties --------------------------------------------------------------------------------


@given(st.text().filter(lambda t: "{{" not in t), st.dictionaries(NAMES, st.text()))
def test_text_without_double_braces_renders_to_itself(text: str, variables: dict[str, str]) -> None:
    assert render(text, variables) == text
    assert render(text, variables, escape_html=True) == text


@given(NAMES, st.text())
def test_values_are_inserted_literally(name: str, value: str) -> None:
    assert render(f"[{{{{ {name} }}}}]", {name: value}) == f"[{value}]"


@given(NAMES, NAMES, st.text(max_size=20))
def test_rendering_never_re_renders_values(name: str, other: str, tail: str) -> None:
    # A value that itself looks like a template (even a malformed one, or one naming a variable
    # that does not exist) is inserted as text: nothing is evaluated or expanded twice.
    value = f"{{{{ {other} }}}} {{{{ x.y }}}} {tail}"
    variables = {name: value}
    assert render(f"{{{{ {name} }}}}", variables) == value


@given(st.lists(st.tuples(NAMES, st.text(alphabet=st.characters(blacklist_characters="{}")))))
def test_rendering_is_concatenation_of_values(pairs: list[tuple[str, str]]) -> None:
    variables = dict(pairs)
    template = "".join(f"<{{{{ {n} }}}}>" for n in variables)
    assert render(template, variables) == "".join(f"<{v}>" for v in variables.values())


def test_a_template_parsed_once_renders_each_recipients_own_values() -> None:
    """The parsed template is remembered across recipients; their values never are, and a
    malformed template is refused every time it is rendered, not only the first."""
    template = "Hi {{ name }}, {{ n | default('no') }} new"
    assert render(template, {"name": "Ana", "n": 2}) == "Hi Ana, 2 new"
    assert render(template, {"name": "Bo"}) == "Hi Bo, no new"
    with pytest.raises(MissingVariable):
        render(template, {"n": 1})
    assert render(template, {"name": "<b>"}, escape_html=True) == "Hi &lt;b&gt;, no new"
    for _ in range(2):
        with pytest.raises(TemplateSyntaxError):
            render("Hi {{ name.upper() }}", {"name": "Ana"})
        with pytest.raises(TemplateSyntaxError):
            placeholders("Hi {{ name.upper() }}")
