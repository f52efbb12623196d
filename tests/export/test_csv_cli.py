"""``txm export-csv``: output, files, incremental exports with back-fill, exit codes, and a
million samples streamed in constant memory."""

from __future__ import annotations

import csv
import datetime as dt
import io
import sqlite3
import subprocess
import sys
from contextlib import closing

import peewee as pw
import pytest

from tests.conftest import TXM, txm_subprocess_env, write_toml
from tests.samples import store_samples
from txm import manage
from txm.config import read_settings
from txm.db import schema
from txm.export.csv import read_cursor

LONG_AGO = dt.datetime(2026, 1, 1)  # "received" of samples stored before the test


@pytest.fixture
def units(database):
    manage.add_unit("M1", "k", 3, labels="Flow,Level,Temp")
    manage.add_unit("M2", "k", 1)
    store_samples(database, "M1", [(dt.datetime(2026, 1, 1, 0, 0, i), [i, i * 10, None]) for i in range(3)],
                  received=LONG_AGO)
    store_samples(database, "M2", [(dt.datetime(2026, 1, 5, 12, 0, 0, 500000), [7.25])], received=LONG_AGO)
    return database


def test_one_unit_to_standard_output(run_cli, units):
    result = run_cli("export-csv", "M1")
    assert result.stdout_bytes == (b"timestamp,Flow,Level,Temp\r\n"
                                   b"2026-01-01 00:00:00,0.0,0.0,\r\n"
                                   b"2026-01-01 00:00:01,1.0,10.0,\r\n"
                                   b"2026-01-01 00:00:02,2.0,20.0,\r\n")
    assert result.stderr_bytes == b""  # no progress bar, no summary without a terminal
    assert run_cli("export-csv", "M1", "-o", "-").stdout_bytes == result.stdout_bytes


def test_fields_range_and_report_options(run_cli, units):
    result = run_cli("export-csv", "M1", "--fields", "Temp,1", "--from", "2026-01-01 00:00:01",
                     "--to", "2026-01-01 00:00:01")
    assert result.stdout_bytes.decode() == "timestamp,Temp,Flow\r\n2026-01-01 00:00:01,,1.0\r\n"
    unit = schema.Unit.by_code("M1")
    unit.report_fields = [2]
    unit.save()
    assert run_cli("export-csv", "M1", "--to", "2026-01-01 00:00:00").stdout_bytes.decode() == (
        "timestamp,Level\r\n2026-01-01 00:00:00,0.0\r\n")
    assert run_cli("export-csv", "M1", "--fields", "all", "--from", "2026-01-01 00:00:02").stdout_bytes.decode() == (
        "timestamp,Flow,Level,Temp\r\n2026-01-01 00:00:02,2.0,20.0,\r\n")


def test_output_file_and_every_unit_into_a_folder(run_cli, units, tmp_path):
    target = tmp_path / "m2.csv"
    assert run_cli("export-csv", "M2", "-o", str(target)).stdout_bytes.decode() == ""
    assert target.read_bytes() == b"timestamp,ch1\r\n2026-01-05 12:00:00.500000,7.25\r\n"
    folder = tmp_path / "all" / "today"
    run_cli("export-csv", "--all", "-o", str(folder))
    assert sorted(p.name for p in folder.iterdir()) == ["M1.csv", "M2.csv"]
    assert (folder / "M2.csv").read_bytes() == target.read_bytes()
    assert (folder / "M1.csv").read_bytes().count(b"\r\n") == 4


@pytest.mark.parametrize("args, code, words", [
    (["M9"], 1, "no unit with code 'M9'"),
    (["M1", "--from", "2026-02-30"], 2, "not a real date"),
    (["M1", "--to", "yesterday-ish"], 2, "is not a date"),
    (["M1", "--from", "2026-01-02", "--to", "2026-01-01"], 2, "not before the end"),
    (["M1", "--fields", "Pressure"], 2, "no field 'Pressure'"),
    (["M1", "--fields", "4"], 2, "no field 4"),
    (["--all", "--fields", "Flow", "-o", "DIR"], 2, "unit M2 has no field 'Flow'"),
    ([], 2, "name one unit CODE, or give --all"),
    (["M1", "--all", "-o", "x"], 2, "name one unit CODE, or give --all"),
    (["--all"], 2, "name the folder with -o DIR"),
    (["M1", "--since-last", "n", "--from", "2026-01-01"], 2, "cannot be combined"),
    (["M1", "--since-last", "two words"], 2, "without spaces"),
])
def test_bad_input_is_a_clear_error_and_writes_nothing(run_cli, units, tmp_path, args, code, words):
    args = [str(tmp_path / a) if a == "DIR" else a for a in args]
    result = run_cli("export-csv", *args, expect=code)
    assert words in result.output
    assert "Traceback" not in result.output
    assert result.stdout_bytes.decode() == "" or result.stdout.startswith("Usage")
    assert not (tmp_path / "DIR").exists()
    assert schema.ExportCursor.select().count() == 0


