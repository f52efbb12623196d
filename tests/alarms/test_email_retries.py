"""Alarm emails outlast an SMTP outage: retried with a growing delay until ALARM_EMAIL_MAX_AGE,
and only then failed; the backlog shown in the admin panel; a failed one sent again from there.

The outage is real: the worker of a real ``txm serve`` (in a thread) sends to a port where
nothing listens, then a real SMTP server (aiosmtpd) comes up on that same port. Time that would
take hours is simulated by moving an alarm's ``received`` or ``email_next_attempt`` back or
forward in the database.
"""

from __future__ import annotations

import datetime as dt
import logging
import time

import pytest

from tests.alarms.conftest import server_settings
from tests.alarms.conftest import wait_until as wait_for
from tests.smtp import SilentServer, SMTPServer, closed_port
from tests.webutil import add_user, client, csrf_token, login
from txm import config, manage
from txm.alarms.email import POLL_SECONDS, EmailWorker, retry_delay
from txm.alarms.mailing_lists import mailing_list_add
from txm.client import TTPClient
from txm.db import schema
from txm.serve import ServerThread

TIMEOUT = 20


@pytest.fixture
def people(database):
    """Unit M1 whose mailing list is alice."""
    manage.add_unit("M1", "s3cret", 2, name="North tank")
    manage.add_user("alice", "pw", email="alice@example.com")
    mailing_list_add("M1", ["alice"])
    database.close()


def serve_settings(settings, smtp_port: int, **values):
    """The SMTP server at ``smtp_port``; retries 20 ms apart at first (then twice as long each
    time); ALARM_EMAIL_ATTEMPTS and ALARM_EMAIL_MAX_AGE at their defaults."""
    return server_settings(settings, smtp_port, **{"ALARM_EMAIL_RETRY_DELAY": 0.02, **values})


@pytest.fixture
def serve(serve):
    """The folder's ``serve`` with retries 20 ms apart at first."""
    return lambda smtp_port, **values: serve(smtp_port, **{"ALARM_EMAIL_RETRY_DELAY": 0.02, **values})


@pytest.fixture
def meter(serve):
    """Raise alarms over TTP: ``meter(server, "2;data")``."""
    clients: list[TTPClient] = []

    def ask(server: ServerThread, alarm: str) -> None:
        if not clients:
            clients.append(TTPClient(port=server.ttp_port, timeout=10))
        assert clients[0].request(f"TTP /al/M1/<{alarm}> s3cret") == "OK"

    yield ask
    for c in clients:
        c.close()


def smtp_on(port: int) -> SMTPServer:
    """A real SMTP server on ``port`` (where the worker has been failing to connect)."""
    smtp = SMTPServer()
    smtp.controller.port = port
    return smtp


def alarms() -> list[schema.Alarm]:
    schema.database.connect(reuse_if_open=True)
    try:
        return list(schema.Alarm.select().order_by(schema.Alarm.id))
    finally:
        schema.database.close()


def change(alarm_id: int, **values) -> None:
    schema.database.connect(reuse_if_open=True)
    try:
        schema.Alarm.update(**values).where(schema.Alarm.id == alarm_id).execute()
    finally:
        schema.database.close()


def ago(**delta) -> dt.datetime:
    return schema.utcnow() - dt.timedelta(**delta)


def wait_until(condition, what: str, timeout: float = TIMEOUT):
    """The folder's wait, showing the alarms' email states when it times out."""
    return wait_for(condition, what, timeout,
                    state=lambda: [(a.email_status, a.email_attempts, a.email_error) for a in alarms()])


def data_of(received) -> list[str]:
    return sorted(m.body.split("data.0: ")[1].strip() for m in received)


# --- an outage -----------------------------------------------------------------------------------------


def test_an_smtp_outage_longer_than_the_old_attempts_loses_no_alarm(serve, meter):
    port = closed_port()
    server = serve(port)
    meter(server, "2;during the outage")
    # Six attempts were all the old defaults gave; the email is still owed after eight...
    [alarm] = wait_until(lambda: [a for a in alarms() if a.email_attempts >= 8 or a.email_status != "pending"],
                         "eight failed attempts")
    assert alarm.email_status == "pending", f"{alarm.email_status} after {alarm.email_attempts}: {alarm.email_error}"
    assert "cannot reach the SMTP server 127.0.0.1" in alarm.email_error
    # ...and after an outage of two hours (the default ALARM_EMAIL_MAX_AGE is a day).
    change(alarm.id, received=ago(hours=2))
    wait_until(lambda: alarms()[0].email_attempts >= 9, "a ninth attempt")
    assert alarms()[0].email_status == "pending"
    with smtp_on(port) as smtp:  # the SMTP server is back: the next retry delivers
        got = smtp.wait_for(1)
        wait_until(lambda: alarms()[0].email_status == "sent", "the alarm marked sent")
    assert data_of(got) == ["during the outage"]
    assert alarms()[0].email_attempts >= 10


