#!/usr/bin/env python3
"""The admin panel's "Delete ALL Samples" against a busy TTP server: how long do meters wait?

Makes a fresh SQLite database with unit M1 holding N samples and unit M2, starts the TTP server
(in this process, port 0), and has a meter upload one sample of M2 per request without pause,
timing each reply. It measures the replies

1. for a few seconds with nothing else going on (the baseline),
2. while the admin panel's bulk deletion (:meth:`txm.admin.records.SAMPLES.delete_bulk`, batches of
   ``txm.db.bulk.BATCH_SIZE``) removes M1's N samples in another process, as the web process would,
3. with ``--compare``: while one single ``DELETE`` statement removes the same N samples again
   (what batching avoids).

and prints the deletion's time and rate, and the meter's median, 99th percentile and longest
reply in each phase. The target: the longest reply during the batched deletion stays far below
that of the single statement, and well under a second.

Example:
  python bench/admin_bench.py                  # 1,000,000 samples, with --compare: a few minutes
  python bench/admin_bench.py --quick          # 20,000 samples: a few seconds, proves the script works
  python bench/admin_bench.py --samples 200000 --json admin.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from txm import config, manage  # noqa: E402
from txm.admin.actor import Actor  # noqa: E402
from txm.admin.records import SAMPLES  # noqa: E402
from txm.client import TTPClient  # noqa: E402
from txm.db import schema
from txm.db.bulk import BATCH_SIZE
from txm.db.database import open_database
from txm.serve import ServerThread  # noqa: E402


def fill(db_path: Path, unit_id: int, samples: int) -> None:
    """Insert ``samples`` samples of the unit straight through sqlite3 (fast set-up)."""
    conn = sqlite3.connect(db_path)
    start = dt.datetime(2020, 1, 1)
    received = str(dt.datetime(2026, 1, 1))
    rows = ((unit_id, str(start + dt.timedelta(seconds=i)), received, float(i), -float(i)) for i in range(samples))
    with conn:
        conn.executemany("INSERT INTO sample (unit_id, timestamp, received, ch1, ch2) VALUES (?, ?, ?, ?, ?)", rows)
    conn.close()


def delete_batched(config_path: str, result: "multiprocessing.Queue") -> None:
    """In a child process, as the web process would: the panel's bulk deletion of unit M1."""
    settings = config.read_settings(config_path)
    open_database(settings)
    actor = Actor.of(schema.User.get_by_id(1), settings)
    started = time.perf_counter()
    outcome = SAMPLES.delete_bulk(actor, schema.Unit.get(schema.Unit.code == "M1"))
    result.put((outcome.deleted, time.perf_counter() - started))


def delete_single(db_path: str, result: "multiprocessing.Queue") -> None:
    """In a child process: one DELETE statement for all of M1's samples."""
    conn = sqlite3.connect(db_path, timeout=60)
    started = time.perf_counter()
    with conn:
        deleted = conn.execute("DELETE FROM sample WHERE unit_id = 1").rowcount
    conn.close()
    result.put((deleted, time.perf_counter() - started))


class Meter(threading.Thread):
    """Uploads M2 samples one per request; keeps (phase, seconds) per reply."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port = port
        self.phase = "baseline"
        self.times: dict[str, list[float]] = {}
        self.stop_event = threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        stamp = dt.datetime(2030, 1, 1)
        with TTPClient(port=self.port, timeout=120) as client:
            while not self.stop_event.is_set():
                stamp += dt.timedelta(seconds=1)
                line = f"TTP /up/M2/<{stamp:%Y-%m-%d %H:%M:%S};1;2> k2"
                started = time.perf_counter()
                reply = client.request(line)
                self.times.setdefault(self.phase, []).append(time.perf_counter() - started)
                if reply != "OK":
                    self.errors.append(reply)


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    if not ordered:
        return {"replies": 0}
    return {"replies": len(ordered), "median_ms": round(statistics.median(ordered) * 1000, 2),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
            "max_ms": round(ordered[-1] * 1000, 2)}


def run_child(target, args) -> tuple[int, float]:
    context = multiprocessing.get_context("spawn")  # a fresh interpreter, like the web process
    queue = context.Queue()
    child = context.Process(target=target, args=(*args, queue))
    child.start()
    deleted, seconds = queue.get(timeout=3600)
    child.join(60)
    return deleted, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--baseline-seconds", type=float, default=5.0)
    parser.add_argument("--compare", action="store_true", default=None,
                        help="also time one single DELETE statement (on by default, off with --quick)")
    parser.add_argument("--quick", action="store_true", help="20,000 samples, 1-second baseline")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    if args.quick:
        args.samples, args.baseline_seconds = 20_000, 1.0
    compare = (not args.quick) if args.compare is None else args.compare

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config_path = folder / "txm.toml"
        config_path.write_text('DATABASE_NAME = "bench.db"\nDS_PORT = 0\nBIND_ADDRESS = "127.0.0.1"\n')
        settings = config.read_settings(config_path)
        manage.syncdb(settings)
        manage.add_unit("M1", "k1", 2)
        manage.add_unit("M2", "k2", 2)
        schema.database.close()
        db_path = folder / "bench.db"
        fill(db_path, 1, args.samples)

        figures: dict[str, object] = {"samples": args.samples, "batch_size": BATCH_SIZE}
        with ServerThread(settings, timeout=30, module_services=False) as server:
            meter = Meter(server.ttp_port)
            meter.start()
            time.sleep(args.baseline_seconds)
            meter.phase = "batched"
            deleted, seconds = run_child(delete_batched, (str(config_path),))
            figures["batched_deletion"] = {"deleted": deleted, "seconds": round(seconds, 2),
                                           "rows_per_second": round(deleted / seconds) if seconds else None}
            if compare:
                meter.phase = "refill"
                fill(db_path, 1, args.samples)
                meter.phase = "single"
                deleted, seconds = run_child(delete_single, (str(db_path),))
                figures["single_statement_deletion"] = {"deleted": deleted, "seconds": round(seconds, 2)}
            meter.phase = "after"
            time.sleep(0.5)
            meter.stop_event.set()
            meter.join(120)
        for phase in ("baseline", "batched", "single"):
            if phase in meter.times:
                figures[f"meter_{phase}"] = summary(meter.times[phase])
        figures["meter_errors"] = meter.errors[:5]

    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 1 if meter.errors else 0


if __name__ == "__main__":
    sys.exit(main())
