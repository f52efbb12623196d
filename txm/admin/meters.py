"""What the meters need set up, as the admin panel edits it: units (with their channel lists),
their mailing lists and alarm messages (with a preview and a test email), multiple-meter views."""

from __future__ import annotations

import re
from typing import Any, Sequence

from txm import manage
from txm.admin.actor import Actor
from txm.admin.base import Column, ModelAdmin, as_ids, linked, set_links, unit_choices
from txm.admin.forms import Field, sentence
from txm.admin.records import ALARMS, SAMPLES
from txm.alarms.email import send_test_email
from txm.alarms.templates import check_template, render_message
from txm.db import schema
from txm.errors import InvalidValue

#: Most axes a unit's graph may have.
MAX_AXES = 4


def parse_channel_list(text: str, channels: int, what: str) -> list[int]:
    """``1, 3-5`` -> [1, 3, 4, 5]; every number a channel of the unit."""
    out: list[int] = []
    for part in re.split(r"[,\s]+", text.strip()):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            numbers = range(int(lo), int(hi) + 1) if sep else [int(lo)]
        except ValueError:
            raise InvalidValue(f"{what}: {part!r} is not a channel number (write e.g. 1, 2, 5-8)") from None
        for n in numbers:
            if not 1 <= n <= channels:
                raise InvalidValue(f"{what}: channel {n} does not exist (the unit has {channels})")
            if n not in out:
                out.append(n)
    return out


def channel_list_text(numbers: Sequence[int]) -> str:
    return ", ".join(str(n) for n in numbers)


# --- units ---------------------------------------------------------------------------------------


