"""Records the panel shows but never edits: samples, alarms, quarantined LoggerNet records and
the action log.

One :class:`RecordAdmin`, parameterised by the model, serves them all: a list newest first with
keyset paging and filters, each record on its own page and, where allowed, deletion of selected
records (one log entry each) or, for a unit's records, of all or old ones in batches (one log
entry in all). :data:`SAMPLES`, :data:`ALARMS`, :data:`QUARANTINE` and :data:`LOG` are the four;
another kind of record is another instance.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

import peewee as pw

from txm.admin.actor import Actor, Forbidden, log_action
from txm.admin.base import MAX_ID, PAGE_SIZE, by_id
from txm.db import schema
from txm.db.bulk import delete_in_batches
from txm.db.sqlite import write_transaction
from txm.errors import InvalidValue
from txm.timestamps import format_timestamp

#: Most samples or alarms one "Delete selected" may name (each one gets its own log entry).
MAX_SELECTED = 500


def parse_when(text: str, what: str) -> Optional[dt.datetime]:
    """A date or date and time typed in a filter: ``2026-11-20`` or ``2026-11-20 13:05[:09]``."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("T", " ", 1) if len(text) > 10 else text)
    except ValueError:
        raise InvalidValue(f"{what}: {text!r} is not a date; write e.g. 2026-11-20 or 2026-11-20 13:05") from None


def with_article(noun: str) -> str:
    """``an alarm``, ``a sample``: page titles and messages name one record of a kind."""
    return f"{'an' if noun[:1] in 'aeiou' else 'a'} {noun}"


@dataclass
class Page:
    """One page of a long list, with cursors for the neighbouring pages (None at either end)."""

    rows: list
    newer: Optional[str] = None
    older: Optional[str] = None


@dataclass
class BulkResult:
    deleted: int
    latest: str  # what the latest deleted record was, for people ("" when none)
    message: str


def selected_ids(ids: Sequence[Any]) -> list[int]:
    """The record numbers a "Delete selected" names: at least one, at most :data:`MAX_SELECTED`."""
    try:
        numbers = sorted({int(i) for i in ids})
    except (TypeError, ValueError):
        raise InvalidValue("the selection names something that is not a record number") from None
    if not numbers:
        raise InvalidValue("nothing was selected")
    if len(numbers) > MAX_SELECTED:
        raise InvalidValue(f"at most {MAX_SELECTED} records at once; use the bulk deletion for more")
    return numbers


