"""The schema: txm's tables as peewee models, imported everywhere as ``from txm.db import schema``.

The models are bound to :data:`database`, a :class:`peewee.DatabaseProxy` that
:func:`txm.db.database.open_database` initialises at run time, so the same models serve
SQLite, PostgreSQL and MySQL/MariaDB. docs/schema.md describes every table for people who
write their own SQL reports.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

import peewee as pw

from txm.errors import InvalidValue, NotFound

#: Channels (data fields) a unit may have; the ``sample`` table has one column per channel.
MAX_CHANNELS = 32
#: Unit codes are alphanumeric, as the manual asks: they travel in TTP request paths.
UNIT_CODE_RE = re.compile(r"^[A-Za-z0-9]{1,64}$")

database = pw.DatabaseProxy()


def utcnow() -> dt.datetime:
    """Naive UTC now; every "received"/"when" column holds naive UTC."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class JSONField(pw.TextField):
    """JSON kept in a TEXT column, so it reads the same on every engine."""

    def db_value(self, value: Any) -> str | None:
        return None if value is None else json.dumps(value, separators=(",", ":"))

    def python_value(self, value: Any) -> Any:
        return None if value is None else json.loads(value)


class SampleIdField(pw.BigAutoField):
    """A 64-bit auto-increment id that is never handed out twice.

    SQLite reuses the highest rowid after the newest rows are deleted unless the column is
    declared AUTOINCREMENT; incremental exports and LoggerNet record numbers rely on ids that
    only grow, so on SQLite this field adds it. PostgreSQL and MySQL never reuse ids.
    """

    def ddl(self, ctx):
        node = super().ddl(ctx)
        if ctx.state.field_types.get(self.field_type) == "INTEGER":  # SQLite's rowid alias
            return pw.NodeList((node, pw.SQL("AUTOINCREMENT")))
        return node


class LongTextField(pw.TextField):
    """Text of any length, up to megabytes: MySQL's TEXT holds 64 KB, so there it is LONGTEXT;
    SQLite and PostgreSQL have one TEXT for every length."""

    def ddl_datatype(self, ctx):
        if ctx.state.field_types.get("AUTO", "").endswith("AUTO_INCREMENT"):  # MySQL's own type names
            return pw.SQL("LONGTEXT")
        return super().ddl_datatype(ctx)


class BaseModel(pw.Model):
    class Meta:
        database = database
        legacy_table_names = False


# --- users, groups, permissions -------------------------------------------------------------


class Group(BaseModel):
    name = pw.CharField(max_length=150, unique=True)

    class Meta:
        table_name = "auth_group"

    def __str__(self) -> str:
        return self.name


class User(BaseModel):
    """A person who logs in to the web interface or the admin panel."""

    username = pw.CharField(max_length=150, unique=True)
    password = pw.CharField(max_length=256)
    email = pw.CharField(max_length=254, default="")
    first_name = pw.CharField(max_length=150, default="")
    last_name = pw.CharField(max_length=150, default="")
    is_staff = pw.BooleanField(default=False)
    is_superuser = pw.BooleanField(default=False)
    is_active = pw.BooleanField(default=True)
    last_login = pw.DateTimeField(null=True)
    date_joined = pw.DateTimeField(default=utcnow)

    class Meta:
        table_name = "auth_user"

    def __str__(self) -> str:
        return self.username


class UserGroup(BaseModel):
    user = pw.ForeignKeyField(User, on_delete="CASCADE", backref="group_links")
    group = pw.ForeignKeyField(Group, on_delete="CASCADE", backref="user_links")

    class Meta:
        table_name = "auth_user_groups"
        indexes = ((("user", "group"), True),)


class UserPermission(BaseModel):
    """A permission given to one user: ``<action>_<model>`` such as ``change_unit``."""

    user = pw.ForeignKeyField(User, on_delete="CASCADE", backref="permission_links")
    codename = pw.CharField(max_length=100)

    class Meta:
        table_name = "auth_user_permissions"
        indexes = ((("user", "codename"), True),)


class GroupPermission(BaseModel):
    group = pw.ForeignKeyField(Group, on_delete="CASCADE", backref="permission_links")
    codename = pw.CharField(max_length=100)

    class Meta:
        table_name = "auth_group_permissions"
        indexes = ((("group", "codename"), True),)


# --- units and their data -------------------------------------------------------------------