def test_since_last_never_misses_or_repeats_a_sample_even_with_back_fill(run_cli, units, database):
    first = run_cli("export-csv", "M1", "--since-last", "nightly").stdout_bytes.decode()
    assert first.splitlines()[1:] == ["2026-01-01 00:00:00,0.0,0.0,", "2026-01-01 00:00:01,1.0,10.0,",
                                      "2026-01-01 00:00:02,2.0,20.0,"]
    assert run_cli("export-csv", "M1", "--since-last", "nightly").stdout_bytes.decode() == "timestamp,Flow,Level,Temp\r\n"
    # the meter back-fills an older sample and sends a new one: both come next time, in the
    # order they were stored (the back-filled one first although its timestamp is older)
    store_samples(database, "M1", [(dt.datetime(2025, 12, 31, 23, 59, 59), [-1, -1, -1])], received=LONG_AGO)
    store_samples(database, "M1", [(dt.datetime(2026, 1, 1, 0, 0, 3), [3, 30, 3])], received=LONG_AGO)
    second = run_cli("export-csv", "M1", "--since-last", "nightly").stdout_bytes.decode()
    assert second.splitlines()[1:] == ["2025-12-31 23:59:59,-1.0,-1.0,-1.0", "2026-01-01 00:00:03,3.0,30.0,3.0"]
    # another unit's job under the same name keeps its own place
    assert run_cli("export-csv", "M2", "--since-last", "nightly").stdout_bytes.decode().count("\r\n") == 2
    cursor = schema.ExportCursor.get(schema.ExportCursor.name == "csv:nightly:M1")
    assert cursor.last_sample_id == schema.Sample.select(pw.fn.MAX(schema.Sample.id)).scalar()


def test_since_last_every_unit(run_cli, units, database, tmp_path):
    run_cli("export-csv", "--all", "--since-last", "feed", "-o", str(tmp_path / "1"))
    store_samples(database, "M2", [(dt.datetime(2020, 1, 1), [1.5])], received=LONG_AGO)
    run_cli("export-csv", "--all", "--since-last", "feed", "-o", str(tmp_path / "2"))
    assert (tmp_path / "1" / "M1.csv").read_bytes().count(b"\r\n") == 4
    assert (tmp_path / "2" / "M1.csv").read_bytes() == b"timestamp,Flow,Level,Temp\r\n"
    assert (tmp_path / "2" / "M2.csv").read_bytes() == b"timestamp,ch1\r\n2020-01-01 00:00:00,1.5\r\n"


def test_since_last_takes_a_sample_committed_just_now(run_cli, units, database):
    """Every committed sample is final once no transaction that could store a smaller id is
    open (txm.db.horizon), so the next run takes it at once, on every backend."""
    run_cli("export-csv", "M2", "--since-last", "n")
    store_samples(database, "M2", [(dt.datetime(2026, 2, 1), [2.0])])  # received now
    fresh = run_cli("export-csv", "M2", "--since-last", "n").stdout_bytes.decode()
    assert fresh == "timestamp,ch1\r\n2026-02-01 00:00:00,2.0\r\n"
    assert run_cli("export-csv", "M2", "--since-last", "n").stdout_bytes.decode().count("\r\n") == 1


def test_a_failed_write_leaves_no_file_and_keeps_the_cursor(run_cli, units, tmp_path):
    (tmp_path / "plain").write_text("a file, not a folder")
    result = run_cli("export-csv", "M1", "--since-last", "n", "-o", str(tmp_path / "plain" / "x.csv"), expect=1)
    assert "cannot write" in result.output and "Traceback" not in result.output
    result = run_cli("export-csv", "--all", "--since-last", "n", "-o", str(tmp_path / "plain"), expect=1)
    assert "cannot create the folder" in result.output
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "txm.db" and not p.name.startswith("txm.")) == [
        "plain"]
    assert read_cursor("csv:n:M1") == 0 and read_cursor("csv:n") == 0


