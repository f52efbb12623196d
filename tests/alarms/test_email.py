"""Alarms over TTP and their emails, against a real SMTP server (aiosmtpd on port 0)."""

from __future__ import annotations

import datetime as dt
import logging
from contextlib import closing

import pytest

from tests.alarms.conftest import server_settings, wait_until
from tests.conftest import fail_the_database
from tests.smtp import SilentServer, SMTPServer, closed_port, make_certificate
from txm import manage
from txm.alarms.email import (
    POLL_SECONDS,
    EmailError,
    EmailWorker,
    recipients_of,
    send_test_email,
)
from txm.alarms.mailing_lists import mailing_list_add
from txm.db import schema
from txm.db.database import make_database
from txm.errors import ConfigError, InvalidValue
from txm.serve import ServerThread
from txm.ttp.handler import Handler
from txm.ttp.verbs import BUILTIN_VERBS

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
    mailing_list_add("M1", ["alice", "bob", "carol"])
    database.close()


def alarm_rows(code: str = "M1") -> list[schema.Alarm]:
    with schema.database.connection_context():
        return list(schema.Alarm.select().join(schema.Unit).where(schema.Unit.code == code).order_by(schema.Alarm.id))


def statuses(code: str = "M1") -> list[str]:
    return [a.email_status for a in alarm_rows(code)]


# --- the verb --------------------------------------------------------------------------------------


def test_alarm_emails_every_member_with_the_rendered_message(serve, caplog, open_meter):
    caplog.set_level(logging.INFO, logger="txm")
    with schema.database.connection_context():
        schema.AlarmMessage.create(unit=schema.Unit.get(code="M1"), level=2,
                                   subject="{{ unit.name }}: alarm {{ level }}",
                                   body="{% if data.0 %}The localtime for this Alarm was {{ data.0 }}{% endif %}\n"
                                        "{{ unit.labels.0 }} = {{ data.1 }}\n")
    with SMTPServer() as smtp:
        server = serve(smtp.port)
        meter = open_meter(server.ttp_port)
        assert meter.ask(ALARM) == "OK"
        [got] = smtp.wait_for(1)
    assert sorted(got.rcpt_tos) == ["alice@example.com", "bob@example.com"]
    assert got.mail_from == "txm@example.com"
    assert got.message["From"] == "txm@example.com"
    assert got.message["To"] == "alice@example.com, bob@example.com"
    assert got.message["Subject"] == "North tank: alarm 2"
    assert got.body == "The localtime for this Alarm was 2009-1-16 15:30:45\nFlow = 11.5\n"
    assert got.message.get_content_type() == "text/plain"
    assert got.message["Auto-Submitted"] == "auto-generated" and got.message["Date"].datetime.utcoffset() == dt.timedelta(0)
    [row] = wait_until(lambda: [a for a in alarm_rows() if a.email_status == "sent"], "the alarm marked sent")
    assert (row.level, row.data, row.email_attempts, row.email_error) == (2, ["2009-1-16 15:30:45", "11.5"], 1, "")
    assert row.email_sent is not None and row.email_claimed_until is None
    assert got.message["X-Txm-Alarm"] == str(row.id)
    assert "carol (no email address)" in caplog.text


def test_default_message_without_an_alarm_message(serve, open_meter):
    with SMTPServer() as smtp:
        server = serve(smtp.port)
        meter = open_meter(server.ttp_port)
        assert meter.ask("TTP /al/M1/<7;2026-11-20 08:00:00> s3cret") == "OK"
        [got] = smtp.wait_for(1)
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
    "TTP /al/M1/<1;a\x85b> s3cret",  # C1 control character (NEL)
])
def test_malformed_alarms_are_400_and_store_nothing(serve, line, open_meter):
    server = serve(closed_port())
    meter = open_meter(server.ttp_port)
    assert meter.ask(line) == "400 Bad request"
    assert meter.ask("TTP /al/M1/<1> s3cret") == "OK"  # the connection still serves
    assert [(a.level, a.data) for a in alarm_rows()] == [(1, [])]


