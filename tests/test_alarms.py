"""Alarms over TTP and their emails, against a real SMTP server (aiosmtpd on port 0)."""

from __future__ import annotations

import datetime as dt
import logging
import time

import pytest

from tests.smtp import SilentServer, SMTPServer, closed_port, make_certificate
from tests.test_ttp_server import Meter
from txm import alarms, manage
from txm import db as models
from txm.errors import ConfigError
from txm.serve import ServerThread

TIMEOUT = 20
ALARM = "TTP /al/M1/<2;2009-1-16 15:30:45;11.5> s3cret"


@pytest.fixture
def people(database):
    """Unit M1 with a mailing list of alice, bob (emails) and carol (none); unit M2 with no list."""
    manage.add_unit("M1", "s3cret", 2, name="North tank", labels="Flow,Level")
    manage.add_unit("M2", "k2", 1)
    manage.add_user("alice", "pw", email="alice@example.com")
    manage.add_user("bob", "pw", email="bob@example.com")
    manage.add_user("carol", "pw")
    alarms.mailing_list_add("M1", ["alice", "bob", "carol"])
    database.close()


def server_settings(settings, smtp_port: int, **values):
    base = {"DS_PORT": 0, "BIND_ADDRESS": "127.0.0.1", "EMAIL_HOST": "127.0.0.1", "EMAIL_PORT": smtp_port,
            "EMAIL_TIMEOUT": 5.0, "DEFAULT_FROM_EMAIL": "txm@example.com", "ALARM_EMAIL_RETRY_DELAY": 0.05}
    base.update(values)
    return settings.replace(**base)


@pytest.fixture
def serve(settings, people):
    """Start ``txm serve`` in a thread (with its email worker) against an SMTP port."""
    running = []

    def start(smtp_port: int, **values) -> ServerThread:
        server = ServerThread(server_settings(settings, smtp_port, **values), timeout=TIMEOUT).start()
        running.append(server)
        return server

    yield start
    for server in running:
        server.stop()


def alarm_rows(code: str = "M1") -> list[models.Alarm]:
    models.database.connect(reuse_if_open=True)
    try:
        return list(models.Alarm.select().join(models.Unit).where(models.Unit.code == code).order_by(models.Alarm.id))
    finally:
        models.database.close()


def wait_until(condition, what: str, timeout: float = TIMEOUT):
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def statuses(code: str = "M1") -> list[str]:
    return [a.email_status for a in alarm_rows(code)]


# --- the verb --------------------------------------------------------------------------------------


def test_alarm_emails_every_member_with_the_rendered_message(serve, caplog):
    caplog.set_level(logging.INFO, logger="txm")
    models.database.connect(reuse_if_open=True)
    models.AlarmMessage.create(unit=models.Unit.get(code="M1"), level=2,
                               subject="{{ unit.name }}: alarm {{ level }}",
                               body="{% if data.0 %}The localtime for this Alarm was {{ data.0 }}{% endif %}\n"
                                    "{{ unit.labels.0 }} = {{ data.1 }}\n")
    models.database.close()
    with SMTPServer() as smtp:
        server = serve(smtp.port)
        meter = Meter(server.ttp_port)
        assert meter.ask(ALARM) == "OK"
        [got] = smtp.wait_for(1)
        meter.close()
    assert sorted(got.rcpt_tos) == ["alice@example.com", "bob@example.com"]
    assert got.mail_from == "txm@example.com"
    assert got.message["From"] == "txm@example.com"
    assert got.message["To"] == "alice@example.com, bob@example.com"
    assert got.message["Subject"] == "North tank: alarm 2"
    assert got.body == "The localtime for this Alarm was 2009-1-16 15:30:45\nFlow = 11.5\n"
    assert got.message.get_content_type() == "text/plain"
    [row] = wait_until(lambda: [a for a in alarm_rows() if a.email_status == "sent"], "the alarm marked sent")
    assert (row.level, row.data, row.email_attempts, row.email_error) == (2, ["2009-1-16 15:30:45", "11.5"], 1, "")
    assert row.email_sent is not None and row.email_claimed_until is None
    assert got.message["X-Txm-Alarm"] == str(row.id)
    assert "carol (no email address)" in caplog.text