class UnitAdmin(ModelAdmin):
    name, verbose, plural = "unit", "unit", "units"
    model = schema.Unit
    description = "Tiger meters: code and key for TTP, data fields and labels, graph and report options."
    columns = [Column("Code", lambda u: u.code), Column("Name", lambda u: u.name),
               Column("Data fields", lambda u: u.channels), Column("Reports", lambda u: u.has_reports)]
    search_fields = (schema.Unit.code, schema.Unit.name)
    ordering = (schema.Unit.code,)

    def fields(self, actor, obj, raw=None):
        fields = [
            Field("code", "Unit code", required=True, max_length=64, group="TTP connection",
                  help="Letters and digits only; the meter sends it with every request. A change takes effect "
                       "at the meter's next request."),
            Field("key", "Unit key", required=True, max_length=128, secret=True, group="TTP connection",
                  help="The secret ending every request of the meter; no spaces."),
            Field("name", "Name", max_length=200, group="TTP connection", help="A name for people."),
            Field("channels", "Number of data fields", "int", required=True, minimum=1, maximum=schema.MAX_CHANNELS,
                  group="Data fields",
                  help=f"Values in each upload, 1 to {schema.MAX_CHANNELS}; every upload must send exactly this many."),
            Field("labels", "Channel labels", max_length=64 * schema.MAX_CHANNELS + schema.MAX_CHANNELS, group="Data fields",
                  help="Comma-separated, in channel order, e.g. Flow,Temp,Level; empty ones show as ch1, ch2 ... "
                       "No spaces or = < > ; \" ' inside a label."),
            Field("show_labels", "Downloads show labels", "bool", group="Data fields",
                  help="TTP downloads answer Flow=11 Temp=22 instead of 11 22."),
            Field("graph_width", "Graph width (pixels)", "int", required=True, minimum=100, maximum=4000,
                  group="Graphing options"),
            Field("graph_height", "Graph height (pixels)", "int", required=True, minimum=100, maximum=4000,
                  group="Graphing options"),
            Field("graph_axes", "Number of axes", "int", required=True, minimum=1, maximum=MAX_AXES,
                  group="Graphing options", help=f"1 to {MAX_AXES}; fill in a label and channels for each below."),
        ]
        for i in range(1, MAX_AXES + 1):
            fields.append(Field(f"axis{i}_label", f"Axis {i} label", max_length=100, group="Graphing options"))
            fields.append(Field(f"axis{i}_channels", f"Axis {i} channels", max_length=200, group="Graphing options",
                                help="Channel numbers, e.g. 1, 2 or 3-5" + (
                                    "; empty: every channel" if i == 1 else "")))
        fields += [
            Field("has_reports", "Has reports", "bool", group="Report options",
                  help="Offer CSV data downloads of this unit."),
            Field("report_fields", "Exported fields", max_length=200, group="Report options",
                  help="Channel numbers the downloads hold, e.g. 1, 2, 4; empty: all."),
        ]
        return fields

    def initial(self, obj):
        if obj is None:
            return {"channels": "1", "graph_width": "800", "graph_height": "400", "graph_axes": "1",
                    "has_reports": True, "show_labels": False}
        values: dict[str, Any] = {
            "code": obj.code, "key": obj.key, "name": obj.name, "channels": str(obj.channels),
            "labels": ",".join(obj.labels or []), "show_labels": obj.show_labels,
            "graph_width": str(obj.graph_width), "graph_height": str(obj.graph_height),
            "graph_axes": str(max(1, len(obj.graph_axes or []))),
            "has_reports": obj.has_reports, "report_fields": channel_list_text(obj.report_fields or []),
        }
        for i, axis in enumerate(obj.graph_axes or [], start=1):
            values[f"axis{i}_label"] = axis.get("label", "")
            values[f"axis{i}_channels"] = channel_list_text(axis.get("channels", []))
        return values

    def clean(self, actor, form, data, obj, raw):
        code = data.get("code") or ""
        if code:
            try:
                schema.check_unit_code(code)
            except InvalidValue:
                form.add_error("code", "Use letters and digits only (1 to 64), no spaces or signs.")
            else:
                if self.clashes(obj, schema.Unit.code == code):
                    form.add_error("code", f"Another unit already has the code {code!r}.")
        if data.get("key"):
            try:
                manage.check_key(data["key"])
            except InvalidValue:
                form.add_error("key", "No spaces allowed in a key.")
        channels = data.get("channels")
        if channels is None:
            return
        try:
            data["labels"] = manage.parse_labels(data.get("labels") or "", channels)
        except InvalidValue as exc:
            form.add_error("labels", sentence(str(exc)))
        axes_count = data.get("graph_axes") or 1
        axes = []
        for i in range(1, MAX_AXES + 1):
            label = data.get(f"axis{i}_label") or ""
            text = data.get(f"axis{i}_channels") or ""
            try:
                numbers = parse_channel_list(text, channels, f"axis {i}")
            except InvalidValue as exc:
                form.add_error(f"axis{i}_channels", sentence(str(exc)))
                continue
            if i <= axes_count:
                if not numbers and axes_count > 1:
                    form.add_error(f"axis{i}_channels", f"Name the channels axis {i} shows.")
                axes.append({"label": label, "channels": numbers})
        if axes_count == 1 and axes and not axes[0]["label"] and not axes[0]["channels"]:
            axes = []  # one axis with every channel: the default
        elif axes_count == 1 and axes and not axes[0]["channels"]:
            axes[0]["channels"] = list(range(1, channels + 1))
        data["graph_axes"] = axes
        try:
            data["report_fields"] = parse_channel_list(data.get("report_fields") or "", channels, "exported fields")
        except InvalidValue as exc:
            form.add_error("report_fields", sentence(str(exc)))

    def save(self, actor, obj, data):
        values = {k: data[k] for k in ("code", "key", "name", "channels", "labels", "show_labels", "graph_width",
                                       "graph_height", "graph_axes", "has_reports", "report_fields")}
        return self.store(obj, values)

    def page_context(self, obj):
        return {"mailing_list": schema.MailingList.get_or_none(schema.MailingList.unit == obj)}

    def delete_problems(self, actor, obj):
        return [f"The unit has {records.plural}, and deleting {records.plural} is switched off on this server "
                f"({records.deletion_setting} is no), so the unit cannot be deleted."
                for records in (SAMPLES, ALARMS)
                if not actor.settings[records.deletion_setting] and records.any_of(obj)]

    def delete_warnings(self, actor, obj):
        out = []
        if SAMPLES.any_of(obj) or ALARMS.any_of(obj):
            out.append("ALL samples and alarms of this unit are deleted with it (in batches; this may take a while "
                       "for a unit with millions of samples).")
        out.append("Its mailing list, alarm messages and places in multiple-meter views go too.")
        return out

    def prepare_delete(self, actor, obj):
        samples, _ = SAMPLES.delete_batches(obj)
        raised, _ = ALARMS.delete_batches(obj)
        return f"Deleted with {samples} sample(s) and {raised} alarm(s)."