# --- a million samples --------------------------------------------------------------------------

MILLION = 1_000_000


def expected_row(i: int) -> list[str]:
    stamp = dt.datetime(2020, 1, 1) + dt.timedelta(seconds=10 * i, microseconds=(i % 4) * 250_000)
    return [str(stamp), repr(i * 0.5), repr(float(-i)), repr(i / 7), repr(1000.0 + i % 97)]


def make_big_database(folder, samples: int):
    config = write_toml(folder / "txm.toml", {"DATABASE_NAME": str(folder / "big.db")})
    with closing(manage.syncdb(read_settings(config)).database):
        manage.add_unit("M1", "k", 4)
    received = "2026-01-01 00:00:00"
    with closing(sqlite3.connect(folder / "big.db")) as conn, conn:  # closed, after the commit
        conn.executemany(
            "INSERT INTO sample (unit_id, timestamp, received, ch1, ch2, ch3, ch4) VALUES (1, ?, ?, ?, ?, ?, ?)",
            ((str(dt.datetime(2020, 1, 1) + dt.timedelta(seconds=10 * i, microseconds=(i % 4) * 250_000)),
              received, i * 0.5, -i, i / 7, 1000.0 + i % 97) for i in range(samples)))
    return config


def peak_rss_of_export(config, out_path, *args) -> int:
    """Peak resident memory (KiB) of a ``txm export-csv`` subprocess, measured by a parent
    process whose only child it is."""
    probe = ("import resource, subprocess, sys\n"
             "with open(sys.argv[1], 'wb') as out:\n"
             "    subprocess.run(sys.argv[2:], stdout=out, check=True)\n"
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    done = subprocess.run([sys.executable, "-c", probe, str(out_path), *TXM, "--config", str(config),
                           "export-csv", *args], capture_output=True, text=True, env=txm_subprocess_env(),
                          timeout=600)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip())


@pytest.mark.slow
def test_a_million_samples_exact_and_in_constant_memory(tmp_path):
    config = make_big_database(tmp_path, MILLION)
    small = peak_rss_of_export(config, tmp_path / "small.csv", "M1", "--to", "2020-01-01")  # one day: 8,640 samples
    big = peak_rss_of_export(config, tmp_path / "big.csv", "M1")
    size = (tmp_path / "big.csv").stat().st_size
    assert size > 60_000_000
    # holding the rows (or the text) would add tens of MB; streaming adds next to nothing
    assert big - small < 20_000, f"peak RSS {big} KiB for a million samples against {small} KiB for 8,640"
    with open(tmp_path / "big.csv", newline="") as f:
        reader = csv.reader(f)
        assert next(reader) == ["timestamp", "ch1", "ch2", "ch3", "ch4"]
        checked = 0
        for i, row in enumerate(reader):
            if i % 997 == 0 or i < 5 or i > MILLION - 5:
                assert row == expected_row(i), f"row {i}"
                checked += 1
        assert i == MILLION - 1 and checked > 1000
    small_rows = list(csv.reader(io.StringIO((tmp_path / "small.csv").read_text(), newline="")))
    assert len(small_rows) == 1 + 8640 and small_rows[-1] == expected_row(8639)


def read_terminal(master: int, proc: subprocess.Popen) -> str:
    """Everything the process wrote to its terminal, until it exits."""
    import os

    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the terminal closed: the process is gone
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(60)
    return b"".join(chunks).decode(errors="replace")


def test_a_progress_bar_and_a_summary_at_a_terminal_only(config_file, units, tmp_path):
    """At a real (pseudo-)terminal the command draws a progress bar and says what it did; the
    same command from cron (no terminal) writes nothing but the CSV, as the first test shows."""
    import os
    import pty

    units.close()
    target = tmp_path / "m1.csv"
    master, slave = pty.openpty()
    env = txm_subprocess_env(TERM="xterm", COLUMNS="100")
    proc = subprocess.Popen([*TXM, "--config", str(config_file), "export-csv", "M1", "-o", str(target)],
                            stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    try:
        screen = read_terminal(master, proc)
    finally:
        os.close(master)
    assert proc.returncode == 0, screen
    assert "exporting" in screen and "3/3" in screen, screen
    assert f"Exported 3 sample(s) to {target}." in screen.replace("\r\n", "").replace("\n", "")
    assert target.read_bytes().startswith(b"timestamp,Flow,Level,Temp\r\n")