def test_alarm_forms_that_are_accepted(serve, open_meter):
    server = serve(closed_port(), ALARM_EMAIL_ATTEMPTS=1)
    meter = open_meter(server.ttp_port)
    for line in ("TTP /al/M1/<0> s3cret", "TTP /al/M1/< -3 ;;x y, z;ünï> s3cret",
                 "TTP /al/M1/<+4;" + ";".join(["v"] * 64) + "> s3cret", "TTP /al/M1/<5;a/b=c> s3cret"):
        assert meter.ask(line) == "OK", line
    rows = alarm_rows()
    assert [(a.level, a.data) for a in rows[:2]] == [(0, []), (-3, ["", "x y, z", "ünï"])]
    assert rows[2].data == ["v"] * 64 and rows[3].data == ["a/b=c"]


def test_alarm_authentication_like_uploads(serve, open_meter):
    server = serve(closed_port())
    meter = open_meter(server.ttp_port)
    assert meter.ask("TTP /al/M1/<1;x> wrong") == "402 Unauthorized"
    assert meter.ask("TTP /al/NOPE/<1;x> s3cret") == "405 Unit Not Found"
    assert meter.ask("TTP /al/M1/<bad> wrong") == "402 Unauthorized"  # authentication first
    assert alarm_rows() == []


def test_unit_without_a_mailing_list_gets_status_none(serve, open_meter):
    with SMTPServer() as smtp:
        server = serve(smtp.port)
        meter = open_meter(server.ttp_port)
        assert meter.ask("TTP /al/M2/<1;x> k2") == "OK"
        [row] = wait_until(lambda: [a for a in alarm_rows("M2") if a.email_status != "pending"], "status")
        assert smtp.messages == []
    assert (row.email_status, row.email_error) == ("none", "the unit has no mailing list")


def test_min_interval_suppresses_emails_but_stores_alarms(serve, open_meter):
    with SMTPServer() as smtp:
        server = serve(smtp.port, ALARM_EMAIL_MIN_INTERVAL=3600.0)
        meter = open_meter(server.ttp_port)
        for line in ("TTP /al/M1/<1;a> s3cret", "TTP /al/M1/<1;b> s3cret", "TTP /al/M1/<2;c> s3cret",
                     "TTP /al/M1/<1;d> s3cret", "TTP /al/M1/<2;e> s3cret"):
            assert meter.ask(line) == "OK"
        got = smtp.wait_for(2)
        wait_until(lambda: "pending" not in statuses(), "every alarm decided")
    assert sorted(m.body.split("data.0: ")[1].strip() for m in got) == ["a", "c"]
    assert [(a.data[0], a.email_status) for a in alarm_rows()] == [
        ("a", "sent"), ("b", "suppressed"), ("c", "sent"), ("d", "suppressed"), ("e", "suppressed")]
    assert len(smtp.messages) == 2


def test_min_interval_lets_an_alarm_through_once_the_interval_has_passed(serve, open_meter):
    with schema.database.connection_context():
        two_hours_ago = schema.utcnow() - dt.timedelta(hours=2)
        schema.Alarm.create(unit=schema.Unit.get(code="M1"), level=1, data=["old"], received=two_hours_ago,
                            email_status="sent", email_sent=two_hours_ago)
    with SMTPServer() as smtp:
        server = serve(smtp.port, ALARM_EMAIL_MIN_INTERVAL=3600.0)
        meter = open_meter(server.ttp_port)
        assert meter.ask("TTP /al/M1/<1;new> s3cret") == "OK"
        assert meter.ask("TTP /al/M1/<1;newer> s3cret") == "OK"
        [got] = smtp.wait_for(1)
        wait_until(lambda: "pending" not in statuses(), "every alarm decided")
    assert "data.0: new" in got.body
    assert statuses() == ["sent", "sent", "suppressed"]


def test_recipients_skip_members_without_an_address_and_inactive_users(settings, people):
    with schema.database.connection_context():
        schema.User.update(is_active=False).where(schema.User.username == "bob").execute()
        found = recipients_of(schema.Unit.get(code="M1"))
        assert found.addresses == ["alice@example.com"]
        assert found.skipped == ["bob (inactive)", "carol (no email address)"]
        assert not recipients_of(schema.Unit.get(code="M2")).has_list


# --- SMTP settings ---------------------------------------------------------------------------------


