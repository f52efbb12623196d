"""Alarms: the ``al`` TTP verb, the alarm email templates, sending them, and mailing lists.

Templates
---------
An alarm email's subject and body are templates in the Django template syntax the Data Server
manual shows (``{{ level }}``, ``{{ unit.name }}``, ``{{ data.0 }}``,
``{% if data.0 %}...{% endif %}``), rendered by Jinja2's sandbox
(:class:`jinja2.sandbox.ImmutableSandboxedEnvironment`) as plain text. A template sees only
``level`` (int), ``data`` (list of text), ``received`` (text) and ``unit``, a :class:`UnitView`
holding plain values: never the database model and never the unit's key. docs/alarms.md is the
reference for administrators.

The public functions the admin panel uses: :func:`check_template`, :func:`render_message`,
:func:`render_alarm_email` and :func:`send_test_email`.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import smtplib
import socket
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Iterable, Sequence

import jinja2
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment

from txm import db as m
from txm.config import Settings
from txm.errors import ConfigError, InvalidValue, TxmError

log = logging.getLogger("txm.alarms")

#: Longest rendered subject; a longer one is cut (a subject is one line).
MAX_SUBJECT_CHARS = 300
#: Longest rendered body; the rest is cut with a note.
MAX_BODY_CHARS = 100_000

DEFAULT_SUBJECT = "Alarm level {{ level }} from unit {{ unit }}"
DEFAULT_BODY = """\
Unit {{ unit.code }}{% if unit.name %} ({{ unit.name }}){% endif %} raised an alarm of level {{ level }}.
{% if received %}
Received by txm at {{ received }} UTC.
{% endif %}{% if data %}
Data sent with the alarm:
{% for item in data %}  data.{{ loop.index0 }}: {{ item }}
{% endfor %}{% endif %}"""


class EmailError(TxmError):
    """An email could not be sent. ``permanent`` is true when trying again cannot help
    (the server refused the sender, every recipient, or the login)."""

    def __init__(self, reason: str, permanent: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


# --- what a template sees ------------------------------------------------------------------------


@dataclass(frozen=True)
class UnitView:
    """The unit as templates see it: plain values only (no key, no database access).

    ``{{ unit }}`` prints ``CODE (name)`` like the unit's own text; ``{{ unit.labels }}`` is the
    label of every channel (``ch<N>`` where none is set).
    """

    id: int
    code: str
    name: str
    channels: int
    labels: tuple[str, ...]
    show_labels: bool
    has_reports: bool
    created: str

    @classmethod
    def of(cls, unit: Any) -> "UnitView":
        """The view of a :class:`txm.db.Unit` (or anything with the same fields)."""
        created = getattr(unit, "created", None)
        return cls(id=int(unit.id), code=str(unit.code), name=str(getattr(unit, "name", "") or ""),
                   channels=int(unit.channels), labels=tuple(unit.channel_labels()),
                   show_labels=bool(getattr(unit, "show_labels", False)),
                   has_reports=bool(getattr(unit, "has_reports", True)),
                   created=created.strftime("%Y-%m-%d %H:%M:%S") if isinstance(created, dt.datetime) else "")

    def __str__(self) -> str:
        return f"{self.code} ({self.name})" if self.name else self.code


_UNIT_FIELDS = frozenset(UnitView.__dataclass_fields__)

# Django's filter arguments ``{{ x|default:"none" }}`` become Jinja's ``{{ x|default("none") }}``.
# Quoted strings are matched first and kept whole, so text inside them is never touched.
_TAG_RE = re.compile(r"(\{\{|\{%)(.*?)(\}\}|%\})", re.S)
_DJANGO_ARG_RE = re.compile(
    r"""("[^"]*"|'[^']*')|(\|\s*[A-Za-z_]\w*)\s*:\s*("[^"]*"|'[^']*'|[-+]?\d+(?:\.\d+)?|[A-Za-z_][\w.]*)""")


def _django_arguments(tag: re.Match) -> str:
    def one(match: re.Match) -> str:
        if match.group(1):
            return match.group(1)
        return f"{match.group(2)}({match.group(3)})"

    return tag.group(1) + _DJANGO_ARG_RE.sub(one, tag.group(2)) + tag.group(3)


class _DjangoFilterArguments(Extension):
    """Accept Django's ``|filter:arg`` form (the one bridge between the two syntaxes)."""

    def preprocess(self, source: str, name: str | None, filename: str | None = None) -> str:
        return _TAG_RE.sub(_django_arguments, source)


class AlarmTemplates(ImmutableSandboxedEnvironment):
    """The sandbox alarm templates run in: plain text, nothing but the context's values.

    On top of Jinja2's immutable sandbox (no ``_`` attributes, no Python internals, no changing
    lists or dicts): no globals but ``range``; of a :class:`UnitView` only its fields.
    """

    def __init__(self) -> None:
        super().__init__(autoescape=False, undefined=jinja2.ChainableUndefined, keep_trailing_newline=True,
                         extensions=[_DjangoFilterArguments])
        self.globals = {"range": self.globals["range"]}

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if isinstance(obj, UnitView):
            return attr in _UNIT_FIELDS
        return super().is_safe_attribute(obj, attr, value)