@dataclass(frozen=True)
class RecordAdmin:
    """How the panel lists, shows and deletes one kind of record it never changes."""

    name: str  # in URLs and permission codenames
    verbose: str
    plural: str
    description: str
    model: type[schema.BaseModel]
    #: Pages go newest first along this indexed column, and their cursors are its values.
    key: pw.Field
    #: The time the From / To filters and "older than" compare.
    time: pw.Field
    #: A record as people read it (titles, flash messages, the log's object names).
    describe: Callable[[Any], str]
    list_template: str
    #: What the detail template (``admin/<name>.html``) calls the record.
    detail_name: str
    #: Query parameters that narrow the list, each with the condition it adds.
    narrowed_by: Mapping[str, Callable[[Any], Any]] = field(default_factory=dict)
    #: Listed one unit at a time (a unit is chosen first); else, with a ``unit`` filter, one or all.
    per_unit: bool = False
    #: The setting that allows deleting them through the panel; empty: they are never deleted
    #: (unless ``deletable_by_permission``).
    deletion_setting: str = ""
    #: Deleted by whoever holds the delete permission, with no setting to allow it.
    deletable_by_permission: bool = False
    #: How a bulk deletion's log message names the time it cut at.
    cut_words: str = "older than {}"

    editable = False  # no add or change forms

    @property
    def deletable(self) -> bool:
        return bool(self.deletion_setting) or self.deletable_by_permission

    @property
    def of_a_unit(self) -> bool:
        """Records a unit wrote (samples, alarms), filtered by unit; not the log."""
        return "unit" in self.narrowed_by

    @property
    def bulk_deletable(self) -> bool:
        """ "Delete ALL" and "Delete old" go unit by unit, so only a unit's records have them."""
        return self.deletable and self.of_a_unit

    @property
    def rows_of_many_units(self) -> bool:
        """A list that may mix units names each row's unit, so it is read with its unit."""
        return self.of_a_unit and not self.per_unit

    # --- reading ----------------------------------------------------------------------------

    def get(self, obj_id: Any) -> Any:
        return by_id(self.model, obj_id, self.verbose, gone=" (perhaps it was deleted)")

    def page(self, start: Optional[dt.datetime] = None, end: Optional[dt.datetime] = None, before: str = "",
             after: str = "", size: int = PAGE_SIZE, **filters: Any) -> Page:
        """Records newest first, ``start <= time < end``, narrowed by ``filters`` (empty ones ignored).

        ``before``/``after`` are cursors from an earlier page. Every query starts at a known key
        through its index (samples: ``(unit, timestamp)``), so a page costs the same with a
        thousand records or a billion, and no page counts the table.
        """
        unknown = set(filters) - set(self.narrowed_by)
        if unknown:
            raise TypeError(f"{self.plural} are not filtered by {', '.join(sorted(unknown))}")
        conditions = [narrow(filters[name]) for name, narrow in self.narrowed_by.items()
                      if filters.get(name) not in (None, "")]
        if start is not None:
            conditions.append(self.time >= start)
        if end is not None:
            conditions.append(self.time < end)
        base = self.model.select(self.model, schema.Unit).join(schema.Unit) if self.rows_of_many_units else self.model.select()
        if conditions:
            base = base.where(*conditions)
        key = self.key
        if after:
            rows = list(base.where(key > self._read_cursor(after)).order_by(key.asc()).limit(size + 1))
            more_newer = len(rows) > size
            rows = rows[:size][::-1]
            return Page(rows, self._cursor(rows[0]) if rows and more_newer else None,
                        self._cursor(rows[-1]) if rows else None)
        query = base.where(key < self._read_cursor(before)) if before else base
        rows = list(query.order_by(key.desc()).limit(size + 1))
        more_older = len(rows) > size
        rows = rows[:size]
        newer = None
        if before:
            newer = (self._cursor(rows[0]) if rows and base.where(key > getattr(rows[0], key.name)).exists()
                     else None if rows else before)
        return Page(rows, newer, self._cursor(rows[-1]) if rows and more_older else None)

    def _cursor(self, record: Any) -> str:
        value = getattr(record, self.key.name)
        return format_timestamp(value) if isinstance(self.key, pw.DateTimeField) else str(value)

    def _read_cursor(self, text: str) -> Any:
        if isinstance(self.key, pw.DateTimeField):
            return parse_when(text, "page")
        try:
            number = int(text)
        except ValueError:
            number = None
        if number is None or abs(number) > MAX_ID:
            raise InvalidValue(f"page: {text!r} is not {with_article(self.verbose)} number; "
                               f"the Newer and Older links give the right ones")
        return number

    def any_of(self, unit: schema.Unit) -> bool:
        """Has the unit any of these records?"""
        return self.model.select().where(self.model.unit == unit).limit(1).exists()

    def selected(self, ids: Sequence[Any]) -> list[Any]:
        """The records a "Delete selected" names, with their units (if of a unit), in id order."""
        numbers = selected_ids(ids)
        query = self.model.select(self.model, schema.Unit).join(schema.Unit) if self.of_a_unit else self.model.select()
        return list(query.where(self.model.id.in_(numbers)).order_by(self.model.id))

    # --- deleting ---------------------------------------------------------------------------

    def require_deletion(self, actor: Actor) -> None:
        """Refuse unless this server allows deleting them and the actor may."""
        if not self.deletable:
            raise Forbidden(f"{self.plural} cannot be deleted")
        if self.deletion_setting and not actor.settings[self.deletion_setting]:
            raise Forbidden(f"{self.name} deletion is switched off on this server ({self.deletion_setting} is no)")
        actor.require("delete", self.name)

    def deletion_allowed(self, actor: Actor) -> bool:
        try:
            self.require_deletion(actor)
        except Forbidden:
            return False
        return True

    def delete_selected(self, actor: Actor, ids: Sequence[Any]) -> int:
        """The "Delete selected" action, in one transaction: every record gets its own log entry,
        as the manual says (so it is for a few at a time; the bulk deletion is for many)."""
        self.require_deletion(actor)
        deleted = 0
        with write_transaction():
            for record in self.selected(ids):
                record.delete_instance()
                log_action(actor, "delete", self.name, record.id, self.describe(record), "Deleted (selected).")
                deleted += 1
        return deleted

    def delete_batches(self, unit: schema.Unit, older_than: Optional[dt.datetime] = None) -> tuple[int, Any]:
        """Delete a unit's records (older than a time, or all) in key-range batches
        (:func:`txm.db.bulk.delete_in_batches`); returns how many went and the latest of them
        (None when none)."""
        condition = self.model.unit == unit
        if older_than is not None:
            condition &= self.time < older_than
        latest = self.model.select().where(condition).order_by(self.key.desc()).first()
        if latest is not None:
            latest.unit = unit  # so describing it needs no query once it is gone
        return delete_in_batches(self.model, condition, self.key), latest

    def delete_bulk(self, actor: Actor, unit: Optional[schema.Unit] = None,
                    older_than: Optional[dt.datetime] = None) -> BulkResult:
        """ "Delete ALL ..." (``older_than`` None) or "Delete old ..." of a unit or of every unit.

        Deletes in batches and writes ONE log entry naming how many went and the latest deleted.
        """
        self.require_deletion(actor)
        total, latest = 0, None
        key = self.key.name
        for each in [unit] if unit is not None else list(schema.Unit.select().order_by(schema.Unit.code)):
            count, newest = self.delete_batches(each, older_than)
            total += count
            if newest is not None and (latest is None or getattr(newest, key) > getattr(latest, key)):
                latest = newest
        scope = f"of unit {unit.code}" if unit is not None else "of every unit"
        which = self.cut_words.format(format_timestamp(older_than)) if older_than is not None else "(all)"
        latest_text = self.describe(latest) if latest is not None else ""
        message = f"Bulk deletion: {total} {self.verbose}(s) {scope} {which}."
        if latest is not None:
            message += f" The latest deleted: {latest_text} (id {latest.id})."
        log_action(actor, "delete", self.name, latest.id if latest is not None else "",
                   latest_text or f"{self.plural} {scope}", message)
        return BulkResult(total, latest_text, message)