class Unit(BaseModel):
    """A Tiger meter controller: identified by code, authenticated by key."""

    code = pw.CharField(max_length=64, unique=True)
    key = pw.CharField(max_length=128)
    name = pw.CharField(max_length=200, default="")
    channels = pw.IntegerField(default=1)  # the manual's "number of data fields"
    labels = JSONField(default=list)  # channel labels, "" where a channel has none
    show_labels = pw.BooleanField(default=False)  # TTP downloads answer L1=11 L2=22 ...
    graph_width = pw.IntegerField(default=800)
    graph_height = pw.IntegerField(default=400)
    graph_axes = JSONField(default=list)  # [{"label": "Flow", "channels": [1, 2]}, ...]; [] = one axis, all
    has_reports = pw.BooleanField(default=True)  # CSV downloads offered
    report_fields = JSONField(default=list)  # channel numbers exported; [] = all
    created = pw.DateTimeField(default=utcnow)

    class Meta:
        table_name = "unit"

    def __str__(self) -> str:
        return f"{self.code} ({self.name})" if self.name else self.code

    @classmethod
    def by_code(cls, code: str) -> "Unit":
        """The unit with this code, or :class:`NotFound`: how every part of txm looks a unit up
        by the code a person or a page gave."""
        unit = cls.get_or_none(cls.code == code)
        if unit is None:
            raise NotFound(f"there is no unit with code {code!r}; see txm unit list")
        return unit

    def channel_labels(self) -> list[str]:
        """A label for every channel: the configured one, else ``ch<N>``."""
        labels = list(self.labels or [])
        return [(labels[i] if i < len(labels) and labels[i] else f"ch{i + 1}") for i in range(self.channels)]


class UserUnit(BaseModel):
    """A unit a (non-superuser) user may see in the web interface."""

    user = pw.ForeignKeyField(User, on_delete="CASCADE", backref="unit_links")
    unit = pw.ForeignKeyField(Unit, on_delete="CASCADE", backref="user_links")

    class Meta:
        table_name = "auth_user_units"
        indexes = ((("user", "unit"), True),)


class GroupUnit(BaseModel):
    group = pw.ForeignKeyField(Group, on_delete="CASCADE", backref="unit_links")
    unit = pw.ForeignKeyField(Unit, on_delete="CASCADE", backref="group_links")

    class Meta:
        table_name = "auth_group_units"
        indexes = ((("group", "unit"), True),)


class Sample(BaseModel):
    """One timestamped sample of a unit: channel values in ``ch1`` .. ``ch32``."""

    id = SampleIdField()
    # No index of its own: the unique (unit, timestamp) index serves every lookup by unit, and a
    # second index would double the cost of each stored sample.
    unit = pw.ForeignKeyField(Unit, on_delete="CASCADE", backref="samples", index=False)
    timestamp = pw.DateTimeField()  # the meter's time, microseconds kept
    received = pw.DateTimeField(default=utcnow)  # server time (UTC) it arrived

    class Meta:
        table_name = "sample"
        indexes = ((("unit", "timestamp"), True),)

    def values(self) -> list[float | None]:
        return [getattr(self, f"ch{i}") for i in range(1, self.unit.channels + 1)]


CHANNEL_COLUMNS = tuple(f"ch{i}" for i in range(1, MAX_CHANNELS + 1))
for _name in CHANNEL_COLUMNS:
    Sample._meta.add_field(_name, pw.DoubleField(null=True))


class Alarm(BaseModel):
    """An alarm a unit raised over TTP, and what became of its email."""

    id = pw.BigAutoField()
    unit = pw.ForeignKeyField(Unit, on_delete="CASCADE", backref="alarms")
    level = pw.IntegerField()
    data = JSONField(default=list)  # the strings the meter sent after the level
    received = pw.DateTimeField(default=utcnow, index=True)
    email_status = pw.CharField(max_length=16, default="pending", index=True)  # pending/sent/failed/suppressed/none
    email_error = pw.TextField(default="")
    email_attempts = pw.IntegerField(default=0)
    email_next_attempt = pw.DateTimeField(null=True)
    email_claimed_until = pw.DateTimeField(null=True)  # a node sending it holds it until then
    email_sent = pw.DateTimeField(null=True)

    class Meta:
        table_name = "alarm"


class MailingList(BaseModel):
    """The one mailing list of a unit: users who receive its alarm emails."""

    unit = pw.ForeignKeyField(Unit, on_delete="CASCADE", unique=True, backref="mailing_lists")
    name = pw.CharField(max_length=200, default="")

    class Meta:
        table_name = "mailing_list"


class MailingListMember(BaseModel):
    mailing_list = pw.ForeignKeyField(MailingList, on_delete="CASCADE", backref="members")
    user = pw.ForeignKeyField(User, on_delete="CASCADE", backref="mailing_list_links")

    class Meta:
        table_name = "mailing_list_member"
        indexes = ((("mailing_list", "user"), True),)


class AlarmMessage(BaseModel):
    """Subject and body templates for a unit's alarm emails at one level."""

    unit = pw.ForeignKeyField(Unit, on_delete="CASCADE", backref="alarm_messages")
    level = pw.IntegerField()
    subject = pw.CharField(max_length=500)
    body = pw.TextField()

    class Meta:
        table_name = "alarm_message"
        indexes = ((("unit", "level"), True),)


class View(BaseModel):
    """A multiple-meter display."""

    name = pw.CharField(max_length=200)
    refresh_seconds = pw.IntegerField(default=10)

    class Meta:
        table_name = "view"


