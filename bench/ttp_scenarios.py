#!/usr/bin/env python3
"""Run the TTP benchmark scenarios against a fresh ``txm serve`` (COMMIT_INTERVAL 1).

Each run makes a new folder with a txm.toml and a fresh database (SQLite by default;
``--database postgresql`` or ``mysql`` makes a new database on the local server), creates the units, starts
``python -m txm serve`` from this checkout, runs bench/ttpload.py for each scenario, and prints
a table (and JSON with --json FILE). ``--quick`` is a smoke run: short and small.

Example:
  python bench/ttp_scenarios.py                 # the full set, several minutes
  python bench/ttp_scenarios.py --quick         # a few seconds, proves the scripts work
  python bench/ttp_scenarios.py --only 100x1 --only single
  python bench/ttp_scenarios.py --database postgresql
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

import ttpload  # noqa: E402

KEY = "benchkey"
CHANNELS = 4
UNITS = 1000


def scenarios(quick: bool) -> list[dict]:
    s = 1.0 if quick else 10.0
    c = 10 if quick else 100
    return [
        {"name": "100x1", "what": f"{c} persistent connections, 1 sample per upload",
         "target": "15,000 uploads/s, p99 <= 15 ms", "mode": "upload", "connections": c, "samples": 1, "seconds": s},
        {"name": "100x10", "what": f"{c} persistent connections, 10 samples per upload",
         "target": "50,000 samples/s, p99 <= 25 ms", "mode": "upload", "connections": c, "samples": 10, "seconds": s},
        {"name": "single", "what": "one meter alone", "target": "p99 <= 1.5 ms",
         "mode": "upload", "connections": 1, "samples": 1, "seconds": s, "processes": 1},
        {"name": "1000", "what": f"{10 * c} active connections, 1 sample per upload",
         "target": "no errors, rate >= 100x1, p99 <= 100 ms", "mode": "upload", "connections": 10 * c,
         "samples": 1, "seconds": s},
        {"name": "cycle", "what": f"connect, upload, download last, close; {c} at a time",
         "target": "5,000 connections/s", "mode": "cycle", "connections": c, "samples": 1, "seconds": s},
        {"name": "idle", "what": f"{100 * c} idle connections held", "target": "<= 2 KB server memory each",
         "mode": "idle", "connections": 100 * c, "samples": 0, "seconds": 1.0 if quick else 3.0},
        {"name": "sustained", "what": "sustained 100x10 uploads, database growing",
         "target": "last 5 s >= 70% of first 5 s; past 5 million samples", "mode": "sustained",
         "connections": c, "samples": 10, "seconds": 3.0 if quick else 60.0},
    ]


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


#: Where a database server's fresh benchmark databases are made (the project machine's services).
SERVERS = {
    "postgresql": {"DATABASE_HOST": "127.0.0.1", "DATABASE_PORT": 5432, "DATABASE_USER": "postgres"},
    "mysql": {"DATABASE_HOST": "127.0.0.1", "DATABASE_PORT": 3306, "DATABASE_USER": "root"},
}


class BenchDatabase:
    """A fresh, empty database for one scenario: an SQLite file, or a new database on a server."""

    def __init__(self, engine: str, folder: Path):
        self.engine = engine
        self.folder = folder
        self.name = str(folder / "txm.db") if engine == "sqlite3" else f"txm_bench_{os.getpid()}_{folder.name}"
        if engine != "sqlite3":
            self._admin(f"CREATE DATABASE {self.name}")

    def _admin(self, statement: str) -> None:
        server = SERVERS[self.engine]
        if self.engine == "postgresql":
            import psycopg2

            conn = psycopg2.connect(host=server["DATABASE_HOST"], port=server["DATABASE_PORT"],
                                    user=server["DATABASE_USER"], dbname="test")
            conn.autocommit = True
        else:
            import pymysql

            conn = pymysql.connect(host=server["DATABASE_HOST"], port=server["DATABASE_PORT"],
                                   user=server["DATABASE_USER"], password="", database="test", autocommit=True)
        with conn.cursor() as cur:
            cur.execute(statement)
        conn.close()

    def settings_toml(self) -> str:
        lines = [f'DATABASE_ENGINE = "{self.engine}"', f'DATABASE_NAME = "{self.name}"']
        for key, value in SERVERS.get(self.engine, {}).items():
            lines.append(f"{key} = {value!r}".replace("'", '"'))
        return "\n".join(lines) + "\n"

    def drop(self) -> None:
        if self.engine == "postgresql":
            self._admin(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
        elif self.engine == "mysql":
            self._admin(f"DROP DATABASE IF EXISTS {self.name}")


def prepare(folder: Path, prefill: int, bench_db: BenchDatabase) -> Path:
    """A txm.toml naming the scenario's database, with the units made and the samples prefilled."""
    from txm import config as txm_config
    from txm import manage
    from txm.db import schema

    config = folder / "txm.toml"
    config.write_text(bench_db.settings_toml() + 'DS_PORT = 0\nHTTP_PORT = 0\nBIND_ADDRESS = "127.0.0.1"\n'
                      "MAX_CONNECTIONS = 20000\nCOMMIT_INTERVAL = 1\n")
    database = manage.syncdb(txm_config.read_settings(config)).database
    with database.atomic():
        schema.Unit.insert_many([{"code": f"U{i}", "key": KEY, "channels": CHANNELS} for i in range(UNITS)]
                                + [{"code": "FILL", "key": KEY, "channels": CHANNELS}]).execute()
    if prefill:
        fill_id = schema.Unit.get(schema.Unit.code == "FILL").id
        base = dt.datetime(2000, 1, 1)
        received = schema.utcnow()
        fields = [schema.Sample.unit, schema.Sample.timestamp, schema.Sample.received,
                  schema.Sample.ch1, schema.Sample.ch2, schema.Sample.ch3, schema.Sample.ch4]
        for start in range(0, prefill, 10_000):
            rows = [(fill_id, base + dt.timedelta(seconds=i), received, 1.0, 2.0, 3.0, 4.0)
                    for i in range(start, min(prefill, start + 10_000))]
            with database.atomic():
                schema.Sample.insert_many(rows, fields=fields).execute()
    database.close()
    return config


