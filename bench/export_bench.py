#!/usr/bin/env python3
"""``txm export-csv`` against the ``sqlite3`` shell, side by side on the same database.

Makes a fresh SQLite database (through ``txm syncdb``) with one unit of 4 channels and N
samples, then times, in one run and each a few times (best kept):

* ``sqlite3 -csv DB 'SELECT timestamp, ch1, ch2, ch3, ch4 FROM sample WHERE unit_id = 1 ORDER BY timestamp'``
* ``python -m txm export-csv M1 -o FILE`` from this checkout (start-up included),

checks that both files hold the same number of rows, and prints the times, the ratio and the
targets (txm under 5 s for a million samples, and at most twice the shell's time).
The sqlite3 shell must be installed (Debian: ``apt-get install sqlite3``).

Example:
  python bench/export_bench.py                # 1,000,000 samples: about a minute with the set-up
  python bench/export_bench.py --quick        # 20,000 samples: a few seconds, proves the script works
  python bench/export_bench.py --samples 200000 --repeat 1 --json export.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHANNELS = 4
QUERY = "SELECT timestamp, ch1, ch2, ch3, ch4 FROM sample WHERE unit_id = 1 ORDER BY timestamp"


def txm_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def make_database(folder: Path, samples: int) -> Path:
    """A txm database (made by txm syncdb) with unit M1 holding ``samples`` samples."""
    config = folder / "txm.toml"
    config.write_text('DATABASE_NAME = "bench.db"\n', encoding="utf-8")
    for args in (["syncdb"], ["unit", "add", "M1", "--key", "k", "--fields", str(CHANNELS),
                              "--labels", "Flow,Level,Temp,Pressure"]):
        subprocess.run([sys.executable, "-m", "txm", "--config", str(config), *args], check=True,
                       env=txm_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = folder / "bench.db"
    conn = sqlite3.connect(db)
    start = dt.datetime(2020, 1, 1)
    received = str(dt.datetime(2026, 1, 1))
    rows = ((1, str(start + dt.timedelta(seconds=10 * i, microseconds=(i % 4) * 250_000)), received,
             i * 0.5, -i, i / 7, 1000.0 + i % 97) for i in range(samples))
    with conn:
        conn.executemany("INSERT INTO sample (unit_id, timestamp, received, ch1, ch2, ch3, ch4) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    conn.close()
    return config


def timed(command: list[str], out: Path, env: dict[str, str] | None = None) -> float:
    with open(out, "wb") as sink:
        began = time.perf_counter()
        subprocess.run(command, check=True, stdout=sink, env=env)
        return time.perf_counter() - began


def count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=1_000_000, help="samples of the unit (default 1,000,000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each, best kept (default 3)")
    parser.add_argument("--quick", action="store_true", help="20,000 samples, one run each: a smoke run")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    samples, repeat = (20_000, 1) if args.quick else (args.samples, max(1, args.repeat))
    shell = shutil.which("sqlite3")
    if shell is None:
        print("the sqlite3 shell is not installed (Debian: apt-get install sqlite3)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="txm-export-bench-") as tmp:
        folder = Path(tmp)
        began = time.perf_counter()
        config = make_database(folder, samples)
        print(f"database with {samples:,} samples of {CHANNELS} channels made in {time.perf_counter() - began:.1f} s")
        shell_out, txm_out = folder / "shell.csv", folder / "txm.csv"
        shell_times, txm_times = [], []
        for _ in range(repeat):
            shell_times.append(timed([shell, "-csv", str(folder / "bench.db"), QUERY], shell_out))
            txm_times.append(timed([sys.executable, "-m", "txm", "--config", str(config), "export-csv", "M1"],
                                   txm_out, env=txm_env()))
        shell_rows, txm_rows = count_lines(shell_out), count_lines(txm_out) - 1  # txm adds a header
        if shell_rows != samples or txm_rows != samples:
            print(f"row counts differ: {samples} stored, sqlite3 wrote {shell_rows}, txm wrote {txm_rows}",
                  file=sys.stderr)
            return 1
        best_shell, best_txm = min(shell_times), min(txm_times)
        result = {
            "samples": samples, "channels": CHANNELS, "repeat": repeat,
            "sqlite3_shell_seconds": round(best_shell, 3), "txm_export_csv_seconds": round(best_txm, 3),
            "ratio": round(best_txm / best_shell, 2) if best_shell else None,
            "txm_bytes": txm_out.stat().st_size, "sqlite3_bytes": shell_out.stat().st_size,
        }
    print(f"{'':<24}{'seconds':>10}{'MB':>8}")
    print(f"{'sqlite3 -csv':<24}{best_shell:>10.2f}{result['sqlite3_bytes'] / 1e6:>8.1f}")
    print(f"{'txm export-csv':<24}{best_txm:>10.2f}{result['txm_bytes'] / 1e6:>8.1f}")
    print(f"ratio txm/sqlite3: {result['ratio']} (target at most 2)")
    if samples == 1_000_000:
        print(f"target under 5 s for 1,000,000 samples: {'met' if best_txm < 5 else 'NOT met'}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