class ViewEntry(BaseModel):
    """One unit shown in a view, with the channels (1-based numbers) to show."""

    view = pw.ForeignKeyField(View, on_delete="CASCADE", backref="entries")
    unit = pw.ForeignKeyField(Unit, on_delete="CASCADE", backref="view_entries")
    channels = JSONField(default=list)  # [] = every channel
    position = pw.IntegerField(default=0)

    class Meta:
        table_name = "view_entry"


class LogEntry(BaseModel):
    """The admin panel's record of every add, change and delete."""

    id = pw.BigAutoField()
    action_time = pw.DateTimeField(default=utcnow, index=True)
    user = pw.ForeignKeyField(User, null=True, on_delete="SET NULL", backref="log_entries")
    username = pw.CharField(max_length=150, default="")  # kept if the user is deleted
    action = pw.CharField(max_length=16)  # add / change / delete
    model = pw.CharField(max_length=50, index=True)
    object_id = pw.CharField(max_length=64, default="")
    object_repr = pw.CharField(max_length=200, default="")
    change_message = pw.TextField(default="")

    class Meta:
        table_name = "admin_log"


class WebSession(BaseModel):
    """A browser session, kept in the database so every txm node shares it."""

    key = pw.CharField(max_length=64, primary_key=True)
    user = pw.ForeignKeyField(User, null=True, on_delete="CASCADE", backref="sessions")
    data = JSONField(default=dict)
    created = pw.DateTimeField(default=utcnow)
    expires = pw.DateTimeField(index=True)

    class Meta:
        table_name = "web_session"


class ExportCursor(BaseModel):
    """Where a named incremental export (``--since-last NAME``, a Data Export client) stands."""

    name = pw.CharField(max_length=200, unique=True)
    last_sample_id = pw.BigIntegerField(default=0)
    updated = pw.DateTimeField(default=utcnow)

    class Meta:
        table_name = "export_cursor"


#: The largest record number ``loggernet_source.last_record`` (64-bit, signed) keeps.
MAX_RECORD_NUMBER = 2 ** 63 - 1
#: The longest station or table name ``loggernet_source`` keeps.
MAX_LOGGERNET_NAME = 200


class LoggerNetSource(BaseModel):
    """A LoggerNet station and table that ``txm loggernet-pull`` stores records of, its unit,
    and the number of the last record stored (a record sent again is acknowledged, not stored)."""

    station = pw.CharField(max_length=MAX_LOGGERNET_NAME)
    table_name = pw.CharField(max_length=MAX_LOGGERNET_NAME)
    unit = pw.ForeignKeyField(Unit, on_delete="CASCADE", backref="loggernet_sources")
    last_record = pw.BigIntegerField(null=True)
    updated = pw.DateTimeField(default=utcnow)

    class Meta:
        table_name = "loggernet_source"
        indexes = ((("station", "table_name"), True),)


class QuarantinedRecord(BaseModel):
    """A LoggerNet record the pull client could not store, kept as it arrived with the reason;
    acknowledged when its station, table and record number could be read, so the stream goes on."""

    id = pw.BigAutoField()
    received = pw.DateTimeField(default=utcnow, index=True)
    server = pw.CharField(max_length=300, default="")  # host:port of the Data Export server
    format = pw.CharField(max_length=16, default="")  # standard / rtms
    station = pw.CharField(max_length=MAX_LOGGERNET_NAME, default="")  # "" when the line names none
    table_name = pw.CharField(max_length=MAX_LOGGERNET_NAME, default="")
    record_number = pw.CharField(max_length=100, default="")  # the digits as sent: it may exceed 64 bits
    reason = pw.TextField(default="")
    acknowledged = pw.BooleanField(default=False)
    digest = pw.CharField(max_length=64, unique=True)  # SHA-256 of the line: a record sent again is kept once
    raw = LongTextField()  # the line as received, without its CR LF

    class Meta:
        table_name = "loggernet_quarantine"


class LoginFailure(BaseModel):
    """A failed web login, kept so that every txm node limits guessing by user and by address."""

    id = pw.BigAutoField()
    username = pw.CharField(max_length=150, index=True)  # as typed, lower-cased
    address = pw.CharField(max_length=45, index=True)  # the client's IP address
    when = pw.DateTimeField(default=utcnow, index=True)

    class Meta:
        table_name = "login_failure"


MODELS: tuple[type[BaseModel], ...] = (
    Group, User, UserGroup, UserPermission, GroupPermission,
    Unit, UserUnit, GroupUnit, Sample, Alarm, MailingList, MailingListMember, AlarmMessage,
    View, ViewEntry, LogEntry, WebSession, ExportCursor,
    LoggerNetSource,
    LoginFailure,
    QuarantinedRecord,
)


def check_unit_code(code: str) -> str:
    """Return the code if it is a valid unit code, else raise InvalidValue saying why."""
    if not UNIT_CODE_RE.match(code or ""):
        raise InvalidValue(f"unit code {code!r} is not valid: use 1 to 64 letters and digits only "
                           f"(it travels in TTP requests as /up/CODE/)")
    return code
