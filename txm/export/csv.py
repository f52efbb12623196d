"""CSV exports of samples: the columns, the timestamp format and the streaming query.

One module serves ``txm export-csv``, the web interface's CSV download and scripts, so all
three write the same columns and the same timestamps.

The CSV format (docs/export.md)
-------------------------------
* RFC 4180: comma-separated, CR LF line ends, fields quoted only when they need it.
* A header row: ``timestamp`` and then the label of each exported channel (its configured
  label, else ``ch<N>``; see :meth:`txm.db.Unit.channel_labels`).
* ``timestamp`` is the meter's own clock time as the meter sent it (no time zone), written
  ``YYYY-MM-DD HH:MM:SS`` with ``.ffffff`` (exactly six digits) added only when the sample
  has fractions of a second -- ISO 8601 with a space, the form TTP downloads use too.
* Values: the shortest text that reads back as the same number (``11.0``, ``0.1``,
  ``1e+20``); an empty field where the sample has no value for that channel.
* Rows in timestamp order; with an incremental export (``after_id``) in the order the
  samples were stored (sample id), so a back-filled sample comes after newer ones.

Streaming
---------
Rows are read in pages with keyset pagination -- ``(unit, timestamp) > last`` on the unique
``(unit_id, timestamp)`` index, or ``id > last`` for incremental exports -- with plain DB-API
cursors and no model object per row, so memory stays constant on SQLite, PostgreSQL and
MariaDB whatever the number of samples.

Scripts::

    from txm import config
    from txm.db.database import open_database
    from txm.export import csv
    open_database(config.load_settings())
    for timestamp, *values in csv.rows("M1", start="2026-01-01", end="2026-01-31"):
        ...
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator, Sequence

import peewee as pw

from txm.db import schema
from txm.db.dialect import Dialect
from txm.db.horizon import Horizon
from txm.db.sqlite import write_transaction
from txm.errors import DatabaseError, InvalidValue, TxmError
from txm.export.ranges import parse_range
from txm.timestamps import format_timestamp

log = logging.getLogger("txm.export")

#: Rows read per query.
PAGE_SIZE = 10_000
#: Seconds ``txm export-csv --since-last`` waits at most, on PostgreSQL and MariaDB, for the
#: transactions that may still commit a sample id below the newest one (:mod:`txm.db.horizon`);
#: samples not final by then are left for the next run (and a warning says so).
WAIT_SECONDS = 30.0
#: The first column's name.
TIMESTAMP_COLUMN = "timestamp"

# --- fields --------------------------------------------------------------------------------------


def _unit(unit: schema.Unit | str) -> schema.Unit:
    return unit if isinstance(unit, schema.Unit) else schema.Unit.by_code(unit)


def resolve_fields(unit: schema.Unit, spec: str | Sequence[int | str] | None = None) -> list[int]:
    """The channel numbers (1-based) exported, in order.

    ``spec`` empty or None: the unit's report options (``report_fields``; none chosen means
    every channel). ``"all"``: every channel. Otherwise a comma-separated list (or a sequence)
    of channel numbers (``1,3``), ranges (``2-4``) and channel labels (``Flow,Temp``); a
    number is taken as a channel number before it is looked up as a label.
    """
    channels = unit.channels
    labels = unit.channel_labels()
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        chosen = [int(n) for n in (unit.report_fields or []) if isinstance(n, int) and 1 <= n <= channels]
        return chosen or list(range(1, channels + 1))
    items = [p.strip() for p in spec.split(",")] if isinstance(spec, str) else [str(p).strip() for p in spec]
    if [i.lower() for i in items] == ["all"]:
        return list(range(1, channels + 1))
    choices = f"channel numbers 1 to {channels}, ranges such as 1-{channels}, or labels {', '.join(labels)}"
    result: list[int] = []
    for item in items:
        if not item:
            raise InvalidValue(f"the field list {spec!r} has an empty entry; give {choices}")
        numbers: list[int]
        if item.isdigit():
            numbers = [int(item)]
        elif re.fullmatch(r"\d+-\d+", item):
            lo, hi = (int(x) for x in item.split("-"))
            if lo > hi:
                raise InvalidValue(f"field range {item!r} runs backwards; write it low-high")
            numbers = list(range(lo, hi + 1))
        elif item in labels:
            numbers = [labels.index(item) + 1]
        else:
            folded = [label.lower() for label in labels]
            if folded.count(item.lower()) != 1:
                raise InvalidValue(f"unit {unit.code} has no field {item!r}; give {choices}")
            numbers = [folded.index(item.lower()) + 1]
        for number in numbers:
            if not 1 <= number <= channels:
                raise InvalidValue(f"unit {unit.code} has no field {number} (it has {channels}); give {choices}")
            if number in result:
                raise InvalidValue(f"field {number} ({labels[number - 1]}) is given twice")
            result.append(number)
    return result


def header(unit: schema.Unit, fields: Sequence[int]) -> list[str]:
    """The header row: ``timestamp`` and the label of each exported channel."""
    labels = unit.channel_labels()
    return [TIMESTAMP_COLUMN, *(labels[n - 1] for n in fields)]


# --- the query -----------------------------------------------------------------------------------


def _sqlite_stamp(value: Any) -> str:
    """A timestamp read from SQLite as the CSV writes it; the stored text usually is already."""
    if isinstance(value, str) and len(value) in (19, 26) and value[10] == " ":
        return value
    return format_timestamp(Dialect.to_datetime(value))


def _stamp(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return format_timestamp(value)
    return _sqlite_stamp(value)


def settled_last_id(db: pw.Database, after_id: int = 0) -> int:
    """The highest sample id an incremental export may take now, without waiting (``after_id``
    if none is new): no transaction still open can commit a sample at or below it
    (:class:`txm.db.horizon.Horizon`; on SQLite, every visible id). For a server's loop: a
    database user without the privilege the horizon needs is logged once, and nothing is taken."""
    horizon = Horizon.of(db)
    try:
        return horizon.settled(after_id)
    except DatabaseError as exc:
        if not horizon.reported:
            horizon.reported = True
            log.error("no sample is exported: %s", exc)
        return after_id


def wait_settled(db: pw.Database, after_id: int = 0, timeout: float | None = None) -> int:
    """Like :func:`settled_last_id`, but waits up to ``timeout`` seconds for the transactions
    still open to end (``txm export-csv --since-last``); what is not final by then is left for
    the next run, with a warning (default :data:`WAIT_SECONDS`). A missing privilege is a
    :class:`DatabaseError`."""
    timeout = WAIT_SECONDS if timeout is None else timeout
    horizon = Horizon.of(db)
    upto = horizon.wait(after_id, timeout)
    if upto < horizon.newest:
        log.warning("samples after id %d are left for the next run: %d transaction(s) that may still store "
                    "samples up to id %d were open after %g s", upto, horizon.open_count, horizon.newest, timeout)
    return upto


class UnitExport:
    """The samples of one unit to export: a time range, or the ids after an incremental cursor.

    ``start``/``end``: inclusive start and exclusive end of the sample timestamps (see
    :func:`parse_range`). ``after_id``/``upto_id``: only samples with ``after_id < id <=
    upto_id``, in id order (incremental exports). :attr:`count` and :attr:`last_id` grow as
    rows are read.
    """

    def __init__(self, db: pw.Database, unit: schema.Unit | str, fields: str | Sequence[int | str] | None = None,
                 start: str | dt.datetime | None = None, end: str | dt.datetime | None = None,
                 after_id: int | None = None, upto_id: int | None = None, page_size: int = PAGE_SIZE):
        self.db = db
        self.unit = _unit(unit)
        self.fields = resolve_fields(self.unit, fields)
        self.start, self.end = parse_range(start, end)
        self.after_id = after_id
        self.upto_id = upto_id
        self.page_size = page_size
        self.count = 0
        #: The id of the last sample read, for incremental exports (in id order).
        self.last_id = after_id or 0
        self._dialect = Dialect.of(db)

    def header(self) -> list[str]:
        return header(self.unit, self.fields)

    def _where(self) -> tuple[str, list[Any]]:
        d = self._dialect
        sql, params = d.samples_where(self.unit.id, self.start, self.end)
        if self.upto_id is not None:
            sql += f" AND {d.ident('id')} <= {d.param}"
            params.append(self.upto_id)
        return sql, params

    def total(self) -> int:
        """How many samples the export holds (one COUNT query; for progress bars)."""
        where, params = self._where()
        d = self._dialect
        if self.after_id is not None:
            where += f" AND {d.ident('id')} > {d.param}"
            params.append(self.after_id)
        cursor = self.db.cursor()
        cursor.execute(f"SELECT COUNT(*) FROM {d.ident('sample')} WHERE {where}", params)
        return int(cursor.fetchone()[0])

    def raw_pages(self, empty_as_text: bool = False) -> Iterator[list[tuple]]:
        """Pages of raw rows as the driver returns them: ``(timestamp, ch...)``, with the
        sample id first for an incremental export. ``empty_as_text`` (SQLite): a missing value
        comes as ``''`` instead of None, ready for the CSV."""
        d = self._dialect
        where, params = self._where()
        if empty_as_text and d.kind == "sqlite":
            columns = ", ".join(f"IFNULL({d.ident(f'ch{n}')}, '')" for n in self.fields)
        else:
            columns = d.idents(f"ch{n}" for n in self.fields)
        by_id = self.after_id is not None
        key = d.ident("id" if by_id else "timestamp")
        base = (f"SELECT {d.ident('id')}, " if by_id else "SELECT ") + (
            f"{d.ident('timestamp')}, {columns} FROM {d.ident('sample')} WHERE {where}")
        first = base + (f" AND {key} > {d.param}" if by_id else "") + f" ORDER BY {key} LIMIT {self.page_size}"
        following = base + f" AND {key} > {d.param} ORDER BY {key} LIMIT {self.page_size}"
        sql, args = first, params + ([self.after_id] if by_id else [])
        cursor = self.db.cursor()
        while True:
            cursor.execute(sql, args)
            page = cursor.fetchall()
            if not page:
                return
            self.count += len(page)
            if by_id:
                self.last_id = page[-1][0]
            yield page
            if len(page) < self.page_size:
                return
            sql, args = following, params + [page[-1][0]]  # the key: id, or the raw timestamp

    def rows(self) -> Iterator[tuple]:
        """Rows ``(timestamp: datetime, value, ...)``, a value None where the sample has none."""
        skip = 1 if self.after_id is not None else 0
        for page in self.raw_pages():
            for row in page:
                yield (Dialect.to_datetime(row[skip]), *row[skip + 1:])

    def csv_pages(self, with_header: bool = True) -> Iterator[str]:
        """The CSV text in pieces of about :data:`PAGE_SIZE` rows (header first, when asked)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        if with_header:
            writer.writerow(self.header())
            yield _take(buffer)
        by_id = self.after_id is not None
        if self._dialect.kind == "sqlite":
            # The stored text is the CSV's timestamp and str() of a float is the shortest exact
            # form, so one %-template per row writes exactly what csv.writer would, twice as fast.
            template = ",".join(["%s"] * (1 + len(self.fields))) + "\r\n"
            for page in self.raw_pages(empty_as_text=True):
                if by_id:
                    page = [row[1:] for row in page]
                if any(len(row[0]) != 19 and len(row[0]) != 26 for row in page):
                    page = [(_sqlite_stamp(row[0]), *row[1:]) for row in page]
                yield "".join([template % row for row in page])
            return
        skip = 1 if by_id else 0
        for page in self.raw_pages():
            writer.writerows([(_stamp(row[skip]), *row[skip + 1:]) for row in page])
            yield _take(buffer)


