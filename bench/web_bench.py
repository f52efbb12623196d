#!/usr/bin/env python3
"""The web interface under weight: a big graph, a big CSV download, and the meters meanwhile.

Makes a fresh folder with a txm.toml (SQLite, LOGIN_REQUIRED no) and a database holding unit
BIG (4 channels) with N samples (1,000,000 by default) and the load units U0..., starts
``python -m txm serve`` from this checkout, and measures over real HTTP and TTP:

1. graph: the time to fetch ``/units/BIG/?range=all`` -- statistics of every sample, the lines
   reduced in SQL, pygal drawing them (best and median of a few runs). Target: well under 2 s
   for a million samples.
2. csv: ``/units/BIG/data.csv?range=all`` streamed to the end, read slowly, while the web
   process's resident memory is sampled; the growth over its size before. Target: a few MB.
3. ttp: bench/ttpload.py upload load (p50/p99 latency), first alone, then while a thread keeps
   fetching the big graph and the big CSV. Target: p99 with web traffic within twice p99
   without.

Example:
  python bench/web_bench.py                   # a million samples; a few minutes with the set-up
  python bench/web_bench.py --quick           # 20,000 samples, short loads: proves the script works
  python bench/web_bench.py --samples 200000 --json web.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import ttpload  # noqa: E402

KEY = "benchkey"
CHANNELS = 4
LOAD_UNITS = 100


def prepare(folder: Path, samples: int, load_units: int) -> Path:
    db_path = folder / "txm.db"
    config = folder / "txm.toml"
    config.write_text(f'DATABASE_NAME = "{db_path}"\nDS_PORT = 0\nHTTP_PORT = 0\nBIND_ADDRESS = "127.0.0.1"\n'
                      f"LOGIN_REQUIRED = false\nCOMMIT_INTERVAL = 1\n")
    subprocess.run([sys.executable, "-m", "txm", "--config", str(config), "syncdb"], check=True, cwd=REPO,
                   capture_output=True, env=_env())
    conn = sqlite3.connect(db_path)
    now = dt.datetime.utcnow().isoformat(" ")
    conn.executemany(
        "INSERT INTO unit (code, key, name, channels, labels, show_labels, graph_width, graph_height, graph_axes,"
        " has_reports, report_fields, created) VALUES (?, ?, '', ?, '[]', 0, 800, 400, ?, 1, '[]', ?)",
        [("BIG", KEY, CHANNELS, '[{"label": "Flow", "channels": [1, 2]}, {"label": "Temp", "channels": [3, 4]}]',
          now)] + [(f"U{i}", KEY, CHANNELS, "[]", now) for i in range(load_units)])
    big = conn.execute("SELECT id FROM unit WHERE code = 'BIG'").fetchone()[0]
    base = dt.datetime(2020, 1, 1)

    def rows():
        for i in range(samples):
            wave = (i % 3600) / 3600.0
            yield (big, str(base + dt.timedelta(seconds=i)), now, wave, 1.0 - wave, 20.0 + (i % 97) / 10,
                   1000.0 if i % 99_991 == 0 else 5.0)

    conn.executemany("INSERT INTO sample (unit_id, timestamp, received, ch1, ch2, ch3, ch4) VALUES (?, ?, ?, ?, ?, ?, ?)",
                     rows())
    conn.commit()
    conn.close()
    return config


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def start_server(config: Path) -> tuple[subprocess.Popen, int, int]:
    proc = subprocess.Popen([sys.executable, "-m", "txm", "--config", str(config), "serve"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=_env())
    ports: dict[str, int] = {}

    def read():
        assert proc.stdout is not None
        for line in proc.stdout:
            ttp = re.search(r"TTP server listening on \S+:(\d+)", line)
            web = re.search(r"Web interface listening on http://\S+:(\d+)/", line)
            if ttp:
                ports["ttp"] = int(ttp.group(1))
            if web:
                ports["web"] = int(web.group(1))

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 90
    while len(ports) < 2:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("txm serve did not start")
        time.sleep(0.05)
    return proc, ports["ttp"], ports["web"]


def web_pid(server_pid: int) -> int:
    """The web process: the child of txm serve started by multiprocessing's spawn."""
    children = Path(f"/proc/{server_pid}/task/{server_pid}/children").read_text().split()
    for pid in children:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        if b"spawn_main" in cmdline:
            return int(pid)
    raise SystemExit("cannot find the web process")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def fetch(url: str, chunk: int = 1 << 16, pause: float = 0.0) -> tuple[int, float]:
    """Read the whole response in chunks; (bytes, seconds)."""
    started = time.perf_counter()
    total = 0
    with urllib.request.urlopen(url, timeout=600) as res:
        while True:
            data = res.read(chunk)
            if not data:
                break
            total += len(data)
            if pause:
                time.sleep(pause)
    return total, time.perf_counter() - started