def _environment() -> AlarmTemplates:
    # A fresh environment per use is cheap next to an SMTP exchange and keeps no global state.
    return AlarmTemplates()


def check_template(text: str) -> None:
    """Raise :class:`InvalidValue` naming the line and the problem when ``text`` does not compile."""
    try:
        _environment().from_string(text or "")
    except jinja2.TemplateSyntaxError as exc:
        raise InvalidValue(f"line {exc.lineno}: {exc.message}") from None


def _render(env: AlarmTemplates, text: str, context: dict[str, Any], limit: int) -> str:
    out: list[str] = []
    size = 0
    for chunk in env.from_string(text).generate(context):
        out.append(chunk)
        size += len(chunk)
        if size > limit:
            break
    return "".join(out)


def _context(unit: Any, level: int, data: Sequence[str], received: dt.datetime | None) -> dict[str, Any]:
    return {"unit": unit if isinstance(unit, UnitView) else UnitView.of(unit), "level": int(level),
            "data": [str(item) for item in data],
            "received": received.strftime("%Y-%m-%d %H:%M:%S") if received else ""}


def _subject_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= MAX_SUBJECT_CHARS else line[:MAX_SUBJECT_CHARS - 3] + "..."


def _body_text(text: str) -> str:
    if len(text) > MAX_BODY_CHARS:
        text = text[:MAX_BODY_CHARS] + "\n[message cut at %d characters]\n" % MAX_BODY_CHARS
    return text


def render_message(subject: str, body: str, unit: Any, level: int, data: Sequence[str],
                   received: dt.datetime | None = None) -> tuple[str, str]:
    """Render a subject and body template (saved or not, e.g. for a preview).

    Raises :class:`InvalidValue` for a template that does not compile or fails while rendering
    (such as ``{{ unit.__class__() }}``).
    """
    env = _environment()
    context = _context(unit, level, data, received)
    rendered = []
    for part, text, limit in (("subject", subject, MAX_SUBJECT_CHARS * 4), ("body", body, MAX_BODY_CHARS)):
        try:
            rendered.append(_render(env, text or "", context, limit))
        except jinja2.TemplateSyntaxError as exc:
            raise InvalidValue(f"{part}: line {exc.lineno}: {exc.message}") from None
        except Exception as exc:  # any failure inside the sandbox is the template's
            raise InvalidValue(f"{part}: {type(exc).__name__}: {exc}") from None
    return _subject_line(rendered[0]), _body_text(rendered[1])


def alarm_message(unit: Any, level: int) -> m.AlarmMessage | None:
    """The unit's saved alarm message for the level, if any."""
    return m.AlarmMessage.get_or_none((m.AlarmMessage.unit == unit.id) & (m.AlarmMessage.level == int(level)))


def render_alarm_email(unit: Any, level: int, data: list[str], received: dt.datetime | None = None
                       ) -> tuple[str, str]:
    """(subject, body) of the email for an alarm: from the unit's alarm message for the level,
    or the built-in default when it has none.

    A saved template that fails while rendering does not stop the email: the default message is
    sent instead, with a line saying what went wrong, and the failure is logged.
    """
    message = alarm_message(unit, level)
    if message is not None:
        try:
            return render_message(message.subject, message.body, unit, level, data, received)
        except InvalidValue as exc:
            log.warning("alarm message of unit %s level %d failed (%s); sending the default message",
                        unit.code, level, exc)
            subject, body = render_message(DEFAULT_SUBJECT, DEFAULT_BODY, unit, level, data, received)
            return subject, body + f"\n(The alarm message for level {level} failed: {exc})\n"
    return render_message(DEFAULT_SUBJECT, DEFAULT_BODY, unit, level, data, received)


# --- sending -------------------------------------------------------------------------------------


def check_email_settings(settings: Settings) -> None:
    """Raise :class:`ConfigError` for SMTP settings that cannot work together."""
    if settings.EMAIL_USE_TLS and settings.EMAIL_USE_SSL:
        raise ConfigError("EMAIL_USE_TLS and EMAIL_USE_SSL cannot both be on: EMAIL_USE_TLS starts TLS on a "
                          "plain connection (STARTTLS, usually port 587), EMAIL_USE_SSL connects over TLS "
                          "from the start (usually port 465)")


def make_email(settings: Settings, subject: str, body: str, recipients: Sequence[str],
               alarm_id: int | None = None) -> EmailMessage:
    """A plain-text email from DEFAULT_FROM_EMAIL to the recipients."""
    sender = settings.DEFAULT_FROM_EMAIL
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = formatdate(localtime=False)
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
        raise EmailError(f"the SMTP server {where} closed the connection: {exc or 'no reason given'}") from None
    except ssl.SSLError as exc:
        raise EmailError(f"TLS with the SMTP server {where} failed: {exc.reason or exc}") from None
    except (socket.timeout, TimeoutError):
        raise EmailError(f"the SMTP server {where} did not answer within {timeout:g} s") from None
    except OSError as exc:
        raise EmailError(f"cannot reach the SMTP server {where}: {exc.strerror or exc}") from None
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