def count_samples(config: Path) -> int:
    from txm import config as txm_config
    from txm.db import schema
    from txm.db.database import open_database

    database = open_database(txm_config.read_settings(config))
    try:
        return schema.Sample.select().count()
    finally:
        database.close()


def start_server(config: Path) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-m", "txm", "--config", str(config), "serve"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    port: list[int] = []

    def read():
        assert proc.stdout is not None
        for line in proc.stdout:
            match = re.search(r"TTP server listening on \S+:(\d+)", line)
            if match:
                port.append(int(match.group(1)))

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 60
    while not port:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("txm serve did not start")
        time.sleep(0.05)
    return proc, port[0]


def load(port: int, scenario: dict, processes: int, epoch: int, seconds: float | None = None,
         warmup: float = 1.0) -> dict:
    argv = ["--port", str(port), "--mode", scenario["mode"], "--connections", str(scenario["connections"]),
            "--samples", str(max(1, scenario["samples"])), "--channels", str(CHANNELS), "--key", KEY,
            "--seconds", str(seconds or scenario["seconds"]), "--warmup", str(warmup),
            "--processes", str(scenario.get("processes", processes)), "--epoch", str(epoch)]
    return ttpload.run(ttpload.parser().parse_args(argv))


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_scenario(port: int, proc: subprocess.Popen, scenario: dict, processes: int, epoch: int,
                 config: Path) -> dict:
    """One scenario; adds the server's CPU time per request (a figure less sensitive to a busy machine)."""
    before = cpu_seconds(proc.pid)
    result = _run_scenario(port, proc, scenario, processes, epoch, config)
    used = cpu_seconds(proc.pid) - before
    if result.get("all_requests"):  # warm-up included, as the CPU time is
        result["server_cpu_us_per_request"] = used / result["all_requests"] * 1e6
    return result