def test_default_message_without_an_alarm_message(serve):
    with SMTPServer() as smtp:
        server = serve(smtp.port)
        meter = Meter(server.ttp_port)
        assert meter.ask("TTP /al/M1/<7;2026-11-20 08:00:00> s3cret") == "OK"
        [got] = smtp.wait_for(1)
        meter.close()
    assert got.message["Subject"] == "Alarm level 7 from unit M1 (North tank)"
    assert "Unit M1 (North tank) raised an alarm of level 7." in got.body
    assert "data.0: 2026-11-20 08:00:00" in got.body


@pytest.mark.parametrize("line", [
    "TTP /al/M1/2;x s3cret",  # no brackets
    "TTP /al/M1/<x;1> s3cret",  # level not a number
    "TTP /al/M1/<> s3cret",  # no level
    "TTP /al/M1/<1.5;x> s3cret",
    "TTP /al/M1/<99999999999;x> s3cret",  # over 32 bits
    "TTP /al/M1/<1;a><2;b> s3cret",  # two alarms
    "TTP /al/M1/<1;a>x s3cret",
    "TTP /al/M1/<1;" + ";".join(["v"] * 65) + "> s3cret",  # too many items
    "TTP /al/M1/<1;" + "v" * 201 + "> s3cret",  # item too long
    "TTP /al/M1/<1;a\tb> s3cret",  # control character
])
def test_malformed_alarms_are_400_and_store_nothing(serve, line):
    server = serve(closed_port())
    meter = Meter(server.ttp_port)
    assert meter.ask(line) == "400 Bad request"
    assert meter.ask("TTP /al/M1/<1> s3cret") == "OK"  # the connection still serves
    meter.close()
    assert [(a.level, a.data) for a in alarm_rows()] == [(1, [])]


def test_alarm_forms_that_are_accepted(serve):
    server = serve(closed_port(), ALARM_EMAIL_ATTEMPTS=1)
    meter = Meter(server.ttp_port)
    for line in ("TTP /al/M1/<0> s3cret", "TTP /al/M1/< -3 ;;x y, z;ünï> s3cret",
                 "TTP /al/M1/<+4;" + ";".join(["v"] * 64) + "> s3cret", "TTP /al/M1/<5;a/b=c> s3cret"):
        assert meter.ask(line) == "OK", line
    meter.close()
    rows = alarm_rows()
    assert [(a.level, a.data) for a in rows[:2]] == [(0, []), (-3, ["", "x y, z", "ünï"])]
    assert rows[2].data == ["v"] * 64 and rows[3].data == ["a/b=c"]


def test_alarm_authentication_like_uploads(serve):
    server = serve(closed_port())
    meter = Meter(server.ttp_port)
    assert meter.ask("TTP /al/M1/<1;x> wrong") == "402 Unauthorized"
    assert meter.ask("TTP /al/NOPE/<1;x> s3cret") == "405 Unit Not Found"
    assert meter.ask("TTP /al/M1/<bad> wrong") == "402 Unauthorized"  # authentication first
    meter.close()
    assert alarm_rows() == []


def test_unit_without_a_mailing_list_gets_status_none(serve):
    with SMTPServer() as smtp:
        server = serve(smtp.port)
        meter = Meter(server.ttp_port)
        assert meter.ask("TTP /al/M2/<1;x> k2") == "OK"
        meter.close()
        [row] = wait_until(lambda: [a for a in alarm_rows("M2") if a.email_status != "pending"], "status")
        assert smtp.messages == []
    assert (row.email_status, row.email_error) == ("none", "the unit has no mailing list")


def test_min_interval_suppresses_emails_but_stores_alarms(serve):
    with SMTPServer() as smtp:
        server = serve(smtp.port, ALARM_EMAIL_MIN_INTERVAL=3600.0)
        meter = Meter(server.ttp_port)
        for line in ("TTP /al/M1/<1;a> s3cret", "TTP /al/M1/<1;b> s3cret", "TTP /al/M1/<2;c> s3cret",
                     "TTP /al/M1/<1;d> s3cret", "TTP /al/M1/<2;e> s3cret"):
            assert meter.ask(line) == "OK"
        meter.close()
        got = smtp.wait_for(2)
        wait_until(lambda: "pending" not in statuses(), "every alarm decided")
    assert sorted(m.body.split("data.0: ")[1].strip() for m in got) == ["a", "c"]
    assert [(a.data[0], a.email_status) for a in alarm_rows()] == [
        ("a", "sent"), ("b", "suppressed"), ("c", "sent"), ("d", "suppressed"), ("e", "suppressed")]
    assert len(smtp.messages) == 2
