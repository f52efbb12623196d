"""Alarm email templates: Django syntax as the manual shows it, in a sandbox, plain text."""

from __future__ import annotations

import pytest

from txm import manage
from txm.alarms.email import render_alarm_email
from txm.alarms.templates import (
    DEFAULT_BODY,
    DEFAULT_SUBJECT,
    MAX_BODY_CHARS,
    MAX_SUBJECT_CHARS,
    UnitView,
    check_template,
    render_message,
)
from txm.db import schema
from txm.errors import InvalidValue


@pytest.fixture
def unit(database):
    unit = manage.add_unit("M1", "s3cret-key", 2, name="North tank", labels="Flow")
    return unit


def render(template: str, unit, level: int = 3, data=("2009-1-16 15:30:45", "11.5")) -> str:
    return render_message(template, "", unit, level, list(data))[0]


def render_body(template: str, unit, level: int = 3, data=("2009-1-16 15:30:45", "11.5")) -> str:
    return render_message("", template, unit, level, list(data))[1]


def test_the_manuals_examples(unit):
    assert render("{{ level }}", unit) == "3"
    assert render("{{ unit.name }} {{ unit.code }} {{ unit.channels }}", unit) == "North tank M1 2"
    assert render("{{ data.0 }}|{{ data.1 }}", unit) == "2009-1-16 15:30:45|11.5"
    assert render("{{ data }}", unit) == "['2009-1-16 15:30:45', '11.5']"
    assert render("{% if data.0 %}The localtime for this Alarm was {{ data.0 }}{% endif %}", unit) == (
        "The localtime for this Alarm was 2009-1-16 15:30:45")
    assert render("{% if data.0 %}yes{% else %}no{% endif %}", unit, data=()) == "no"


def test_unit_fields_and_django_habits(unit):
    assert render("{{ unit }}", unit) == "M1 (North tank)"
    assert render("{{ unit.labels.0 }},{{ unit.labels.1 }}", unit) == "Flow,ch2"
    assert render("{{ data.7 }}", unit) == ""  # missing items are empty, as in Django
    assert render("{{ unit.nothing.deeper }}", unit) == ""
    assert render('{{ data.7|default:"n/a" }} {{ unit.name|upper }}', unit) == "n/a NORTH TANK"
    assert render("{{ '|default:x' }}", unit) == "|default:x"  # text in quotes is left alone
    assert render("{% for d in data %}[{{ d }}]{% endfor %}", unit) == "[2009-1-16 15:30:45][11.5]"


def test_plain_text_no_html_escaping(unit):
    assert render_message("x", "{{ data.0 }}", unit, 1, ["<b>&'\""])[1] == "<b>&'\""


@pytest.mark.parametrize("escape", [
    "{{ unit.__class__ }}",
    "{{ unit.__class__.__mro__ }}",
    "{{ unit.__dict__ }}",
    "{{ unit.key }}",
    "{{ unit.of }}",
    "{{ data.__class__.__base__.__subclasses__() }}",
    "{{ cycler }}{{ joiner }}{{ lipsum }}{{ namespace }}",
    "{{ self }}",
])
def test_sandbox_gives_nothing_or_refuses(unit, escape):
    try:
        text = render(escape, unit)
    except InvalidValue as exc:
        assert "unsafe" in str(exc) or "undefined" in str(exc).lower()
    else:
        assert text in ("", "<TemplateReference None>"), text
        assert "s3cret" not in text and "class" not in text


@pytest.mark.parametrize("escape", [
    "{{ unit.__class__() }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ data.pop() }}",
    "{{ data.append(1) }}",
])
def test_sandbox_refuses_calls_into_python(unit, escape):
    with pytest.raises(InvalidValue):
        render(escape, unit)


def test_the_key_and_the_model_are_never_reachable(unit):
    text = render_message("{{ unit.key }}{{ unit.id }}", "{{ unit }}{{ unit.labels }}", unit, 1, [])
    assert "s3cret" not in "".join(text)
    view = UnitView.of(unit)
    assert not hasattr(view, "key") and not isinstance(view, schema.Unit)


