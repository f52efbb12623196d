"""The built-in TTP verbs and their one table, :data:`BUILTIN_VERBS`.

* ``up`` -- :func:`upload` stores samples (in one multi-row INSERT for the one-sample uploads of
  a pass, :func:`upload_batch`);
* ``dl`` -- :func:`download` answers the unit's newest sample;
* ``al`` -- :func:`alarm` stores an alarm, whose email :mod:`txm.alarms.email` sends later.

Each is a verb function as :mod:`txm.ttp.handler` describes. TTP Apps add to the table at start
(:mod:`txm.ttp.apps`).
"""

from __future__ import annotations

import datetime as dt
from typing import Iterable

from txm.alarms.email import EMAILED
from txm.db import schema
from txm.db.samples import UnitRecord
from txm.timestamps import format_timestamp
from txm.ttp.handler import OK, Call, Verb
from txm.ttp.parser import (
    ProtocolError,
    Upload,
    format_value,
    parse_alarm,
    parse_upload,
)


def upload(call: Call) -> str:
    """``TTP /up/<code>/<ts;v1;...><ts;...>... <key>``: store samples; 406 lists duplicates."""
    unit = call.unit()
    return _store_upload(call, unit, parse_upload(call.request.argument, unit.channels))


def _store_upload(call: Call, unit: UnitRecord, batch: Upload) -> str:
    timestamps = batch.timestamps
    duplicates: list[int] = []
    if len(timestamps) == 1 or len(set(timestamps)) == len(timestamps):  # the usual case
        positions: Iterable[int] = range(1, len(timestamps) + 1)
        inserted = call.store.insert_columns(unit, timestamps, batch.values, call.received, batch.sent)
    else:  # the same timestamp twice in one request: the second is a duplicate
        seen: set[dt.datetime] = set()
        fresh: list[int] = []
        for position, timestamp in enumerate(timestamps, start=1):
            if timestamp in seen:
                duplicates.append(position)
            else:
                seen.add(timestamp)
                fresh.append(position)
        positions = fresh
        inserted = call.store.insert_columns(
            unit, [timestamps[p - 1] for p in fresh], [batch.values[p - 1] for p in fresh], call.received,
            [batch.sent[p - 1] for p in fresh])
    call.wrote = True
    if not all(inserted):
        duplicates.extend(position for position, went_in in zip(positions, inserted) if not went_in)
    if duplicates:
        raise duplicate_error(unit, batch, sorted(duplicates))
    return OK


def duplicate_error(unit: UnitRecord, batch: Upload, positions: list[int]) -> ProtocolError:
    """The manual's ``406 Duplicate sample``, each duplicate's 1-based position and timestamp as
    sent appended: ``406 Duplicate sample 2<2009-1-16 15:30:45>``."""
    sent = batch.sent
    return ProtocolError(406, f"{len(positions)} duplicate sample(s) for unit {unit.code!r}",
                         "".join(f"{p}<{sent[p - 1]}>" for p in positions))


def upload_batch(calls: list[Call]) -> list[str | ProtocolError]:
    """:func:`upload` for consecutive uploads of different units: the one-sample uploads among
    them (what most meters send) go into the database in one multi-row INSERT."""
    outcomes: list[str | ProtocolError] = [OK] * len(calls)
    singles: list[tuple[int, UnitRecord, Upload]] = []
    samples = []
    for index, call in enumerate(calls):
        try:
            unit = call.unit()
            batch = parse_upload(call.request.argument, unit.channels)
            if len(batch.timestamps) == 1:
                singles.append((index, unit, batch))
                samples.append((unit, batch.timestamps[0], batch.sent[0], batch.values[0]))
            else:
                outcomes[index] = _store_upload(call, unit, batch)
        except ProtocolError as exc:
            outcomes[index] = exc
    if samples:
        inserted = calls[0].store.insert_one_each(samples, calls[0].received)
        for (index, unit, batch), went_in in zip(singles, inserted):
            calls[index].wrote = True
            if not went_in:
                outcomes[index] = duplicate_error(unit, batch, [1])
    return outcomes


upload.ttp_single_statement = True  # type: ignore[attr-defined]
upload.ttp_batch = upload_batch  # type: ignore[attr-defined]


def download(call: Call) -> str:
    """``TTP /dl/<code>/last <key>``: the unit's sample with the newest timestamp."""
    unit = call.unit()
    if call.request.argument.strip().lower() != "last":
        raise ProtocolError(400, "download argument is not 'last'")
    sample = call.store.newest(unit)
    if sample is None:
        raise ProtocolError(404, f"unit {unit.code!r} has no sample")
    values = [format_value(v) for v in sample.values]
    if unit.show_labels:
        values = [f"{label}={value}" for label, value in zip(unit.channel_labels(), values)]
    return f"OK <{sample.id} {format_timestamp(sample.timestamp)} {' '.join(values)}>"


download.ttp_single_statement = True  # type: ignore[attr-defined]
download.ttp_writes_nothing = True  # type: ignore[attr-defined]


def alarm(call: Call) -> str:
    """``TTP /al/<code>/<LEVEL;DATA;DATA...> <key>``: store an alarm; its email goes out later.

    ``OK`` once the alarm is committed with the pass. With ALARM_EMAIL_MIN_INTERVAL set, an alarm
    that follows an emailed one of the same unit and level too soon is stored as ``suppressed``.
    """
    unit = call.unit()
    level, data = parse_alarm(call.request.argument)
    status = "pending"
    interval = call.settings.ALARM_EMAIL_MIN_INTERVAL
    if interval > 0:
        since = call.received - dt.timedelta(seconds=interval)
        recent = (schema.Alarm.select(schema.Alarm.id)
                  .where((schema.Alarm.unit == unit.id) & (schema.Alarm.level == level) & (schema.Alarm.received > since)
                         & schema.Alarm.email_status.in_(EMAILED))
                  .limit(1))
        if recent.exists(call.db):
            status = "suppressed"
    schema.Alarm.insert(unit=unit.id, level=level, data=data, received=call.received, email_status=status,
                        email_next_attempt=call.received if status == "pending" else None).execute(call.db)
    call.wrote = True
    if status == "pending":
        call.announce("alarm")  # txm serve wakes the email worker
    else:
        # DEBUG: a flapping meter must not flood the log either.
        call.log.debug("alarm of unit %s level %d stored; email suppressed (ALARM_EMAIL_MIN_INTERVAL)",
                       unit.code, level)
    return "OK"


#: The built-in verbs by name.
BUILTIN_VERBS: dict[str, Verb] = {"up": upload, "dl": download, "al": alarm}