@pytest.fixture
def certificate(tmp_path, monkeypatch):
    """A self-signed certificate for 127.0.0.1, trusted by this process's TLS clients."""
    cert, key = make_certificate(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    return cert, key


def test_starttls_and_login_are_honoured(serve, certificate, caplog, open_meter):
    caplog.set_level(logging.DEBUG, logger="txm")
    with SMTPServer(starttls_cert=certificate, login=("mailer", "pa55-w0rd")) as smtp:
        server = serve(smtp.port, EMAIL_USE_TLS=True, EMAIL_HOST_USER="mailer", EMAIL_HOST_PASSWORD="pa55-w0rd")
        meter = open_meter(server.ttp_port)
        assert meter.ask(ALARM) == "OK"
        [got] = smtp.wait_for(1)
    assert got.tls and got.login == "mailer"
    wait_until(lambda: statuses() == ["sent"], "the alarm marked sent")
    assert "pa55-w0rd" not in caplog.text


def test_implicit_tls_is_honoured(serve, certificate, open_meter):
    with SMTPServer(tls_cert=certificate, login=("mailer", "pw")) as smtp:
        server = serve(smtp.port, EMAIL_USE_SSL=True, EMAIL_HOST_USER="mailer", EMAIL_HOST_PASSWORD="pw")
        meter = open_meter(server.ttp_port)
        assert meter.ask(ALARM) == "OK"
        [got] = smtp.wait_for(1)
    assert got.tls and got.login == "mailer"


def test_a_server_that_requires_starttls_refuses_plain_settings(serve, certificate, open_meter):
    with SMTPServer(starttls_cert=certificate) as smtp:
        server = serve(smtp.port)  # EMAIL_USE_TLS off
        meter = open_meter(server.ttp_port)
        assert meter.ask(ALARM) == "OK"
        [row] = wait_until(lambda: [a for a in alarm_rows() if a.email_status == "failed"], "the alarm failed")
        assert smtp.messages == []
    assert "530" in row.email_error and "STARTTLS" in row.email_error


def test_wrong_password_fails_at_once_with_the_reason_and_is_not_logged(serve, certificate, caplog, open_meter):
    caplog.set_level(logging.DEBUG, logger="txm")
    with SMTPServer(starttls_cert=certificate, login=("mailer", "right")) as smtp:
        server = serve(smtp.port, EMAIL_USE_TLS=True, EMAIL_HOST_USER="mailer", EMAIL_HOST_PASSWORD="wr0ng-secret")
        meter = open_meter(server.ttp_port)
        assert meter.ask(ALARM) == "OK"
        [row] = wait_until(lambda: [a for a in alarm_rows() if a.email_status == "failed"], "the alarm failed")
    assert row.email_attempts == 1  # a refused login is not tried again
    assert "refused the login of 'mailer'" in row.email_error and "535" in row.email_error
    assert "wr0ng-secret" not in caplog.text and "wr0ng-secret" not in row.email_error


def test_an_untrusted_certificate_is_refused(serve, tmp_path, open_meter):
    cert = make_certificate(tmp_path)  # not made trusted
    with SMTPServer(starttls_cert=cert) as smtp:
        server = serve(smtp.port, EMAIL_USE_TLS=True, ALARM_EMAIL_ATTEMPTS=2)
        meter = open_meter(server.ttp_port)
        assert meter.ask(ALARM) == "OK"
        [row] = wait_until(lambda: [a for a in alarm_rows() if a.email_status == "failed"], "the alarm failed")
        assert smtp.messages == []
    assert "CERTIFICATE_VERIFY_FAILED" in row.email_error


def test_tls_and_ssl_together_stop_the_start(settings, people):
    with pytest.raises(ConfigError, match="EMAIL_USE_TLS and EMAIL_USE_SSL"):
        ServerThread(server_settings(settings, 25, EMAIL_USE_TLS=True, EMAIL_USE_SSL=True)).start()


def test_a_sender_with_a_line_break_stops_the_start(settings, people):
    bad = server_settings(settings, 25, DEFAULT_FROM_EMAIL="txm@example.com\nBcc: someone@example.com")
    with pytest.raises(ConfigError, match="DEFAULT_FROM_EMAIL may not hold a line break"):
        ServerThread(bad).start()


# --- failures, retries, restarts --------------------------------------------------------------------


def test_smtp_down_retries_then_fails_and_ttp_is_never_held(serve, caplog, open_meter):
    caplog.set_level(logging.INFO, logger="txm")
    with SilentServer() as silent:
        server = serve(silent.port, ALARM_EMAIL_ATTEMPTS=3, EMAIL_TIMEOUT=30.0)
        meter = open_meter(server.ttp_port)
        assert meter.ask(ALARM) == "OK"
        # The worker is now inside an SMTP exchange that does not move...
        assert silent.connected.wait(TIMEOUT)
        # ...and meters are answered all the same, alarms and uploads alike.
        assert meter.ask("TTP /al/M1/<3;second> s3cret") == "OK"
        assert meter.ask("TTP /up/M1/<2026-1-1 0:0:0;1;2> s3cret") == "OK"
        assert statuses() == ["pending", "pending"]
        silent.release()  # the hung server goes away: every further attempt is refused
        rows = wait_until(lambda: [a for a in alarm_rows() if a.email_status == "failed"] if
                          "pending" not in statuses() else None, "both alarms failed")
    assert [a.email_status for a in rows] == ["failed", "failed"]
    assert all(a.email_attempts == 3 for a in rows)
    assert all("cannot reach the SMTP server 127.0.0.1" in a.email_error for a in rows)
    assert "email failed after 3 attempt(s)" in caplog.text


def test_temporary_refusals_are_retried_until_sent(serve, open_meter):
    with SMTPServer() as smtp:
        smtp.refusals = ["451 4.3.0 try again later", "452 4.3.1 out of space"]
        server = serve(smtp.port, ALARM_EMAIL_ATTEMPTS=4)
        meter = open_meter(server.ttp_port)
        assert meter.ask(ALARM) == "OK"
        smtp.wait_for(1)
        [row] = wait_until(lambda: [a for a in alarm_rows() if a.email_status == "sent"], "the alarm sent")
    assert row.email_attempts == 3


def test_a_permanent_refusal_fails_at_once(serve, open_meter):
    with SMTPServer() as smtp:
        smtp.refusals = ["554 5.7.1 message refused"]
        server = serve(smtp.port, ALARM_EMAIL_ATTEMPTS=5)
        meter = open_meter(server.ttp_port)
        assert meter.ask(ALARM) == "OK"
        [row] = wait_until(lambda: [a for a in alarm_rows() if a.email_status == "failed"], "the alarm failed")
        assert smtp.messages == []
    assert row.email_attempts == 1 and "554 5.7.1 message refused" in row.email_error


def test_restart_sends_the_emails_left_pending(settings, people, open_meter):
    port = closed_port()
    values = {"ALARM_EMAIL_ATTEMPTS": 100, "ALARM_EMAIL_RETRY_DELAY": 0.5}
    with ServerThread(server_settings(settings, port, **values), timeout=TIMEOUT) as server:
        meter = open_meter(server.ttp_port)
        assert meter.ask("TTP /al/M1/<1;first> s3cret") == "OK"
        assert meter.ask("TTP /al/M1/<2;second> s3cret") == "OK"
        wait_until(lambda: all(a.email_attempts >= 1 for a in alarm_rows()), "failed attempts")
    # The server is stopped: both emails are still owed.
    assert statuses() == ["pending", "pending"]
    with SMTPServer() as smtp:
        with ServerThread(server_settings(settings, smtp.port, **values), timeout=TIMEOUT):
            got = smtp.wait_for(2)
            wait_until(lambda: statuses() == ["sent", "sent"], "both marked sent")
    assert sorted(m.body.split("data.0: ")[1].strip() for m in got) == ["first", "second"]


def test_emails_of_a_node_that_died_before_sending_go_out_at_the_next_start(settings, people):
    """Alarms stored but never sent (the process was killed), one with a claim that ran out."""
    with schema.database.connection_context():
        unit = schema.Unit.get(code="M1")
        now = schema.utcnow()
        schema.Alarm.create(unit=unit, level=1, data=["never tried"], received=now)
        schema.Alarm.create(unit=unit, level=1, data=["claim ran out"], received=now,
                            email_claimed_until=now - dt.timedelta(seconds=1))
        schema.Alarm.create(unit=unit, level=1, data=["claimed by a live node"], received=now,
                            email_claimed_until=now + dt.timedelta(hours=1))
    with SMTPServer() as smtp:
        with ServerThread(server_settings(settings, smtp.port), timeout=TIMEOUT):
            got = smtp.wait_for(2)
            wait_until(lambda: statuses()[:2] == ["sent", "sent"], "both marked sent")
    assert sorted(m.body.split("data.0: ")[1].strip() for m in got) == ["claim ran out", "never tried"]
    assert statuses()[2] == "pending"


# --- send_test_email -------------------------------------------------------------------------------


def test_send_test_email(settings, people):
    with schema.database.connection_context():
        unit = schema.Unit.get(code="M1")
        with SMTPServer() as smtp:
            send_test_email(server_settings(settings, smtp.port), unit, 4, ["2026-1-1 0:0:0", "9"],
                            ["ops@example.com"])
            [got] = smtp.wait_for(1)
        assert got.rcpt_tos == ["ops@example.com"]
        assert got.message["Subject"] == "Alarm level 4 from unit M1 (North tank)"
        with pytest.raises(EmailError, match="cannot reach the SMTP server 127.0.0.1:.*refused"):
            send_test_email(server_settings(settings, closed_port()), unit, 4, [], ["ops@example.com"])
        with pytest.raises(InvalidValue):
            send_test_email(server_settings(settings, closed_port()), unit, 4, [], [" "])


# --- the verb inside the handler, without sockets ----------------------------------------------------


def test_handler_stores_alarms_in_the_pass_and_wakes_the_worker_after_the_commit(settings, people, database):
    from txm.ttp.parser import parse_request

    seen: list[int] = []

    def wake() -> None:  # runs after the commit: another connection sees the alarms
        other = make_database(settings)
        with other.connection_context():
            seen.append(other.execute_sql("SELECT COUNT(*) FROM alarm").fetchone()[0])

    with closing(Handler(settings, database, BUILTIN_VERBS)) as handler:
        handler.open()
        handler.on_commit("alarm", wake)
        replies = handler.handle([parse_request(line.encode()) for line in (
            "TTP /al/M1/<1;a> s3cret", "TTP /al/M1/<x> s3cret", "TTP /up/M1/<2020-1-1 0:0:0;1;2> s3cret",
            "TTP /al/M1/<2;b;c> s3cret")])
    assert replies == ["OK", "400 Bad request", "OK", "OK"]
    assert seen == [2, 2]  # once per stored alarm, each time with both committed
    assert [(a.level, a.data, a.email_status) for a in alarm_rows()] == [(1, ["a"], "pending"),
                                                                         (2, ["b", "c"], "pending")]


def test_alarms_with_a_commit_interval_are_emailed_once_committed(serve, open_meter):
    with SMTPServer() as smtp:
        server = serve(smtp.port, COMMIT_INTERVAL=1000)
        meter = open_meter(server.ttp_port)
        assert meter.ask(ALARM) == "OK"  # answered before the commit
        smtp.wait_for(1)
    wait_until(lambda: statuses() == ["sent"], "the alarm marked sent")


def test_the_worker_waits_for_a_claim_held_by_another_node_without_spinning(settings, people, database):
    now = schema.utcnow()
    schema.Alarm.create(unit=schema.Unit.get(code="M1"), level=1, data=[], received=now, email_next_attempt=now,
                        email_claimed_until=now + dt.timedelta(seconds=300))
    worker = EmailWorker(server_settings(settings, closed_port()), database)
    # Nothing is due: the one pending email is another node's for 5 minutes, so look again
    # after the usual poll interval, not at once.
    assert worker.run_once() == POLL_SECONDS
    schema.Alarm.update(email_claimed_until=now + dt.timedelta(seconds=3)).execute()
    assert 1 < worker.run_once() <= 3
    assert statuses() == ["pending"]


def test_a_sent_email_is_recorded_through_a_passing_database_failure(settings, people, database, caplog):
    """The email went out, then recording it failed: it is tried again, not left to go twice."""
    alarm = schema.Alarm.create(unit=schema.Unit.get(code="M1"), level=1, data=["x"], received=schema.utcnow())
    with SMTPServer() as smtp:
        worker = EmailWorker(server_settings(settings, smtp.port), database)
        if settings.DATABASE_ENGINE == "sqlite3":
            database.execute_sql("PRAGMA busy_timeout = 200")  # fail fast while the lock is held
        smtp.on_data = lambda: fail_the_database(settings)  # as the email arrives, before it is recorded
        with caplog.at_level(logging.WARNING, logger="txm.alarms"):
            assert worker.process(alarm.id) == "sent"
        assert len(smtp.messages) == 1
    assert f"alarm {alarm.id}: recording its email failed" in caplog.text
    [row] = alarm_rows()
    assert (row.email_status, row.email_claimed_until, row.email_attempts) == ("sent", None, 1)