def bench_graph(base: str, repeat: int) -> dict:
    times = []
    size = 0
    for _ in range(repeat):
        size, seconds = fetch(f"{base}/units/BIG/?range=all")
        times.append(seconds)
    return {"graph_best_s": min(times), "graph_median_s": statistics.median(times), "graph_page_bytes": size}


def bench_csv(base: str, pid: int, pause: float) -> dict:
    before = rss_kb(pid)
    peak = [before]
    done = threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], rss_kb(pid))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    size, seconds = fetch(f"{base}/units/BIG/data.csv?range=all", pause=pause)
    done.set()
    watcher.join()
    return {"csv_bytes": size, "csv_seconds": seconds, "csv_rss_before_kb": before, "csv_rss_peak_kb": peak[0],
            "csv_rss_growth_kb": peak[0] - before}


def ttp_load(port: int, connections: int, seconds: float, epoch: int) -> dict:
    argv = ["--port", str(port), "--mode", "upload", "--connections", str(connections), "--samples", "1",
            "--channels", str(CHANNELS), "--key", KEY, "--seconds", str(seconds), "--warmup", "1",
            "--processes", "1", "--epoch", str(epoch)]
    return ttpload.run(ttpload.parser().parse_args(argv))


def bench_ttp(ttp_port: int, base: str, connections: int, seconds: float) -> dict:
    alone = ttp_load(ttp_port, connections, seconds, epoch=1)
    stop = threading.Event()
    web_requests = [0]

    def web_traffic():
        while not stop.is_set():
            fetch(f"{base}/units/BIG/?range=all")
            fetch(f"{base}/units/BIG/data.csv?range=all")
            web_requests[0] += 2

    thread = threading.Thread(target=web_traffic, daemon=True)
    thread.start()
    time.sleep(0.5)  # the first big request is under way
    busy = ttp_load(ttp_port, connections, seconds, epoch=2)
    stop.set()
    thread.join()
    return {"ttp_alone_p50_ms": alone["p50_ms"], "ttp_alone_p99_ms": alone["p99_ms"],
            "ttp_alone_requests_per_s": alone["requests_per_s"],
            "ttp_with_web_p50_ms": busy["p50_ms"], "ttp_with_web_p99_ms": busy["p99_ms"],
            "ttp_with_web_requests_per_s": busy["requests_per_s"], "web_requests_meanwhile": web_requests[0],
            "ttp_p99_ratio": busy["p99_ms"] / alone["p99_ms"] if alone["p99_ms"] else float("nan"),
            "ttp_errors": alone["errors"] + busy["errors"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a short smoke run: 20,000 samples, 2 s loads")
    p.add_argument("--samples", type=int, default=None, help="samples of unit BIG (default 1,000,000)")
    p.add_argument("--repeat", type=int, default=None, help="graph fetches (default 5)")
    p.add_argument("--connections", type=int, default=None, help="TTP load connections (default 100)")
    p.add_argument("--seconds", type=float, default=None, help="seconds of each TTP load (default 20)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = p.parse_args(argv)
    samples = args.samples or (20_000 if args.quick else 1_000_000)
    repeat = args.repeat or (2 if args.quick else 5)
    connections = args.connections or (10 if args.quick else LOAD_UNITS)
    seconds = args.seconds or (2.0 if args.quick else 20.0)
    results: dict = {"samples": samples}
    with tempfile.TemporaryDirectory(prefix="txm-web-bench-") as tmp:
        started = time.perf_counter()
        config = prepare(Path(tmp), samples, max(connections, LOAD_UNITS))
        print(f"prepared {samples} samples in {time.perf_counter() - started:.1f} s", flush=True)
        proc, ttp_port, http_port = start_server(config)
        base = f"http://127.0.0.1:{http_port}"
        try:
            pid = web_pid(proc.pid)
            results.update(bench_graph(base, repeat))
            print(f"graph of all {samples} samples: best {results['graph_best_s']:.3f} s, "
                  f"median {results['graph_median_s']:.3f} s", flush=True)
            results.update(bench_csv(base, pid, pause=0.0005 if not args.quick else 0.0))
            print(f"CSV of {samples} samples: {results['csv_bytes'] / 1e6:.1f} MB in {results['csv_seconds']:.1f} s; "
                  f"web process {results['csv_rss_before_kb'] / 1024:.1f} MB before, grew "
                  f"{results['csv_rss_growth_kb'] / 1024:.1f} MB", flush=True)
            results.update(bench_ttp(ttp_port, base, connections, seconds))
            print(f"TTP p99 alone {results['ttp_alone_p99_ms']:.2f} ms, with big web requests "
                  f"{results['ttp_with_web_p99_ms']:.2f} ms (x{results['ttp_p99_ratio']:.2f}, "
                  f"{results['web_requests_meanwhile']} web requests meanwhile)", flush=True)
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 1 if results.get("ttp_errors") else 0


if __name__ == "__main__":
    sys.exit(main())