@pytest.mark.parametrize("broken, where", [
    ("{% if data.0 %}no end", "line 1"),
    ("fine\n{{ data.0 ", "line 2"),
    ("a\nb\n{% endif %}", "line 3"),
    ("{{ data|nosuchfilter }}", "line 1"),
])
def test_check_template_names_the_line(broken, where):
    with pytest.raises(InvalidValue) as info:
        check_template(broken)
    assert str(info.value).startswith(where + ":"), str(info.value)


def test_check_template_accepts_good_ones():
    check_template(DEFAULT_SUBJECT)
    check_template(DEFAULT_BODY)
    check_template('{% if data.0 %}{{ data.0|default:"-" }}{% endif %}')


def test_default_message_and_the_saved_one(unit):
    subject, body = render_alarm_email(unit, 2, ["2009-1-16 15:30:45", "7"])
    assert subject == "Alarm level 2 from unit M1 (North tank)"
    assert "Unit M1 (North tank) raised an alarm of level 2." in body
    assert "data.0: 2009-1-16 15:30:45" in body and "data.1: 7" in body
    schema.AlarmMessage.create(unit=unit, level=2, subject="{{ unit.name }}: level {{ level }}",
                               body="Tank at {{ data.1 }} at {{ data.0 }}")
    assert render_alarm_email(unit, 2, ["2009-1-16 15:30:45", "7"]) == (
        "North tank: level 2", "Tank at 7 at 2009-1-16 15:30:45")
    # another level still gets the default
    assert render_alarm_email(unit, 5, [])[0] == "Alarm level 5 from unit M1 (North tank)"


def test_a_template_failing_at_render_time_falls_back_to_the_default(unit):
    schema.AlarmMessage.create(unit=unit, level=1, subject="{{ unit.__class__() }}", body="x")
    subject, body = render_alarm_email(unit, 1, ["a"])
    assert subject == "Alarm level 1 from unit M1 (North tank)"
    assert "The alarm message for level 1 failed" in body


def test_subject_is_one_line_and_bounded(unit):
    subject = render("a\n\nb{% for i in range(1000) %}x{% endfor %}", unit)
    assert "\n" not in subject and subject.startswith("a b")
    assert len(subject) <= MAX_SUBJECT_CHARS


def test_body_is_bounded(unit):
    body = render_message("s", "{% for i in range(99999) %}{% for j in range(99999) %}x{% endfor %}{% endfor %}",
                          unit, 1, [])[1]
    assert len(body) < MAX_BODY_CHARS + 100 and body.endswith("characters]\n")


@pytest.mark.parametrize("greedy", [
    '{{ "x" * 1000000000 }}',
    "{{ 2 ** 100000000 }}",
    "{% set a = 2 ** 64 %}" + "{% set a = a * a %}" * 40 + "{{ a }}",  # squared 40 times
    '{{ "%1000000000s" % 1 }}',
    '{{ "%1000000000s"|format(1) }}',
    '{{ "x"|center(1000000000) }}',
    '{{ "a"|indent(1000000000) }}',
    '{{ data.0|replace("", "y" * 99999) }}',
    '{{ range(100000)|join("y" * 99999) }}',
    '{% set a = "y" * 99999 %}{% set b = a ~ a %}{{ b }}',
    '{% set a = "y" * 60000 %}{{ a + a }}',
    "{{ unit.name.center(1000000000) }}",
    "{{ data.0.zfill(1000000000) }}",
    '{{ "{:>1000000000}".format(1) }}',
    '{{ (2).to_bytes(1000000000, "big") }}',
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
])
def test_templates_cannot_exhaust_memory_or_time(unit, greedy):
    """Each of these would take gigabytes or hours; the render is refused instead."""
    with pytest.raises(InvalidValue):
        render(greedy, unit)


def test_reasonable_use_of_the_same_tools_still_works(unit):
    text = render_body('{{ data.0.upper() }}|{{ "%.1f"|format(2.345) }}|{{ "%5s" % "a" }}|{{ data|join(", ") }}|'
                       '{{ "a" ~ data.1 }}|{{ 3 * 4 }}|{{ 2 ** 10 }}|{{ data.1|replace("5", "6") }}|'
                       '{{ "=" * 10 }}|{% for d in data %}{{ loop.index }}{% endfor %}', unit)
    assert text == "2009-1-16 15:30:45|2.3|    a|2009-1-16 15:30:45, 11.5|a11.5|12|1024|11.6|==========|12"
