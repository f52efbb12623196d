"""Alarm emails: rendering an alarm's email, sending it over SMTP, and the worker that sends
the emails of stored alarms (claimed in the database, retried, shared by several nodes).

The ``al`` verb that stores alarms is in :mod:`txm.ttp.verbs`; the templates and their sandbox
in :mod:`txm.alarms.templates`; mailing lists in :mod:`txm.alarms.mailing_lists`.
docs/alarms.md describes it all.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import smtplib
import socket
import ssl
import threading
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Sequence

import peewee as pw

from txm.alarms.templates import render_default_message, render_message
from txm.config import Settings
from txm.db import schema
from txm.db.database import close_quietly
from txm.errors import ConfigError, InvalidValue, TxmError

log = logging.getLogger("txm.alarms")

#: What no email header may hold (a line break would start another header).
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class EmailError(TxmError):
    """An email could not be sent. ``permanent`` is true when trying again cannot help
    (the server refused the sender, every recipient, or the login); ``server_wide`` when the
    server could not be reached or talked to at all, so every other email would fail too."""

    def __init__(self, reason: str, permanent: bool = False, server_wide: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.server_wide = server_wide


def alarm_message(unit: Any, level: int) -> schema.AlarmMessage | None:
    """The unit's saved alarm message for the level, if any."""
    return schema.AlarmMessage.get_or_none((schema.AlarmMessage.unit == unit.id) & (schema.AlarmMessage.level == int(level)))


def render_alarm_email(unit: Any, level: int, data: list[str], received: dt.datetime | None = None
                       ) -> tuple[str, str]:
    """(subject, body) of the email for an alarm: from the unit's alarm message for the level,
    or the built-in default when it has none.

    A saved template that fails while rendering (in the sandbox, or beyond the rendering
    process's memory or time) does not stop the email: the default message is sent instead, with
    a line saying what went wrong, and the failure is logged.
    """
    message = alarm_message(unit, level)
    if message is not None:
        try:
            return render_message(message.subject, message.body, unit, level, data, received)
        except InvalidValue as exc:
            log.warning("alarm message of unit %s level %d failed (%s); sending the default message",
                        unit.code, level, exc)
            subject, body = render_default_message(unit, level, data, received)
            return subject, body + f"\n(The alarm message for level {level} failed: {exc})\n"
    return render_default_message(unit, level, data, received)


# --- sending -------------------------------------------------------------------------------------


def check_email_settings(settings: Settings) -> None:
    """Raise :class:`ConfigError` for SMTP settings that cannot work together."""
    if settings.EMAIL_USE_TLS and settings.EMAIL_USE_SSL:
        raise ConfigError("EMAIL_USE_TLS and EMAIL_USE_SSL cannot both be on: EMAIL_USE_TLS starts TLS on a "
                          "plain connection (STARTTLS, usually port 587), EMAIL_USE_SSL connects over TLS "
                          "from the start (usually port 465)")
    for key in ("DEFAULT_FROM_EMAIL", "EMAIL_HOST", "EMAIL_HOST_USER"):
        if _CONTROL_RE.search(settings[key]):
            raise ConfigError(f"{key} may not hold a line break or another control character")


def make_email(settings: Settings, subject: str, body: str, recipients: Sequence[str],
               alarm_id: int | None = None) -> EmailMessage:
    """A plain-text email from DEFAULT_FROM_EMAIL to the recipients."""
    sender = settings.DEFAULT_FROM_EMAIL
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = formatdate(usegmt=True)
    # make_msgid's default domain asks DNS for this host's name, which can stall; the sender's
    # domain serves as well.
    message["Message-ID"] = make_msgid("txm", domain=sender.rpartition("@")[2] or "localhost")
    message["Auto-Submitted"] = "auto-generated"
    if alarm_id is not None:
        message["X-Txm-Alarm"] = str(alarm_id)
    message.set_content(body)
    return message