# --- mailing lists and alarm messages --------------------------------------------------------


def user_choices(with_email: bool = False) -> list[tuple[str, str]]:
    out = []
    for u in schema.User.select().order_by(schema.User.username):
        label = u.username
        if with_email:
            label += f" <{u.email}>" if u.email else " (no email address: gets no email)"
        out.append((str(u.id), label))
    return out


class MailingListAdmin(ModelAdmin):
    name, verbose, plural = "mailinglist", "mailing list", "mailing lists"
    model = schema.MailingList
    description = "One per unit: the users who receive the unit's alarm emails."
    columns = [Column("Unit", lambda ml: str(ml.unit)), Column("Name", lambda ml: ml.name),
               Column("Members", lambda ml: schema.MailingListMember.select()
                      .where(schema.MailingListMember.mailing_list == ml).count())]
    with_unit = True
    search_fields = (schema.MailingList.name, schema.Unit.code)
    ordering = (schema.Unit.code,)
    logged_names = {"members": schema.User.username}

    def repr(self, obj):
        return f"mailing list of {obj.unit.code}" + (f" ({obj.name})" if obj.name else "")

    def fields(self, actor, obj, raw=None):
        return [
            Field("unit", "Unit", "select", required=True, choices=unit_choices(),
                  help="A unit has one mailing list."),
            Field("name", "Name", max_length=200),
            Field("members", "Members", "multi", choices=user_choices(with_email=True),
                  help="Users receiving the unit's alarm emails; a user without an email address gets none."),
        ]

    def initial(self, obj):
        if obj is None:
            return {"members": []}
        return {"unit": str(obj.unit_id), "name": obj.name,
                "members": linked(schema.MailingListMember, "mailing_list", obj, "user")}

    def logged_values(self, obj):
        return {**super().logged_values(obj), "unit": obj.unit.code}

    def clean(self, actor, form, data, obj, raw):
        unit = data.get("unit")
        if unit and self.clashes(obj, schema.MailingList.unit == int(unit)):
            form.add_error("unit", "This unit already has a mailing list: change that one.")

    def save(self, actor, obj, data):
        obj = self.store(obj, {"unit": int(data["unit"]), "name": data["name"]})
        set_links(schema.MailingListMember, "mailing_list", obj, "user", as_ids(data["members"]))
        return schema.MailingList.get_by_id(obj.id)


#: The data an alarm message is previewed and test-sent with when none is typed: a time and two values.
SAMPLE_ALARM_DATA = ["2026-01-01 12:00:00", "42.5", "17"]


