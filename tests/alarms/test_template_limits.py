"""Alarm templates cannot take the memory or the time of the process that renders them.

Each template below got past the sandbox's own limits (or needs none to hurt): saved as an alarm
message, it is rendered by the real renderer (a separate process with an address-space limit and
a wall-clock kill), and by a real ``txm serve`` whose meters keep being answered. The memory of
the calling process is measured by its peak resident size (``VmHWM``, reset through
``/proc/self/clear_refs``), the time by the clock, and a stall of the calling process (a C call
holding the GIL) by a thread that ticks every 10 ms.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.conftest import database_values, write_toml
from tests.smtp import SMTPServer
from tests.webutil import add_user, client, csrf_token, login
from txm import manage
from txm.alarms.email import render_alarm_email
from txm.alarms.mailing_lists import mailing_list_add
from txm.alarms.renderer import RENDER_KILL_SECONDS, default_process
from txm.alarms.templates import UnitView, _context, render_in_sandbox, render_message
from txm.client import TTPClient
from txm.db import schema
from txm.errors import InvalidValue

MB = 2 ** 20
DATA = ["2009-1-16 15:30:45", "11.5"]

#: Templates that took hundreds of megabytes or seconds of the process rendering them.
RUNAWAY = {
    # The sandbox's limit of 100,000 characters per operation missed these five:
    "percent-mapping-key": "{{ '%(a)300000000s' % {'a': 1} }}",
    "format-mapping-key": "{{ '%(a)150000000s'|format(a=1) }}",
    "batch-fill": "{{ range(10)|batch(40000000, 'x')|list|length }}",
    "tojson-indent": "{{ data|tojson(100000000) }}",
    "wordwrap-string": "{{ ('a ' * 3000)|wordwrap(2, true, 'x' * 99999) }}",
    # No single operation is too big; together they are 400 MB (only the memory limit stops it):
    "many-big-values": "{{ (range(4000)|map('center', 99999)|list)|length }}",
    # One C call of many seconds, holding the GIL (only the kill stops it):
    "one-long-c-call": "{{ ([[0]] * 99999)|sum(start=[])|length }}",
}
SANDBOX_CATCHES = ("percent-mapping-key", "format-mapping-key", "batch-fill", "tojson-indent", "wordwrap-string")


@pytest.fixture
def config_file(tmp_path) -> Path:
    """Rendering does not depend on the database engine: these tests use SQLite alone."""
    return write_toml(tmp_path / "txm.toml", {"DATABASE_ENGINE": "sqlite3", "DATABASE_NAME": str(tmp_path / "txm.db"),
                                              "HTTP_PORT": 0})


@pytest.fixture
def unit(database):
    return manage.add_unit("M1", "s3cret", 2, name="North tank", labels="Flow,Level")


def status_bytes(field: str, pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


class Watch:
    """How long a block took, how much the peak memory of this process grew, and the longest
    time a ticking thread of this process was kept from running."""

    def __enter__(self) -> "Watch":
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM starts again from VmRSS
        self.rss_before = status_bytes("VmRSS")
        self.longest_stall = 0.0
        self._done = threading.Event()
        self._ticker = threading.Thread(target=self._tick, daemon=True)
        self._ticker.start()
        self._start = time.monotonic()
        return self

    def _tick(self) -> None:
        last = time.monotonic()
        while not self._done.wait(0.01):
            now = time.monotonic()
            self.longest_stall = max(self.longest_stall, now - last)
            last = now

    def __exit__(self, *exc) -> None:
        self.seconds = time.monotonic() - self._start
        self.grew = status_bytes("VmHWM") - self.rss_before
        self._done.set()
        self._ticker.join(5)


def warm_up() -> None:
    """The rendering process is running (its start is not what a test measures)."""
    view = UnitView(1, "W", "", 1, ("ch1",), False, True, "")
    assert render_message("{{ level }}", "", view, 1, []) == ("1", "")


@pytest.mark.parametrize("name", RUNAWAY)
def test_a_runaway_alarm_message_fails_cleanly_in_time_and_leaves_the_caller_alone(unit, name):
    schema.AlarmMessage.create(unit=unit, level=7, subject="{{ unit.code }}: alarm {{ level }}", body=RUNAWAY[name])
    warm_up()
    with Watch() as seen:
        subject, body = render_alarm_email(unit, 7, DATA)
    assert (seen.seconds < RENDER_KILL_SECONDS + 1.5, seen.grew < 40 * MB, seen.longest_stall < 0.5) == (
        True, True, True), (f"the render took {seen.seconds:.1f} s, this process grew by {seen.grew / MB:.0f} MB "
                            f"and stood still for {seen.longest_stall:.1f} s at most")
    # The email is not lost: the default message, with a line saying what went wrong.
    assert subject == "Alarm level 7 from unit M1 (North tank)"
    assert "Unit M1 (North tank) raised an alarm of level 7." in body
    assert "(The alarm message for level 7 failed: " in body


def test_what_each_limit_says(unit):
    said = {}
    for name, template in RUNAWAY.items():
        with pytest.raises(InvalidValue) as failed:
            render_message("s", template, unit, 7, DATA)
        said[name] = str(failed.value)
    for name in SANDBOX_CATCHES:
        assert "TemplateTooBig" in said[name] and ("more than 100000" in said[name] or "over 1000" in said[name])
    assert said["many-big-values"] == "the template needs more than the 256 MB of memory a template may use"
    assert said["one-long-c-call"] == "the template took longer than 3 s and was stopped"


@pytest.mark.parametrize("name", SANDBOX_CATCHES)
def test_the_sandbox_alone_refuses_what_it_missed(unit, name):
    """Defence in depth: the sandbox itself (rendering here, no process around it) refuses the
    five bypasses of its per-operation limit before building anything big."""
    with Watch() as seen, pytest.raises(InvalidValue, match="TemplateTooBig"):
        render_in_sandbox("s", RUNAWAY[name], _context(unit, 7, DATA, None))
    assert seen.grew < 40 * MB


@pytest.mark.parametrize("template, out", [
    ("{{ '%(a)5s|%(b).2f' % {'a': 'x', 'b': 2.5} }}", "    x|2.50"),
    ("{{ '%(a)s'|format(a=data.1) }}", "11.5"),
    ("{% for row in data|batch(3, '-') %}{{ row|join(',') }}{% endfor %}", "2009-1-16 15:30:45,11.5,-"),
    ("{{ data|tojson(2) }}", '[\n  "2009-1-16 15:30:45",\n  "11.5"\n]'),
    ("{{ 'one two three four'|wordwrap(9, wrapstring=' / ') }}", "one two / three / four"),
    ("{{ ('x' * 50000)|wordwrap(79)|length }}", str(50000 + 50000 // 79)),
])
def test_the_same_filters_within_reason_still_work(unit, template, out):
    assert render_message("s", template, unit, 7, DATA)[1] == out


NORMAL_SUBJECT = "{{ unit.name }}: alarm {{ level }}"
NORMAL_BODY = """\
{% if data.0 %}The localtime for this Alarm was {{ data.0 }}{% endif %}
{{ unit.labels.1 }} is {{ data.1|default:"not sent" }}, {{ unit.labels.0 }} {{ data.2|default:"not sent" }}
{% for item in data %}{{ loop.index }}={{ item|upper }}{% if not loop.last %}; {% endif %}{% endfor %}
{{ "%.1f"|format(data.1|float) }} {{ data|join(", ") }} <&> {{ unit }} {{ received }}
"""
NORMAL_OUT = (
    "North tank: alarm 2",
    "The localtime for this Alarm was 2009-1-16 15:30:45\n"
    "Level is 11.5, Flow not sent\n"
    "1=2009-1-16 15:30:45; 2=11.5\n"
    "11.5 2009-1-16 15:30:45, 11.5 <&> M1 (North tank) 2026-11-20 08:00:00\n")


def test_a_normal_template_renders_exactly_as_before_even_after_a_runaway(unit):
    import datetime as dt

    received = dt.datetime(2026, 11, 20, 8, 0, 0)
    schema.AlarmMessage.create(unit=unit, level=2, subject=NORMAL_SUBJECT, body=NORMAL_BODY)
    schema.AlarmMessage.create(unit=unit, level=7, subject="s", body=RUNAWAY["one-long-c-call"])
    assert render_alarm_email(unit, 2, DATA, received) == NORMAL_OUT
    first = default_process().pid
    assert "failed: the template took longer than 3 s" in render_alarm_email(unit, 7, DATA, received)[1]
    assert default_process().pid is None  # killed...
    assert render_alarm_email(unit, 2, DATA, received) == NORMAL_OUT  # ...and a new one renders the same
    assert default_process().pid not in (None, first)
    # The default message, rendered here (txm's own template), is as it was too.
    assert render_alarm_email(unit, 3, DATA, received) == (
        "Alarm level 3 from unit M1 (North tank)",
        "Unit M1 (North tank) raised an alarm of level 3.\n\nReceived by txm at 2026-11-20 08:00:00 UTC.\n\n"
        "Data sent with the alarm:\n  data.0: 2009-1-16 15:30:45\n  data.1: 11.5\n")


def test_renders_reuse_one_process_and_are_fast(unit):
    """A process started per render would manage about ten a second; the reused one, hundreds."""
    warm_up()
    pid = default_process().pid
    started = default_process().started
    count, start = 0, time.monotonic()
    while time.monotonic() - start < 1.0:
        assert render_message(NORMAL_SUBJECT, NORMAL_BODY, unit, 2, DATA)[0] == "North tank: alarm 2"
        count += 1
    rate = count / (time.monotonic() - start)
    assert default_process().pid == pid and default_process().started == started
    assert rate > 100, f"{rate:.0f} renders/s"


def test_a_killed_rendering_process_is_replaced_at_the_next_render(unit):
    import os
    import signal

    warm_up()
    os.kill(default_process().pid, signal.SIGKILL)
    time.sleep(0.1)
    assert render_message("{{ unit.code }}", "{{ level }}", unit, 4, []) == ("M1", "4")


def test_without_a_rendering_process_the_email_still_goes_with_the_default_message(unit, monkeypatch):
    import sys

    schema.AlarmMessage.create(unit=unit, level=2, subject=NORMAL_SUBJECT, body=NORMAL_BODY)
    default_process().close()
    monkeypatch.setattr(sys, "executable", "/nonexistent/python3")
    subject, body = render_alarm_email(unit, 2, DATA)
    assert subject == "Alarm level 2 from unit M1 (North tank)"
    assert body.endswith("(The alarm message for level 2 failed: the template rendering process could not start: "
                         "No such file or directory)\n")


# --- the admin panel's preview ----------------------------------------------------------------------


@pytest.fixture
def web(settings, database):
    return client(settings)


def preview(web, unit, body, message_id=None, status=200):
    page = web.get("/admin/")
    data = {"unit": str(unit.id), "level": "7", "subject": "Alarm {{ level }}", "body": body,
            "csrf_token": csrf_token(page)}
    if message_id is not None:
        data["_id"] = str(message_id)
    return web.post("/admin/alarmmessage/preview", data, status=status)


def test_the_preview_of_a_runaway_template_says_what_went_wrong_in_time(web, unit):
    add_user("boss", is_staff=True, is_superuser=True)
    login(web, "boss")
    warm_up()
    with Watch() as seen:
        page = preview(web, unit, RUNAWAY["one-long-c-call"])
    assert 'id="preview"' not in page.text
    assert "The template took longer than 3 s and was stopped." in page.text.split('id="preview-problem"')[1]
    assert seen.seconds < RENDER_KILL_SECONDS + 1.5 and seen.longest_stall < 0.5
    with Watch() as seen:
        page = preview(web, unit, RUNAWAY["many-big-values"])
    assert "The template needs more than the 256 MB of memory" in page.text.split('id="preview-problem"')[1]
    assert seen.grew < 40 * MB
    page = preview(web, unit, "Level {{ level }}, {{ data.1 }}")
    assert "Level 7, 42.5" in page.text.split('id="preview"')[1]


def test_the_preview_needs_the_right_to_write_alarm_messages(settings, unit):
    message = schema.AlarmMessage.create(unit=unit, level=7, subject="s", body="b")

    def staff(name: str, *codenames: str):
        user = add_user(name, is_staff=True)
        for codename in codenames:
            schema.UserPermission.create(user=user, codename=codename)
        web = client(settings)
        login(web, name)
        return web

    viewer = staff("viewer", "view_alarmmessage")
    assert "Preview (does not save)" not in viewer.get(f"/admin/alarmmessage/{message.id}/").text
    preview(viewer, unit, "{{ level }}", message.id, status=403)
    preview(viewer, unit, "{{ level }}", status=403)
    adder = staff("adder", "add_alarmmessage")
    assert 'id="preview"' in preview(adder, unit, "{{ level }}").text  # a new message
    preview(adder, unit, "{{ level }}", message.id, status=403)  # not a saved one
    editor = staff("editor", "change_alarmmessage")
    assert "Preview (does not save)" in editor.get(f"/admin/alarmmessage/{message.id}/").text
    assert 'id="preview"' in preview(editor, unit, "{{ level }}", message.id).text


# --- a real txm serve ----------------------------------------------------------------------------------


def test_txm_serve_stays_small_and_answers_meters_while_alarm_messages_run_away(settings, database, serve_process,
                                                                                tmp_path):
    unit = manage.add_unit("M1", "s3cret", 2, name="North tank")
    manage.add_user("alice", "pw", email="alice@example.com")
    mailing_list_add("M1", ["alice"])
    schema.AlarmMessage.create(unit=unit, level=7, subject="memory", body=RUNAWAY["many-big-values"])
    schema.AlarmMessage.create(unit=unit, level=8, subject="time", body=RUNAWAY["one-long-c-call"])
    schema.AlarmMessage.create(unit=unit, level=9, subject="fine {{ level }}", body="data {{ data.0 }}")
    database.close()
    with SMTPServer() as smtp:
        path = write_toml(tmp_path / "serve.toml", {
            **database_values(settings), "DS_PORT": 0, "BIND_ADDRESS": "127.0.0.1", "EMAIL_HOST": "127.0.0.1",
            "EMAIL_PORT": smtp.port, "DEFAULT_FROM_EMAIL": "txm@example.com"})
        server = serve_process(path=path)
        meter = TTPClient(port=server.wait_ready(), timeout=30)
        pid = server.proc.pid
        assert meter.request("TTP /al/M1/<9;warm up> s3cret") == "OK"
        assert smtp.wait_for(1)[0].message["Subject"] == "fine 9"
        peak_before = max(status_bytes("VmHWM", pid), status_bytes("VmRSS", pid))
        assert meter.request("TTP /al/M1/<7;memory> s3cret") == "OK"
        assert meter.request("TTP /al/M1/<8;time> s3cret") == "OK"
        slowest, second = 0.0, 0
        deadline = time.monotonic() + 30
        while len(smtp.messages) < 3 and time.monotonic() < deadline:
            second += 1
            start = time.monotonic()
            assert meter.request(f"TTP /up/M1/<2026-1-1 0:{second // 60}:{second % 60};{second};1> s3cret") == "OK"
            slowest = max(slowest, time.monotonic() - start)
            time.sleep(0.05)
        got = smtp.wait_for(3)
        grew = status_bytes("VmHWM", pid) - peak_before
        meter.close()
    assert (grew < 40 * MB, slowest < 1.0) == (True, True), (
        f"txm serve grew by {grew / MB:.0f} MB; a meter waited {slowest:.1f} s for its answer")
    bodies = sorted(m.body for m in got[1:])
    assert "failed: the template needs more than the 256 MB" in bodies[0]  # "memory" sorts first
    assert "failed: the template took longer than 3 s" in bodies[1]
