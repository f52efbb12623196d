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

from tests.smtp import SilentServer, SMTPServer, closed_port
from txm import config, manage
from txm.alarms.email import EmailWorker, POLL_SECONDS, retry_delay
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
    base = {"DS_PORT": 0, "BIND_ADDRESS": "127.0.0.1", "EMAIL_HOST": "127.0.0.1", "EMAIL_PORT": smtp_port,
            "EMAIL_TIMEOUT": 5.0, "DEFAULT_FROM_EMAIL": "txm@example.com", "ALARM_EMAIL_RETRY_DELAY": 0.02}
    return settings.replace(**{**base, **values})


@pytest.fixture
def serve(settings, people):
    running = []

    def start(smtp_port: int, **values) -> ServerThread:
        server = ServerThread(serve_settings(settings, smtp_port, **values), timeout=TIMEOUT).start()
        running.append(server)
        return server

    yield start
    for server in running:
        server.stop()


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
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {[(a.email_status, a.email_attempts, a.email_error) for a in alarms()]}")
        time.sleep(0.02)


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