class AlarmMessageAdmin(ModelAdmin):
    name, verbose, plural = "alarmmessage", "alarm message", "alarm messages"
    model = schema.AlarmMessage
    description = "Subject and text of a unit's alarm emails, per alarm level (Django-style templates)."
    columns = [Column("Unit", lambda a: str(a.unit)), Column("Level", lambda a: a.level),
               Column("Subject", lambda a: a.subject)]
    with_unit = True
    search_fields = (schema.AlarmMessage.subject, schema.Unit.code)
    ordering = (schema.Unit.code, schema.AlarmMessage.level)

    def repr(self, obj):
        return f"{obj.unit.code} level {obj.level}"

    def fields(self, actor, obj, raw=None):
        return [
            Field("unit", "Unit", "select", required=True, choices=unit_choices()),
            Field("level", "Alarm level", "int", required=True, minimum=-(2 ** 31), maximum=2 ** 31 - 1,
                  help="The level the meter sends: TTP /al/CODE/LEVEL;DATA..."),
            Field("subject", "Subject", required=True, max_length=500,
                  help="A template: {{ unit.name }} alarm {{ level }}"),
            Field("body", "Message", "textarea", required=True,
                  help="A template: {{ level }}, {{ unit.code }}, {{ unit.name }}, {{ data }}, {{ data.0 }}, "
                       "{% if data.0 %}...{% endif %}"),
        ]

    def initial(self, obj):
        if obj is None:
            return {}
        return {"unit": str(obj.unit_id), "level": str(obj.level), "subject": obj.subject, "body": obj.body}

    def page_context(self, obj):
        return {"sample_data": ", ".join(SAMPLE_ALARM_DATA),
                "recipients": ", ".join(mailing_list_addresses(obj.unit))}

    def logged_values(self, obj):
        return {**super().logged_values(obj), "unit": obj.unit.code}

    def clean(self, actor, form, data, obj, raw):
        unit, level = data.get("unit"), data.get("level")
        if unit and level is not None and self.clashes(
                obj, (schema.AlarmMessage.unit == int(unit)) & (schema.AlarmMessage.level == level)):
            form.add_error("level", "This unit already has a message for this level.")
        for name in ("subject", "body"):
            if data.get(name):
                try:
                    check_template(data[name])
                except InvalidValue as exc:
                    form.add_error(name, f"The template does not work: {exc}")

    def save(self, actor, obj, data):
        values = {"unit": int(data["unit"]), "level": data["level"], "subject": data["subject"], "body": data["body"]}
        return schema.AlarmMessage.get_by_id(self.store(obj, values).id)


def preview_alarm_message(unit: schema.Unit, level: int, subject: str, body: str,
                          data: Sequence[str] | None = None) -> tuple[str, str]:
    """A subject and body template (as typed, saved or not) rendered with sample data."""
    return render_message(subject, body, unit, level, list(data if data is not None else SAMPLE_ALARM_DATA))


def sample_data(text: str | None) -> list[str]:
    """The sample data typed for a preview or test email (comma-separated); none typed: the default."""
    if text is None or not text.strip():
        return list(SAMPLE_ALARM_DATA)
    return [part.strip() for part in text.split(",")]


def send_test_alarm_email(actor: Actor, message: schema.AlarmMessage, recipients: Sequence[str],
                          data: Sequence[str] | None = None) -> list[str]:
    """Send the saved message with sample data to ``recipients``; return the addresses it went to.

    Raises TxmError with the reason (a wrong address, the SMTP server's refusal).
    """
    actor.require("change", "alarmmessage")
    addresses = [r.strip() for r in recipients if r.strip()]
    if not addresses:
        raise InvalidValue("give at least one address to send the test email to")
    for address in addresses:
        if not re.fullmatch(r"[^@\s,;<>]+@[^@\s,;<>]+", address):
            raise InvalidValue(f"{address!r} is not an email address")
    send_test_email(actor.settings, message.unit, message.level,
                    list(data if data is not None else SAMPLE_ALARM_DATA), addresses)
    return addresses


def mailing_list_addresses(unit: schema.Unit) -> list[str]:
    """Email addresses on the unit's mailing list (users without one left out)."""
    q = (schema.User.select(schema.User.email).join(schema.MailingListMember).join(schema.MailingList)
         .where((schema.MailingList.unit == unit) & (schema.User.email != "")).order_by(schema.User.email))
    return [u.email for u in q]


# --- multiple-meter views ----------------------------------------------------------------------

#: Empty rows offered under a view's units for adding more.
VIEW_SPARE_ROWS = 3
#: Most units in one view.
MAX_VIEW_ROWS = 200