def sample_name(sample: schema.Sample) -> str:
    return f"{sample.unit.code} sample at {format_timestamp(sample.timestamp)}"


def alarm_name(alarm: schema.Alarm) -> str:
    return f"{alarm.unit.code} alarm level {alarm.level} received {format_timestamp(alarm.received)}"


SAMPLES = RecordAdmin(
    "sample", "sample", "samples", "Data the units uploaded, per unit: viewed and deleted, never changed.",
    schema.Sample, key=schema.Sample.timestamp, time=schema.Sample.timestamp, describe=sample_name,
    list_template="admin/samples.html", detail_name="sample",
    narrowed_by={"unit": lambda unit: schema.Sample.unit == unit}, per_unit=True,
    deletion_setting="ALLOW_SAMPLE_DELETION")

ALARMS = RecordAdmin(
    "alarm", "alarm", "alarms",
    "Alarms the units raised, and what became of their emails: viewed and deleted, never changed.",
    schema.Alarm, key=schema.Alarm.id, time=schema.Alarm.received, describe=alarm_name,
    list_template="admin/alarms.html", detail_name="alarm",
    narrowed_by={"unit": lambda unit: schema.Alarm.unit == unit,
                 "email": lambda status: schema.Alarm.email_status == status},
    deletion_setting="ALLOW_ALARM_DELETION", cut_words="received before {} UTC")

def quarantined_name(record: schema.QuarantinedRecord) -> str:
    if not record.acknowledged:
        return f"LoggerNet line {record.id} (names no record)"
    return f"LoggerNet record {record.station[:60]}/{record.table_name[:60]} {record.record_number[:30]}"


QUARANTINE = RecordAdmin(
    "quarantinedrecord", "quarantined record", "quarantined records",
    "Records the LoggerNet client could not store, as they arrived and why: viewed and deleted, never changed.",
    schema.QuarantinedRecord, key=schema.QuarantinedRecord.id, time=schema.QuarantinedRecord.received,
    describe=quarantined_name, list_template="admin/quarantine.html", detail_name="record",
    narrowed_by={"station": lambda station: schema.QuarantinedRecord.station == station},
    deletable_by_permission=True, cut_words="received before {} UTC")

LOG = RecordAdmin(
    "logentry", "log entry", "action log", "Every add, change and delete made in this panel: who, when, what.",
    schema.LogEntry, key=schema.LogEntry.id, time=schema.LogEntry.action_time, describe=lambda entry: f"Log entry {entry.id}",
    list_template="admin/log.html", detail_name="entry",
    narrowed_by={"model": lambda model: schema.LogEntry.model == model,
                 "object": lambda object_id: schema.LogEntry.object_id == object_id,
                 "action": lambda action: schema.LogEntry.action == action,
                 "user": lambda username: schema.LogEntry.username == username,
                 "q": lambda text: schema.LogEntry.object_repr.contains(text) | schema.LogEntry.change_message.contains(text)})