def test_once_the_server_is_back_every_waiting_email_goes_at_once(serve, meter):
    """A retry may be up to ten minutes away; the first email that goes through lets the others go."""
    port = closed_port()
    server = serve(port)
    meter(server, "2;first")
    meter(server, "2;second")
    wait_until(lambda: all(a.email_attempts >= 2 for a in alarms()), "failed attempts")
    for alarm in alarms():
        change(alarm.id, email_next_attempt=schema.utcnow() + dt.timedelta(minutes=10))
    with smtp_on(port) as smtp:
        meter(server, "2;third")  # arrives once the server is back
        got = smtp.wait_for(3)
        wait_until(lambda: [a.email_status for a in alarms()] == ["sent"] * 3, "all three marked sent")
    assert data_of(got) == ["first", "second", "third"]


def test_an_alarm_older_than_the_max_age_is_failed_at_its_next_failed_attempt(serve, meter):
    server = serve(closed_port())
    meter(server, "2;old")
    wait_until(lambda: alarms()[0].email_attempts >= 1, "a failed attempt")
    old = alarms()[0]
    change(old.id, received=ago(hours=24, minutes=1), email_next_attempt=schema.utcnow())
    meter(server, "2;new")  # wakes the worker
    wait_until(lambda: alarms()[0].email_status != "pending", "the old alarm given up")
    old, new = alarms()
    assert old.email_status == "failed"
    assert "cannot reach the SMTP server 127.0.0.1" in old.email_error
    assert "not sent within ALARM_EMAIL_MAX_AGE (1 day)" in old.email_error
    wait_until(lambda: alarms()[1].email_attempts >= 7, "seven attempts at the new one")
    assert alarms()[1].email_status == "pending"


def test_a_hung_smtp_server_costs_one_attempt_per_look_not_one_per_alarm(settings, people):
    """Retrying for a day must not let a backlog of emails each wait out the SMTP timeout in turn:
    once the server could not be reached, the worker stops this look and tries again later."""
    schema.database.connect(reuse_if_open=True)
    unit = schema.Unit.get(code="M1")
    for n in range(3):
        schema.Alarm.create(unit=unit, level=1, data=[f"alarm {n}"], received=schema.utcnow())
    with SilentServer() as silent:
        worker = EmailWorker(serve_settings(settings, silent.port, EMAIL_TIMEOUT=0.5), schema.database)
        start = time.monotonic()
        worker.run_once()
        took = time.monotonic() - start
    attempts = [a.email_attempts for a in alarms()]
    assert attempts == [1, 0, 0] and took < 1.5, f"attempts {attempts} in {took:.1f} s"
    assert [a.email_status for a in alarms()] == ["pending"] * 3


# --- the settings ----------------------------------------------------------------------------------------


def test_the_retry_settings_and_their_defaults(settings, people, caplog):
    defaults = config.defaults()
    assert defaults.ALARM_EMAIL_MAX_AGE == 86400
    assert defaults.ALARM_EMAIL_ATTEMPTS == 0  # no count: ALARM_EMAIL_MAX_AGE decides
    assert [retry_delay(defaults, n) for n in (1, 2, 3, 4, 5, 6, 50, 5000)] == [60, 120, 240, 480, 600, 600, 600, 600]
    assert retry_delay(defaults.replace(ALARM_EMAIL_RETRY_DELAY=3600.0), 3) == 3600  # a longer first delay stays
    # A count kept from an old configuration file is honoured, and the log says it ends retries early.
    caplog.set_level(logging.WARNING, logger="txm")
    EmailWorker(settings.replace(ALARM_EMAIL_ATTEMPTS=6), schema.database)
    assert "ALARM_EMAIL_ATTEMPTS 6 gives up an alarm email after about 25 min, before ALARM_EMAIL_MAX_AGE (1 day)" in caplog.text


# --- the admin panel ---------------------------------------------------------------------------------


@pytest.fixture
def panel(settings, people):
    schema.database.connect(reuse_if_open=True)
    yield lambda: client(settings)
    schema.database.close()


def staff(panel, name: str, *codenames: str):
    user = add_user(name, is_staff=True)
    for codename in codenames:
        schema.UserPermission.create(user=user, codename=codename)
    web = panel()
    login(web, name)
    return web


