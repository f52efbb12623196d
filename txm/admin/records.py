"""Samples, alarms and the action log: listed with keyset paging, viewed, deleted, never changed."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import peewee as pw

from txm import db as m
from txm.admin.actor import Actor, Forbidden, log_action
from txm.admin.base import PAGE_SIZE
from txm.errors import InvalidValue
from txm.ttp.parser import format_timestamp

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


@dataclass
class Page:
    """One page of a long list, with cursors for the neighbouring pages (None at either end)."""

    rows: list
    newer: Optional[str] = None
    older: Optional[str] = None


def _keyset_page(base: pw.ModelSelect, key: pw.Field, parse: Callable[[str], Any], before: str, after: str,
                 size: int, show: Callable[[Any], str] = str) -> Page:
    """One page of ``base``, newest ``key`` first; ``before``/``after`` are cursors (``show`` of a
    key, read back by ``parse``) from an earlier page. Every query starts at a known key through
    its index, so a page costs the same however long the list."""
    def cursor(row) -> str:
        return show(getattr(row, key.name))

    if after:
        rows = list(base.where(key > parse(after)).order_by(key.asc()).limit(size + 1))
        more_newer = len(rows) > size
        rows = rows[:size][::-1]
        return Page(rows, cursor(rows[0]) if rows and more_newer else None, cursor(rows[-1]) if rows else None)
    q = base.where(key < parse(before)) if before else base
    rows = list(q.order_by(key.desc()).limit(size + 1))
    more_older = len(rows) > size
    rows = rows[:size]
    newer = None
    if before:
        newer = (cursor(rows[0]) if rows and base.where(key > getattr(rows[0], key.name)).exists()
                 else None if rows else before)
    return Page(rows, newer, cursor(rows[-1]) if rows and more_older else None)


def _id_cursor(noun: str) -> Callable[[str], int]:
    """Reads a page cursor that is a record id."""
    def parse(text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise InvalidValue(f"page: {text!r} is not {noun}") from None
    return parse


def sample_page(unit: m.Unit, start: Optional[dt.datetime] = None, end: Optional[dt.datetime] = None,
                before: str = "", after: str = "", size: int = PAGE_SIZE) -> Page:
    """The unit's samples, newest first, ``start <= timestamp < end``; keyset paging on the timestamp.

    ``before``/``after`` are cursors from an earlier page. Every query walks the ``(unit, timestamp)``
    index from a known point, so a page costs the same with a thousand samples or a billion.
    """
    cond = m.Sample.unit == unit
    if start is not None:
        cond &= m.Sample.timestamp >= start
    if end is not None:
        cond &= m.Sample.timestamp < end
    base = m.Sample.select().where(cond)
    return _keyset_page(base, m.Sample.timestamp, lambda text: parse_when(text, "page"), before, after, size,
                        show=format_timestamp)


def alarm_page(unit: Optional[m.Unit], start: Optional[dt.datetime] = None, end: Optional[dt.datetime] = None,
               before: str = "", after: str = "", size: int = PAGE_SIZE) -> Page:
    """Alarms (of one unit, or all), newest first, ``start <= received < end``; keyset paging on the id."""
    cond = pw.SQL("1 = 1")
    if unit is not None:
        cond = m.Alarm.unit == unit
    if start is not None:
        cond &= m.Alarm.received >= start
    if end is not None:
        cond &= m.Alarm.received < end
    base = m.Alarm.select(m.Alarm, m.Unit).join(m.Unit).where(cond)
    return _keyset_page(base, m.Alarm.id, _id_cursor("an alarm number"), before, after, size)


def sample_repr(sample: m.Sample, unit: Optional[m.Unit] = None) -> str:
    unit = unit or sample.unit
    return f"{unit.code} sample at {format_timestamp(sample.timestamp)}"


def alarm_repr(alarm: m.Alarm) -> str:
    return f"{alarm.unit.code} alarm level {alarm.level} received {format_timestamp(alarm.received)}"


def require_deletion(actor: Actor, model: str) -> None:
    setting = "ALLOW_SAMPLE_DELETION" if model == "sample" else "ALLOW_ALARM_DELETION"
    if not actor.settings[setting]:
        raise Forbidden(f"{model} deletion is switched off on this server ({setting} is no)")
    actor.require("delete", model)


def deletion_allowed(actor: Actor, model: str) -> bool:
    try:
        require_deletion(actor, model)
    except Forbidden:
        return False
    return True


def delete_sample(actor: Actor, sample: m.Sample) -> None:
    delete_samples_selected(actor, [sample.id])


def delete_samples_selected(actor: Actor, ids: Sequence[Any]) -> int:
    """The "Delete selected Samples" action: every sample gets its own log entry, as the manual says."""
    return _delete_selected(actor, ids, m.Sample, "sample", lambda sample: sample_repr(sample, sample.unit))


def _delete_selected(actor: Actor, ids: Sequence[Any], model: type[m.BaseModel], name: str,
                     describe: Callable[[Any], str]) -> int:
    """Delete the chosen samples or alarms in one transaction, writing one log entry each."""
    require_deletion(actor, name)
    numbers = selected_ids(ids)
    deleted = 0
    with m.write_transaction():
        for record in model.select(model, m.Unit).join(m.Unit).where(model.id.in_(numbers)):
            record.delete_instance()
            log_action(actor, "delete", name, record.id, describe(record), "Deleted (selected).")
            deleted += 1
    return deleted


def delete_alarm(actor: Actor, alarm: m.Alarm) -> None:
    delete_alarms_selected(actor, [alarm.id])


def delete_alarms_selected(actor: Actor, ids: Sequence[Any]) -> int:
    """Delete the chosen alarms, one log entry each."""
    return _delete_selected(actor, ids, m.Alarm, "alarm", alarm_repr)


def selected_ids(ids: Sequence[Any]) -> list[int]:
    try:
        numbers = sorted({int(i) for i in ids})
    except (TypeError, ValueError):
        raise InvalidValue("the selection names something that is not a record number") from None
    if not numbers:
        raise InvalidValue("nothing was selected")
    if len(numbers) > MAX_SELECTED:
        raise InvalidValue(f"at most {MAX_SELECTED} records at once; use the bulk deletion for more")
    return numbers


@dataclass
class BulkResult:
    deleted: int
    latest: str  # what the latest deleted record was, for people ("" when none)
    message: str


def delete_batches_samples(unit: m.Unit, older_than: Optional[dt.datetime]) -> tuple[int, Optional[m.Sample]]:
    """Delete a unit's samples (older than a time, or all) in index-range batches of BATCH_SIZE.

    Each batch is its own short transaction: find the timestamp of the batch's last row on the
    ``(unit, timestamp)`` index, then delete that range. No long lock, no huge list of ids.
    """
    cond = m.Sample.unit == unit
    if older_than is not None:
        cond &= m.Sample.timestamp < older_than
    latest = m.Sample.select().where(cond).order_by(m.Sample.timestamp.desc()).first()
    deleted = 0
    while True:
        with m.write_transaction():
            locked_at = time.monotonic()  # the write lock is ours from here
            boundary = (m.Sample.select(m.Sample.timestamp).where(cond).order_by(m.Sample.timestamp)
                        .offset(m.BATCH_SIZE - 1).limit(1).scalar())
            if boundary is None:
                deleted += m.Sample.delete().where(cond).execute()
                break
            deleted += m.Sample.delete().where(cond & (m.Sample.timestamp <= boundary)).execute()
        m.between_batches(locked_at)
    return deleted, latest


def delete_batches_alarms(unit: m.Unit, older_than: Optional[dt.datetime]) -> tuple[int, Optional[m.Alarm]]:
    cond = m.Alarm.unit == unit
    if older_than is not None:
        cond &= m.Alarm.received < older_than
    latest = m.Alarm.select().where(cond).order_by(m.Alarm.id.desc()).first()
    deleted = 0
    while True:
        with m.write_transaction():
            locked_at = time.monotonic()  # the write lock is ours from here
            boundary = (m.Alarm.select(m.Alarm.id).where(cond).order_by(m.Alarm.id)
                        .offset(m.BATCH_SIZE - 1).limit(1).scalar())
            if boundary is None:
                deleted += m.Alarm.delete().where(cond).execute()
                break
            deleted += m.Alarm.delete().where(cond & (m.Alarm.id <= boundary)).execute()
        m.between_batches(locked_at)
    return deleted, latest


def _units(unit: Optional[m.Unit]) -> list[m.Unit]:
    return [unit] if unit is not None else list(m.Unit.select().order_by(m.Unit.code))


def delete_samples_bulk(actor: Actor, unit: Optional[m.Unit] = None,
                        older_than: Optional[dt.datetime] = None) -> BulkResult:
    """ "Delete ALL Samples" (``older_than`` None) or "Delete old Samples..." of a unit or of every unit.

    Deletes in batches and writes ONE log entry naming the latest deleted sample.
    """
    require_deletion(actor, "sample")
    total, latest, latest_unit = 0, None, None
    for u in _units(unit):
        count, newest = delete_batches_samples(u, older_than)
        total += count
        if newest is not None and (latest is None or newest.timestamp > latest.timestamp):
            latest, latest_unit = newest, u
    scope = f"of unit {unit.code}" if unit is not None else "of every unit"
    which = f"older than {format_timestamp(older_than)}" if older_than is not None else "(all)"
    latest_text = sample_repr(latest, latest_unit) if latest is not None else ""
    message = f"Bulk deletion: {total} sample(s) {scope} {which}."
    if latest is not None:
        message += f" The latest deleted: {latest_text} (id {latest.id})."
    log_action(actor, "delete", "sample", latest.id if latest is not None else "",
               latest_text or f"samples {scope}", message)
    return BulkResult(total, latest_text, message)


def delete_alarms_bulk(actor: Actor, unit: Optional[m.Unit] = None,
                       older_than: Optional[dt.datetime] = None) -> BulkResult:
    """ "Delete All Alarms" / "Delete Old Alarms..." (by time received, UTC); ONE log entry."""
    require_deletion(actor, "alarm")
    total, latest = 0, None
    for u in _units(unit):
        count, newest = delete_batches_alarms(u, older_than)
        total += count
        if newest is not None and (latest is None or newest.id > latest.id):
            latest = newest
    scope = f"of unit {unit.code}" if unit is not None else "of every unit"
    which = f"received before {format_timestamp(older_than)} UTC" if older_than is not None else "(all)"
    latest_text = alarm_repr(latest) if latest is not None else ""
    message = f"Bulk deletion: {total} alarm(s) {scope} {which}."
    if latest is not None:
        message += f" The latest deleted: {latest_text} (id {latest.id})."
    log_action(actor, "delete", "alarm", latest.id if latest is not None else "",
               latest_text or f"alarms {scope}", message)
    return BulkResult(total, latest_text, message)


# --- the action log: browsed, never edited ---------------------------------------------------


def log_page(model: str = "", action: str = "", username: str = "", search: str = "",
             start: Optional[dt.datetime] = None, end: Optional[dt.datetime] = None,
             before: str = "", after: str = "", size: int = PAGE_SIZE, object_id: str = "") -> Page:
    """Log entries, newest first, filtered; keyset paging on the id."""
    cond = pw.SQL("1 = 1")
    if model:
        cond &= m.LogEntry.model == model
    if object_id:
        cond &= m.LogEntry.object_id == object_id
    if action:
        cond &= m.LogEntry.action == action
    if username:
        cond &= m.LogEntry.username == username
    if search:
        cond &= (m.LogEntry.object_repr.contains(search) | m.LogEntry.change_message.contains(search))
    if start is not None:
        cond &= m.LogEntry.action_time >= start
    if end is not None:
        cond &= m.LogEntry.action_time < end
    base = m.LogEntry.select().where(cond)
    return _keyset_page(base, m.LogEntry.id, _id_cursor("a log entry number"), before, after, size)