def _reply_text(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {' '.join(str(text).split())}"


def smtp_send(settings: Settings, message: EmailMessage) -> dict[str, str]:
    """Send one message through the configured SMTP server.

    Returns the recipients the server refused (address: reply) when it accepted some of them.
    Raises :class:`EmailError` with the server's reason otherwise. The password is sent to the
    server only, never logged.
    """
    check_email_settings(settings)
    host, port, timeout = settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT
    where = f"{host}:{port}"
    context = ssl.create_default_context()
    try:
        if settings.EMAIL_USE_SSL:
            client: smtplib.SMTP = smtplib.SMTP_SSL(host, port, timeout=timeout, context=context)
        else:
            client = smtplib.SMTP(host, port, timeout=timeout)
        with client:
            if settings.EMAIL_USE_TLS:
                client.starttls(context=context)
            if settings.EMAIL_HOST_USER:
                client.login(settings.EMAIL_HOST_USER, settings.EMAIL_HOST_PASSWORD)
            refused = client.send_message(message)
    except smtplib.SMTPRecipientsRefused as exc:
        reasons = "; ".join(f"{addr}: {_reply_text(code, text)}" for addr, (code, text) in exc.recipients.items())
        permanent = all(code >= 500 for code, _ in exc.recipients.values())
        raise EmailError(f"the SMTP server {where} refused every recipient ({reasons})", permanent) from None
    except smtplib.SMTPAuthenticationError as exc:
        raise EmailError(f"the SMTP server {where} refused the login of {settings.EMAIL_HOST_USER!r}: "
                         f"{_reply_text(exc.smtp_code, exc.smtp_error)}", True) from None
    except smtplib.SMTPNotSupportedError as exc:
        raise EmailError(f"the SMTP server {where} does not support what the settings ask: {exc}", True) from None
    except smtplib.SMTPResponseException as exc:
        raise EmailError(f"the SMTP server {where} answered {_reply_text(exc.smtp_code, exc.smtp_error)}",
                         exc.smtp_code >= 500) from None
    except smtplib.SMTPServerDisconnected as exc:
        raise EmailError(f"the SMTP server {where} closed the connection: {exc or 'no reason given'}",
                         server_wide=True) from None
    except ssl.SSLError as exc:
        raise EmailError(f"TLS with the SMTP server {where} failed: {exc.reason or exc}", server_wide=True) from None
    except (socket.timeout, TimeoutError):
        raise EmailError(f"the SMTP server {where} did not answer within {timeout:g} s", server_wide=True) from None
    except OSError as exc:
        raise EmailError(f"cannot reach the SMTP server {where}: {exc.strerror or exc}", server_wide=True) from None
    except smtplib.SMTPException as exc:
        raise EmailError(f"sending through the SMTP server {where} failed: {exc}") from None
    return {addr: _reply_text(code, text) for addr, (code, text) in (refused or {}).items()}


def send_test_email(settings: Settings, unit: Any, level: int, data: list[str], recipients: list[str]) -> None:
    """Render the unit's alarm email for ``level`` with ``data`` and send it now to ``recipients``.

    Raises :class:`EmailError` (a :class:`TxmError`) with the SMTP server's reason when it fails,
    and :class:`InvalidValue` when there is no recipient.
    """
    recipients = [r.strip() for r in recipients if r and r.strip()]
    if not recipients:
        raise InvalidValue("a test email needs at least one recipient address")
    subject, body = render_alarm_email(unit, level, data)
    refused = smtp_send(settings, make_email(settings, subject, body, recipients))
    if refused:
        raise EmailError("the SMTP server refused some recipients: "
                         + "; ".join(f"{addr}: {why}" for addr, why in refused.items()), True)


# --- what became of an alarm's email -------------------------------------------------------------

#: What became of an alarm's email (``alarm.email_status``), see docs/alarms.md.
EMAIL_STATUSES = ("pending", "sent", "failed", "suppressed", "none")
#: Email statuses that count as an email for ALARM_EMAIL_MIN_INTERVAL.
EMAILED = ("pending", "sent", "failed")


# --- the email worker ----------------------------------------------------------------------------

#: Seconds between looks at the database for emails that are due, beside the wake-ups the
#: verb gives (other nodes' left-over emails, retries).
POLL_SECONDS = 10.0
#: Alarms claimed per look.
CLAIMS_PER_LOOK = 50
#: Tries at recording an email's outcome in the database, and the first pause between them.
FINISH_ATTEMPTS = 5
FINISH_RETRY_SECONDS = 0.5
#: Longest wait before a failed email is tried again (unless ALARM_EMAIL_RETRY_DELAY is longer):
#: once the SMTP server is back, no email waits longer than this.
MAX_RETRY_DELAY = 600.0


def claim_seconds(settings: Settings) -> float:
    """How long a node holds an email it is sending: longer than any SMTP exchange can take
    (each of its steps may take EMAIL_TIMEOUT), so no other node sends it meanwhile."""
    return 60 + 10 * settings.EMAIL_TIMEOUT


def retry_delay(settings: Settings, attempts: int) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt: the delay doubles each time, up
    to :data:`MAX_RETRY_DELAY` (or ALARM_EMAIL_RETRY_DELAY, when that is longer)."""
    first = settings.ALARM_EMAIL_RETRY_DELAY
    return min(max(MAX_RETRY_DELAY, first), first * 2 ** min(64, max(0, attempts - 1)))


def retry_span(settings: Settings, attempts: int, enough: float) -> float:
    """Seconds from the first of ``attempts`` attempts to the last (no more than ``enough``)."""
    span = 0.0
    for done in range(1, attempts):
        span += retry_delay(settings, done)
        if span >= enough:
            break
    return span


def describe_seconds(seconds: float) -> str:
    """A span of time for people: ``45 s``, ``25 min``, ``3 h 5 min``, ``1 day``, ``2 days 3 h``."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes = whole // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h" + (f" {minutes} min" if minutes else "")
    days, hours = divmod(hours, 24)
    return f"{days} day{'s' if days != 1 else ''}" + (f" {hours} h" if hours else "")


@dataclass
class Recipients:
    addresses: list[str]
    skipped: list[str]  # users left out, with why
    has_list: bool


def recipients_of(unit: Any) -> Recipients:
    """The addresses of the unit's mailing list members; users without one (or inactive) skipped."""
    mailing_list = schema.MailingList.get_or_none(schema.MailingList.unit == unit.id)
    if mailing_list is None:
        return Recipients([], [], False)
    addresses: list[str] = []
    skipped: list[str] = []
    members = (schema.User.select().join(schema.MailingListMember)
               .where(schema.MailingListMember.mailing_list == mailing_list).order_by(schema.User.username))
    for user in members:
        email = (user.email or "").strip()
        if not user.is_active:
            skipped.append(f"{user.username} (inactive)")
        elif not email:
            skipped.append(f"{user.username} (no email address)")
        elif email not in addresses:
            addresses.append(email)
    return Recipients(addresses, skipped, True)


class EmailWorker:
    """Sends the emails of pending alarms, claiming each in the database first.

    Use :meth:`run_once` to send what is due now (tests, scripts) or :meth:`run` in a thread
    (a service of ``txm serve``). Works on the models' database from its own thread's connection.
    """

    def __init__(self, settings: Settings, database):
        check_email_settings(settings)
        self.settings = settings
        self.db = database
        self._wake = threading.Event()
        self._stopping = threading.Event()  # run()'s stop event once it runs
        self.description = (f"Alarm emails through {settings.EMAIL_HOST}:{settings.EMAIL_PORT}"
                            + (" (STARTTLS)" if settings.EMAIL_USE_TLS else " (TLS)" if settings.EMAIL_USE_SSL else ""))
        self._server_down = False  # the last attempt could not reach the SMTP server
        count, max_age = settings.ALARM_EMAIL_ATTEMPTS, settings.ALARM_EMAIL_MAX_AGE
        if count and retry_span(settings, count, max_age) < max_age:
            # Most likely a value from an older configuration file, where 6 was the default.
            log.warning("ALARM_EMAIL_ATTEMPTS %d gives up an alarm email after about %s, before ALARM_EMAIL_MAX_AGE "
                        "(%s): an SMTP outage longer than that loses alarm emails; set it to 0 (or leave it out) to "
                        "retry for ALARM_EMAIL_MAX_AGE", count, describe_seconds(retry_span(settings, count, max_age)),
                        describe_seconds(max_age))

    def wake(self) -> None:
        """Look for due emails now (``txm serve`` calls this once an alarm is committed)."""
        self._wake.set()

    def run(self, stop: threading.Event) -> None:
        """Send due emails until ``stop`` is set (then :meth:`wake` to end the wait at once);
        survive database and SMTP failures."""
        self._stopping = stop
        while not stop.is_set():
            self._wake.clear()
            try:
                self.db.connect(reuse_if_open=True)
                wait = self.run_once()
            except Exception:
                log.exception("the alarm email worker failed; trying again in %g s", POLL_SECONDS)
                wait = POLL_SECONDS
                self._close()
            if not stop.is_set():
                self._wake.wait(wait)
        self._close()

    def _close(self) -> None:
        try:
            self.db.close()
        except Exception:
            log.debug("closing the database failed", exc_info=True)

    def run_once(self) -> float:
        """Send every email due now; return the seconds until the next one may be due.

        When the SMTP server cannot be reached, the look ends there: the other due emails are
        tried at the next look (each alarm's own retries grow meanwhile), so a backlog never
        waits out the SMTP timeout once per email. When an email goes through, the emails
        waiting for a later retry are due at once: the server is back.
        """
        released = False
        while not self._stopping.is_set():
            now = schema.utcnow()
            # Fewest attempts first: a new alarm is not kept behind a backlog of retries, and
            # while the server is down each look tries the email tried least.
            due = [row[0] for row in schema.Alarm.select(schema.Alarm.id).where(self._due(now))
                   .order_by(schema.Alarm.email_attempts, schema.Alarm.id).limit(CLAIMS_PER_LOOK).tuples()]
            again = len(due) == CLAIMS_PER_LOOK
            for alarm_id in due:
                if self._stopping.is_set():
                    break
                status = self.process(alarm_id)
                if status == "sent" and not released:
                    released = True
                    again = self._release_retries() or again
                elif status in ("pending", "failed") and self._server_down:
                    return self._next_wait()
            if not again:
                break
        return self._next_wait()

    def _release_retries(self) -> bool:
        """Emails waiting for a later retry are due now (the SMTP server just took one)."""
        now = schema.utcnow()
        waiting = ((schema.Alarm.email_status == "pending") & (schema.Alarm.email_next_attempt > now)
                   & (schema.Alarm.email_claimed_until.is_null() | (schema.Alarm.email_claimed_until < now)))
        if not schema.Alarm.select().where(waiting).exists():  # no write (no lock) when nothing waits
            return False
        released = schema.Alarm.update(email_next_attempt=now).where(waiting).execute()
        if released:
            log.info("the SMTP server took an email: %d email(s) waiting for a retry are sent now", released)
        return released > 0

    @staticmethod
    def _due(now: dt.datetime):
        return ((schema.Alarm.email_status == "pending")
                & (schema.Alarm.email_next_attempt.is_null() | (schema.Alarm.email_next_attempt <= now))
                & (schema.Alarm.email_claimed_until.is_null() | (schema.Alarm.email_claimed_until < now)))

    def _next_wait(self) -> float:
        """Seconds until a pending email becomes due: a retry's time comes, or a claim (another
        node's) runs out; at most :data:`POLL_SECONDS`."""
        now = schema.utcnow()
        pending = schema.Alarm.email_status == "pending"
        unclaimed = schema.Alarm.email_claimed_until.is_null() | (schema.Alarm.email_claimed_until < now)
        retry = (schema.Alarm.select(pw.fn.MIN(schema.Alarm.email_next_attempt))
                 .where(pending & unclaimed & (schema.Alarm.email_next_attempt > now)).scalar())
        claim = (schema.Alarm.select(pw.fn.MIN(schema.Alarm.email_claimed_until))
                 .where(pending & (schema.Alarm.email_claimed_until >= now)).scalar())
        wait = POLL_SECONDS
        for when in (retry, claim):
            if when is not None:
                if not isinstance(when, dt.datetime):  # SQLite aggregates come back as text
                    when = dt.datetime.fromisoformat(str(when))
                wait = min(wait, (when - now).total_seconds())
        return max(0.01, wait)

    def _claim(self, alarm_id: int) -> dt.datetime | None:
        """Take the alarm's email for this node; None when another node has it or it is done."""
        now = schema.utcnow()
        until = now + dt.timedelta(seconds=claim_seconds(self.settings))
        taken = schema.Alarm.update(email_claimed_until=until).where((schema.Alarm.id == alarm_id) & self._due(now)).execute()
        return until if taken == 1 else None

    def _finish(self, alarm_id: int, claim: dt.datetime, **values: Any) -> None:
        """Record what became of the email. After an email went out, a passing database failure
        (a deadlock, a dropped connection) is tried again: left claimed, the alarm would wait
        for its claim to run out and then be emailed a second time."""
        values["email_claimed_until"] = None
        query = schema.Alarm.update(**values).where((schema.Alarm.id == alarm_id) & (schema.Alarm.email_claimed_until == claim))
        for attempt in range(1, FINISH_ATTEMPTS + 1):
            try:
                updated = query.execute()
                break
            except (pw.OperationalError, pw.InterfaceError) as exc:  # deadlocks, lost connections
                if attempt == FINISH_ATTEMPTS or self._stopping.is_set():
                    raise
                log.warning("alarm %d: recording its email failed (%s); trying again", alarm_id, exc)
                close_quietly(self.db)
                self._stopping.wait(FINISH_RETRY_SECONDS * attempt)
                self.db.connect(reuse_if_open=True)
        if updated != 1:
            log.warning("alarm %d: its claim ran out while this node was sending; another node may send it too",
                        alarm_id)

    def process(self, alarm_id: int) -> str | None:
        """Claim, render and send one alarm's email; return its new status (None: not ours)."""
        claim = self._claim(alarm_id)
        if claim is None:
            return None
        alarm = schema.Alarm.get_or_none(schema.Alarm.id == alarm_id)
        if alarm is None:  # deleted (admin panel) since it was claimed
            return None
        unit = alarm.unit
        found = recipients_of(unit)
        for who in found.skipped:
            log.info("alarm %d of unit %s: mailing list member %s skipped", alarm_id, unit.code, who)
        if not found.addresses:
            why = "the unit has no mailing list" if not found.has_list else "no mailing list member has an email address"
            log.info("alarm %d of unit %s level %d: no email sent (%s)", alarm_id, unit.code, alarm.level, why)
            self._finish(alarm_id, claim, email_status="none", email_error=why)
            return "none"
        attempts = alarm.email_attempts + 1
        self._server_down = False
        try:
            try:
                subject, body = render_alarm_email(unit, alarm.level, list(alarm.data or []), alarm.received)
                message = make_email(self.settings, subject, body, found.addresses, alarm_id)
            except pw.PeeweeException:
                raise  # the database, not the email: the claim runs out and it is tried again
            except Exception as exc:  # trying again would fail the same way
                log.exception("alarm %d of unit %s: the email could not be made", alarm_id, unit.code)
                raise EmailError(f"the email could not be made: {type(exc).__name__}: {exc}", True) from None
            refused = smtp_send(self.settings, message)
        except EmailError as exc:
            self._server_down = exc.server_wide
            given_up = self._given_up(alarm, attempts, exc)
            if given_up:
                log.error("alarm %d of unit %s: email failed after %d attempt(s): %s",
                          alarm_id, unit.code, attempts, given_up)
                self._finish(alarm_id, claim, email_status="failed", email_error=given_up,
                             email_attempts=attempts)
                return "failed"
            delay = retry_delay(self.settings, attempts)
            log.warning("alarm %d of unit %s: email attempt %d failed (%s); trying again in %g s",
                        alarm_id, unit.code, attempts, exc.reason, delay)
            self._finish(alarm_id, claim, email_error=exc.reason, email_attempts=attempts,
                         email_next_attempt=schema.utcnow() + dt.timedelta(seconds=delay))
            return "pending"
        note = "; ".join(f"refused {addr}: {why}" for addr, why in refused.items())
        if note:
            log.warning("alarm %d of unit %s: %s", alarm_id, unit.code, note)
        log.info("alarm %d of unit %s level %d: email sent to %d recipient(s)",
                 alarm_id, unit.code, alarm.level, len(found.addresses) - len(refused))
        self._finish(alarm_id, claim, email_status="sent", email_error=note, email_attempts=attempts,
                     email_sent=schema.utcnow())
        return "sent"

    def _given_up(self, alarm: schema.Alarm, attempts: int, exc: EmailError) -> str:
        """Why the email is not tried again after this failure (its ``email_error``); "" while it is."""
        if exc.permanent:
            return exc.reason
        count, max_age = self.settings.ALARM_EMAIL_ATTEMPTS, self.settings.ALARM_EMAIL_MAX_AGE
        if count and attempts >= count:
            return f"{exc.reason} (given up after {attempts} attempt(s): ALARM_EMAIL_ATTEMPTS)"
        if (schema.utcnow() - alarm.received).total_seconds() >= max_age:
            return (f"{exc.reason} (not sent within ALARM_EMAIL_MAX_AGE ({describe_seconds(max_age)}) of the "
                    f"alarm: given up after {attempts} attempt(s))")
        return ""


# --- the backlog, and sending again ----------------------------------------------------------------


@dataclass
class Backlog:
    """The alarm emails not sent yet (``pending``), the oldest of them, and how many failed."""

    waiting: int
    oldest: schema.Alarm | None
    failed: int


def email_backlog() -> Backlog:
    """What the admin panel shows of alarm emails still owed (a few indexed queries)."""
    pending = schema.Alarm.email_status == "pending"
    oldest = (schema.Alarm.select(schema.Alarm, schema.Unit).join(schema.Unit).where(pending)
              .order_by(schema.Alarm.received, schema.Alarm.id).first())
    return Backlog(schema.Alarm.select().where(pending).count() if oldest is not None else 0, oldest,
                   schema.Alarm.select().where(schema.Alarm.email_status == "failed").count())


def send_again(alarm_ids: Sequence[int]) -> list[schema.Alarm]:
    """Make the emails of these alarms pending again, where they failed; return those alarms
    (as they were). Each gets one more attempt at the email worker's next look (within
    :data:`POLL_SECONDS`), and is retried after that only while younger than ALARM_EMAIL_MAX_AGE
    (or until ALARM_EMAIL_ATTEMPTS, when that is set)."""
    failed = (schema.Alarm.id.in_(list(alarm_ids))) & (schema.Alarm.email_status == "failed")
    alarms = list(schema.Alarm.select(schema.Alarm, schema.Unit).join(schema.Unit).where(failed)
                  .order_by(schema.Alarm.id))
    if alarms:
        (schema.Alarm.update(email_status="pending", email_next_attempt=None, email_claimed_until=None)
         .where(failed & schema.Alarm.id.in_([a.id for a in alarms])).execute())
    return alarms