def test_the_backlog_on_the_index_and_the_alarm_list(panel):
    unit = schema.Unit.get(code="M1")
    oldest = schema.Alarm.create(unit=unit, level=2, data=["oldest"], received=ago(hours=3, minutes=5),
                                 email_attempts=40, email_error="cannot reach the SMTP server 127.0.0.1:25")
    for minutes in (30, 1):
        schema.Alarm.create(unit=unit, level=2, data=["waiting"], received=ago(minutes=minutes))
    for status in ("failed", "failed", "sent", "none"):
        schema.Alarm.create(unit=unit, level=3, data=["done"], received=ago(hours=30), email_status=status)
    web = staff(panel, "clerk", "view_alarm")
    for page in (web.get("/admin/"), web.get("/admin/alarm/")):
        backlog = page.text.split('id="alarm-backlog"', 1)[1].split("</p>", 1)[0]
        assert "3 alarm emails waiting to be sent" in backlog
        assert f'/admin/alarm/{oldest.id}/' in backlog and "received 3 h 5 min ago" in backlog
        assert "cannot reach the SMTP server 127.0.0.1:25" in backlog
        assert "2 alarm emails failed" in backlog
    failed = web.get("/admin/alarm/", {"email": "failed"}).text
    assert failed.count("<td>failed</td>") == 2 and "<td>sent</td>" not in failed
    # Nothing waiting: the index says nothing about it.
    schema.Alarm.update(email_status="sent").where(schema.Alarm.email_status == "pending").execute()
    assert "waiting to be sent" not in web.get("/admin/").text


def test_staff_send_a_failed_alarm_email_again_and_it_goes(serve, meter, panel):
    port = closed_port()
    server = serve(port)
    meter(server, "2;lost in the outage")
    wait_until(lambda: alarms()[0].email_attempts >= 1, "a failed attempt")
    change(alarms()[0].id, received=ago(days=2), email_next_attempt=schema.utcnow())
    meter(server, "2;wake up")
    wait_until(lambda: alarms()[0].email_status == "failed", "the old alarm failed")
    failed = alarms()[0]
    schema.database.connect(reuse_if_open=True)

    viewer = staff(panel, "viewer", "view_alarm")
    assert "Send the email again" not in viewer.get(f"/admin/alarm/{failed.id}/").text
    page = viewer.get("/admin/")
    viewer.post("/admin/alarm/send-again", {"ids": str(failed.id), "csrf_token": csrf_token(page)}, status=403)

    clerk = staff(panel, "clerk", "change_alarm")
    detail = clerk.get(f"/admin/alarm/{failed.id}/")
    assert "Send the email again" in detail.text
    clerk.post("/admin/alarm/send-again", {"ids": str(failed.id)}, status=403)  # no CSRF token
    assert alarms()[0].email_status == "failed"
    with smtp_on(port) as smtp:
        answer = clerk.post("/admin/alarm/send-again", {"ids": str(failed.id), "csrf_token": csrf_token(detail),
                                                        "back": f"/admin/alarm/{failed.id}/"}, status=303)
        assert answer.location.endswith(f"/admin/alarm/{failed.id}/")
        assert "The email of 1 alarm will be sent again" in clerk.get(answer.location).text
        entry = schema.LogEntry.select().order_by(schema.LogEntry.id.desc()).first()
        assert (entry.username, entry.action, entry.model, entry.object_id) == ("clerk", "change", "alarm", str(failed.id))
        assert "Email to be sent again" in entry.change_message and "ALARM_EMAIL_MAX_AGE" in entry.change_message
        schema.database.close()
        # The worker looks at least every POLL_SECONDS: the email goes out then (with the
        # younger alarm's, still being retried).
        got = smtp.wait_for(2, timeout=POLL_SECONDS + TIMEOUT)
        wait_until(lambda: alarms()[0].email_status == "sent", "the alarm marked sent")
    assert data_of(got) == ["lost in the outage", "wake up"]


def test_only_failed_alarm_emails_are_sent_again_and_each_is_logged(panel):
    unit = schema.Unit.get(code="M1")
    failed = [schema.Alarm.create(unit=unit, level=2, data=[str(n)], email_status="failed", email_error="554 no")
              for n in range(2)]
    sent = schema.Alarm.create(unit=unit, level=2, data=["sent"], email_status="sent")
    boss = staff(panel, "boss", "view_alarm", "change_alarm")
    listing = boss.get("/admin/alarm/")
    assert "Send selected failed emails again" in listing.text
    answer = boss.post("/admin/alarm/send-again", {"ids": [str(a.id) for a in (*failed, sent)],
                                                   "csrf_token": csrf_token(listing), "back": "/admin/alarm/"},
                       status=303)
    assert "The emails of 2 alarms will be sent again" in boss.get(answer.location).text
    assert [a.email_status for a in alarms()] == ["pending", "pending", "sent"]
    assert [a.email_next_attempt for a in alarms()[:2]] == [None, None]
    logged = schema.LogEntry.select().where(schema.LogEntry.model == "alarm").order_by(schema.LogEntry.id)
    assert [e.object_id for e in logged] == [str(a.id) for a in failed]


def test_the_right_to_send_alarm_emails_again_can_be_given(settings, people):
    from txm.admin.actor import Actor
    from txm.admin.people import grantable_permissions

    schema.database.connect(reuse_if_open=True)
    boss = add_user("boss", is_staff=True, is_superuser=True)
    offered = dict(grantable_permissions(Actor.of(boss, settings)))
    assert offered["change_alarm"] == "Can change alarm"
    assert "add_alarm" not in offered