def _run_scenario(port: int, proc: subprocess.Popen, scenario: dict, processes: int, epoch: int,
                  config: Path) -> dict:
    if scenario["mode"] == "idle":
        before = rss_kb(proc.pid)
        result: dict = {}
        done = threading.Event()

        def hold():
            result.update(load(port, scenario, processes, epoch, warmup=0))
            done.set()

        thread = threading.Thread(target=hold)
        thread.start()
        time.sleep(scenario["seconds"] * 0.8)
        during = rss_kb(proc.pid)
        thread.join()
        result["server_kb_per_connection"] = (during - before) / max(1, scenario["connections"])
        return result
    if scenario["mode"] == "sustained":
        slice_seconds = 1.0 if scenario["seconds"] < 10 else 5.0
        slices = []
        end = time.monotonic() + scenario["seconds"]
        n = 0
        while time.monotonic() < end:
            slices.append(load(port, {**scenario, "mode": "upload"}, processes, epoch + 1000 + n,
                               seconds=slice_seconds, warmup=0.2))
            n += 1
        total = count_samples(config)
        first, last = slices[0]["samples_per_s"], slices[-1]["samples_per_s"]
        return {"samples_per_s_first": first, "samples_per_s_last": last, "kept": last / first if first else 0,
                "samples_in_database": total, "errors": sum(s["errors"] for s in slices),
                "p99_ms": max(s["p99_ms"] for s in slices)}
    return load(port, scenario, processes, epoch)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a short smoke run")
    p.add_argument("--only", action="append", default=[], help="run only the named scenario(s)")
    p.add_argument("--processes", type=int, default=2, help="load generator processes")
    p.add_argument("--prefill", type=int, default=None,
                   help="samples stored before the sustained run (default: 4,500,000; --quick: 0)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--database", choices=("sqlite3", "postgresql", "mysql"), default="sqlite3",
                   help="engine: a fresh SQLite file, or a fresh database on the local PostgreSQL/MariaDB")
    args = p.parse_args(argv)
    chosen = [s for s in scenarios(args.quick) if not args.only or s["name"] in args.only]
    prefill = args.prefill if args.prefill is not None else (0 if args.quick else 4_500_000)
    results = []
    with tempfile.TemporaryDirectory(prefix="txm-bench-") as tmp:
        for number, scenario in enumerate(chosen):
            folder = Path(tmp) / scenario["name"]
            folder.mkdir()
            bench_db = BenchDatabase(args.database, folder)
            try:
                config = prepare(folder, prefill if scenario["mode"] == "sustained" else 0, bench_db)
                proc, port = start_server(config)
                try:
                    result = run_scenario(port, proc, scenario, args.processes, number * 10, config)
                finally:
                    proc.terminate()
                    proc.wait(30)
            finally:
                bench_db.drop()
            results.append({"scenario": scenario["name"], "what": scenario["what"], "target": scenario["target"],
                            **{k: v for k, v in result.items() if k != "latencies"}})
            print(format_result(results[-1]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 1 if any(r.get("errors") for r in results) else 0


def format_result(r: dict) -> str:
    keys = ("requests_per_s", "samples_per_s", "connections_per_s", "p50_ms", "p99_ms", "errors", "held",
            "server_kb_per_connection", "samples_per_s_first", "samples_per_s_last", "kept", "samples_in_database",
            "server_cpu_us_per_request")
    shown = ", ".join(f"{k}={r[k]:.2f}" if isinstance(r[k], float) else f"{k}={r[k]}" for k in keys if k in r)
    return f"{r['scenario']:>9}: {r['what']} [target: {r['target']}]\n           {shown}"


if __name__ == "__main__":
    sys.exit(main())