class ViewAdmin(ModelAdmin):
    name, verbose, plural = "view", "multiple-meter view", "multiple-meter views"
    model = schema.View
    description = "Multiple-meter displays: a name, a refresh rate, and the units and channels to show."
    columns = [Column("Name", lambda v: v.name), Column("Refresh (seconds)", lambda v: v.refresh_seconds),
               Column("Units", lambda v: schema.ViewEntry.select().where(schema.ViewEntry.view == v).count())]
    search_fields = (schema.View.name,)
    ordering = (schema.View.name,)

    def _rows(self, obj, raw):
        if raw is not None and raw.get("rows"):
            try:
                return max(1, min(MAX_VIEW_ROWS, int(raw.get("rows"))))
            except ValueError:
                pass
        existing = 0 if obj is None else schema.ViewEntry.select().where(schema.ViewEntry.view == obj).count()
        return min(MAX_VIEW_ROWS, existing + VIEW_SPARE_ROWS)

    def fields(self, actor, obj, raw=None):
        fields = [
            Field("name", "Name", required=True, max_length=200, group="View"),
            Field("refresh_seconds", "Refresh rate (seconds)", "int", required=True, minimum=1, maximum=86400,
                  group="View", help="How often the display fetches the latest values."),
        ]
        units = [("", "---")] + unit_choices()
        for i in range(1, self._rows(obj, raw) + 1):
            fields.append(Field(f"entry{i}_unit", f"Unit {i}", "select", choices=units, group="Units and channels"))
            fields.append(Field(f"entry{i}_channels", f"Unit {i} channels", max_length=200,
                                group="Units and channels",
                                help="Channel numbers to show, e.g. 1, 3; empty: every channel."))
        return fields

    def initial(self, obj):
        if obj is None:
            return {"refresh_seconds": "10"}
        values: dict[str, Any] = {"name": obj.name, "refresh_seconds": str(obj.refresh_seconds)}
        for i, entry in enumerate(self.entries(obj), start=1):
            values[f"entry{i}_unit"] = str(entry.unit_id)
            values[f"entry{i}_channels"] = channel_list_text(entry.channels or [])
        return values

    @staticmethod
    def entries(obj) -> list[schema.ViewEntry]:
        return list(schema.ViewEntry.select(schema.ViewEntry, schema.Unit).join(schema.Unit).where(schema.ViewEntry.view == obj)
                    .order_by(schema.ViewEntry.position, schema.ViewEntry.id))

    def logged_values(self, obj):
        values = {"name": obj.name, "refresh_seconds": str(obj.refresh_seconds)}
        values["units"] = "; ".join(f"{e.unit.code}: {channel_list_text(e.channels) or 'all channels'}"
                                    for e in self.entries(obj))
        return values

    def labels(self, actor, obj):
        return {"name": "name", "refresh_seconds": "refresh rate", "units": "units and channels"}

    def clean(self, actor, form, data, obj, raw):
        entries = []
        units = {u.id: u for u in schema.Unit.select()}
        for i in range(1, self._rows(obj, raw) + 1):
            unit_id = data.get(f"entry{i}_unit")
            text = data.get(f"entry{i}_channels") or ""
            if not unit_id:
                if text:
                    form.add_error(f"entry{i}_unit", "Choose the unit these channels belong to.")
                continue
            unit = units.get(int(unit_id))
            if unit is None:
                form.add_error(f"entry{i}_unit", "This unit no longer exists.")
                continue
            try:
                numbers = parse_channel_list(text, unit.channels, f"unit {unit.code}")
            except InvalidValue as exc:
                form.add_error(f"entry{i}_channels", sentence(str(exc)))
                continue
            entries.append((unit.id, numbers))
        data["entries"] = entries

    def save(self, actor, obj, data):
        obj = self.store(obj, {"name": data["name"], "refresh_seconds": data["refresh_seconds"]})
        schema.ViewEntry.delete().where(schema.ViewEntry.view == obj).execute()
        if data["entries"]:
            schema.ViewEntry.insert_many([{"view": obj, "unit": unit, "channels": channels, "position": pos}
                                          for pos, (unit, channels) in enumerate(data["entries"])]).execute()
        return obj