def _take(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text


# --- for scripts ---------------------------------------------------------------------------------


def rows(unit: schema.Unit | str, fields: str | Sequence[int | str] | None = None,
         start: str | dt.datetime | None = None, end: str | dt.datetime | None = None) -> Iterator[tuple]:
    """A unit's samples as rows ``(timestamp, value, ...)`` in timestamp order, from the bound
    database (:func:`txm.db.open_database`). Arguments as for ``txm export-csv``."""
    return UnitExport(schema.database.obj, unit, fields, start, end).rows()


def csv_text(unit: schema.Unit | str, fields: str | Sequence[int | str] | None = None,
             start: str | dt.datetime | None = None, end: str | dt.datetime | None = None,
             with_header: bool = True) -> Iterator[str]:
    """The CSV of a unit's samples, in pieces, from the bound database: what the web
    interface's download and ``txm export-csv`` send."""
    return UnitExport(schema.database.obj, unit, fields, start, end).csv_pages(with_header)


def iter_pieces(pieces: Iterable[str]) -> Iterator[bytes]:
    """CSV pieces as UTF-8 bytes (for a WSGI response body)."""
    for piece in pieces:
        yield piece.encode("utf-8")


# --- txm export-csv: files, incremental cursors --------------------------------------------------

#: Prefix of the ``export_cursor`` names that ``--since-last`` keeps.
CURSOR_PREFIX = "csv:"
#: Longest NAME for ``--since-last`` (the stored name adds the prefix and a unit code).
MAX_CURSOR_NAME = 100


def cursor_name(name: str, code: str | None = None) -> str:
    """The ``export_cursor`` row of ``--since-last NAME``: ``csv:NAME`` for ``--all``,
    ``csv:NAME:CODE`` for one unit, so one name serves several units' jobs independently."""
    name = (name or "").strip()
    if not name or len(name) > MAX_CURSOR_NAME or any(ch.isspace() or ch == ":" for ch in name):
        raise InvalidValue(f"export name {name!r} must have 1 to {MAX_CURSOR_NAME} characters, "
                           f"without spaces or ':'")
    return f"{CURSOR_PREFIX}{name}" + (f":{code}" if code else "")


def read_cursor(name: str) -> int:
    """The last sample id exported under this cursor name (0: never)."""
    row = schema.ExportCursor.get_or_none(schema.ExportCursor.name == name)
    return row.last_sample_id if row else 0


def save_cursor(name: str, last_id: int) -> None:
    """Move the cursor forward to ``last_id`` (never back)."""
    with write_transaction():
        row = schema.ExportCursor.get_or_none(schema.ExportCursor.name == name)
        if row is None:
            schema.ExportCursor.create(name=name, last_sample_id=last_id, updated=schema.utcnow())
        elif last_id > row.last_sample_id:
            row.last_sample_id = last_id
            row.updated = schema.utcnow()
            row.save()


class Progress:
    """What an export reports as it goes; the command line draws it as a bar."""

    #: Count the samples first (one COUNT query per unit) to report a total.
    wants_total = False

    def total(self, samples: int) -> None:
        """The number of samples the whole export will write."""

    def advance(self, samples: int) -> None:
        """Some more samples were written."""


@dataclass
class CsvExportResult:
    samples: int = 0
    files: list[Path] = field(default_factory=list)
    cursor: str | None = None
    last_id: int | None = None


def _write(run: UnitExport, out: BinaryIO, progress: Progress) -> None:
    reported = 0
    for piece in run.csv_pages():
        out.write(piece.encode("utf-8"))
        if run.count > reported:
            progress.advance(run.count - reported)
            reported = run.count


def export_csv(db: pw.Database, code: str | None, out: BinaryIO | Path | None, *,
               fields: str | None = None, start: str | None = None, end: str | None = None,
               since_last: str | None = None, progress: Progress | None = None,
               wait_seconds: float | None = None) -> CsvExportResult:
    """``txm export-csv``: one unit (``code``) to a binary stream or a file, or every unit
    (``code`` None) to one ``CODE.csv`` per unit in the folder ``out``.

    With ``since_last`` the export holds the samples stored since the last run under that
    name (sample id order) and the cursor moves on once everything is written; a file is
    written under a temporary name and renamed when complete, so a failed run leaves no
    partial file and the next run exports the same samples again. On PostgreSQL and MariaDB it
    takes only samples that are final, waiting up to ``wait_seconds`` (default
    :data:`WAIT_SECONDS`) for transactions still open (:func:`wait_settled`).
    """
    progress = progress or Progress()
    if since_last and (start or end):
        raise InvalidValue("--since-last takes every sample stored since the last run; "
                           "it cannot be combined with --from or --to")
    units = ([_unit(code)] if code is not None
             else list(schema.Unit.select().order_by(schema.Unit.code)))
    name = cursor_name(since_last, code) if since_last else None
    after = upto = None
    if name:
        after = read_cursor(name)
        upto = wait_settled(db, after, wait_seconds)
    # every unit's fields and the dates are checked before anything is written
    runs = [UnitExport(db, unit, fields, start, end, after_id=after, upto_id=upto) for unit in units]
    result = CsvExportResult(cursor=name, last_id=upto)
    if progress.wants_total:
        progress.total(sum(run.total() for run in runs))
    if code is not None:
        run = runs[0]
        if isinstance(out, Path):
            _write_file(run, out, progress)
            result.files.append(out)
        else:
            _write(run, out, progress)
            out.flush()
        result.samples = run.count
    else:
        if not isinstance(out, Path):
            raise InvalidValue("exporting every unit writes one file per unit: name a folder with -o DIR")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TxmError(f"cannot create the folder {out}: {exc.strerror or exc}") from None
        for run in runs:
            target = out / f"{run.unit.code}.csv"
            _write_file(run, target, progress)  # header only when nothing is new: no stale file stays
            result.files.append(target)
            result.samples += run.count
    if name and upto is not None:
        save_cursor(name, upto)
    return result


def _write_file(run: UnitExport, path: Path, progress: Progress) -> None:
    """Write the unit's CSV to ``path`` through a temporary file renamed when complete."""
    partial = path.with_name(path.name + ".partial")
    try:
        with open(partial, "wb") as out:
            _write(run, out, progress)
        os.replace(partial, path)
    except OSError as exc:
        _remove(partial)
        raise TxmError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        _remove(partial)
        raise


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass
