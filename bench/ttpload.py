#!/usr/bin/env python3
"""TTP load generator: many meter connections, one request outstanding on each, as meters do.

Modes:
  upload   persistent connections, each uploading N samples per request to its own unit
  cycle    connect, upload one sample, download last, close; CONNECTIONS such cycles at a time
  idle     open CONNECTIONS connections and hold them (for memory measurements)

Reports requests/s, samples/s (or complete connections/s) and latency percentiles.
Units U0, U1, ... with key KEY and CHANNELS data fields must exist (bench/ttp_scenarios.py
creates them). Several --processes share the connections so the generator is not the limit.

Example:
  python bench/ttpload.py --port 9995 --connections 100 --samples 1 --seconds 10 --processes 2
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import selectors
import socket
import sys
import time
from datetime import datetime, timedelta

BASE = datetime(2030, 1, 1)


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Conn:
    __slots__ = ("sock", "unit", "counter", "sent_at", "buf", "phase")

    def __init__(self, sock, unit):
        self.sock = sock
        self.unit = unit
        self.counter = 0
        self.sent_at = 0.0
        self.buf = b""
        self.phase = 0


def upload_line(conn: Conn, samples: int, channels: int, key: str, epoch: int) -> bytes:
    parts = []
    values = ";".join(str(v) for v in range(1, channels + 1))
    for _ in range(samples):
        ts = BASE + timedelta(days=epoch, microseconds=conn.counter * 1000)
        conn.counter += 1
        parts.append(f"<{ts:%Y-%m-%d %H:%M:%S.%f};{values}>")
    return f"TTP /up/U{conn.unit}/{''.join(parts)} {key}\r".encode()


def connect(host: str, port: int) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    return sock


def run_upload(args, units: list[int], epoch: int, timeline: list | None = None) -> dict:
    """Upload on persistent connections; ``timeline``, when given, receives ``(reply time, latency)``
    for every reply, warm-up included (``time.perf_counter()`` seconds: one clock for the machine's
    processes on Linux, so a caller can place the replies against its own events)."""
    sel = selectors.DefaultSelector()
    conns = []
    for unit in units:
        conn = Conn(connect(args.host, args.port), unit)
        conns.append(conn)
        sel.register(conn.sock, selectors.EVENT_READ, conn)
    latencies: list[float] = []
    errors = 0
    replies: dict[str, int] = {}
    start = time.perf_counter()
    warm_until = start + args.warmup
    end = warm_until + args.seconds
    counted_requests = 0
    all_requests = 0
    for conn in conns:
        conn.sock.send(upload_line(conn, args.samples, args.channels, args.key, epoch))
        conn.sent_at = time.perf_counter()
    stopping = False
    outstanding = len(conns)
    while outstanding:
        for key, _ in sel.select(5):
            conn = key.data
            data = conn.sock.recv(65536)
            if not data:
                errors += 1
                sel.unregister(conn.sock)
                outstanding -= 1
                continue
            conn.buf += data
            while b"\r" in conn.buf:
                reply, _, conn.buf = conn.buf.partition(b"\r")
                now = time.perf_counter()
                all_requests += 1
                if timeline is not None:
                    timeline.append((now, now - conn.sent_at))
                if warm_until <= conn.sent_at and now <= end:
                    latencies.append(now - conn.sent_at)
                    counted_requests += 1
                    if reply != b"OK":
                        errors += 1
                        text = reply.decode(errors="replace")[:40]
                        replies[text] = replies.get(text, 0) + 1
                if now >= end or stopping:
                    stopping = True
                    sel.unregister(conn.sock)
                    outstanding -= 1
                else:
                    conn.sock.send(upload_line(conn, args.samples, args.channels, args.key, epoch))
                    conn.sent_at = time.perf_counter()
    for conn in conns:
        conn.sock.close()
    return {"requests": counted_requests, "samples": counted_requests * args.samples, "errors": errors,
            "error_replies": replies, "latencies": latencies, "seconds": args.seconds, "all_requests": all_requests}


def run_cycle(args, units: list[int], epoch: int) -> dict:
    """Each slot: connect, upload, download last, close, again."""
    sel = selectors.DefaultSelector()
    latencies: list[float] = []
    done = 0
    errors = 0
    start = time.perf_counter()
    warm_until = start + args.warmup
    end = warm_until + args.seconds
    counters = {u: 0 for u in units}
    all_requests = 0

    def begin(unit: int) -> None:
        sock = socket.socket()
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.connect((args.host, args.port))
        except BlockingIOError:
            pass
        conn = Conn(sock, unit)
        conn.counter = counters[unit]
        conn.sent_at = time.perf_counter()
        conn.phase = 0
        sel.register(sock, selectors.EVENT_WRITE, conn)

    for unit in units:
        begin(unit)
    active = len(units)
    while active:
        for key, mask in sel.select(5):
            conn = key.data
            if conn.phase == 0:
                err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    errors += 1
                    sel.unregister(conn.sock)
                    conn.sock.close()
                    if time.perf_counter() < end:
                        begin(conn.unit)
                    else:
                        active -= 1
                    continue
                conn.sock.send(upload_line(conn, 1, args.channels, args.key, epoch))
                counters[conn.unit] = conn.counter
                conn.phase = 1
                sel.modify(conn.sock, selectors.EVENT_READ, conn)
                continue
            try:
                data = conn.sock.recv(65536)
            except ConnectionError:
                data = b""
            if not data:
                errors += 1
                sel.unregister(conn.sock)
                conn.sock.close()
                active -= 1
                continue
            conn.buf += data
            if b"\r" not in conn.buf:
                continue
            reply, _, conn.buf = conn.buf.partition(b"\r")
            if conn.phase == 1:
                if reply != b"OK":
                    errors += 1
                conn.sock.send(f"TTP /dl/U{conn.unit}/last {args.key}\r".encode())
                conn.phase = 2
                continue
            if not reply.startswith(b"OK <"):
                errors += 1
            all_requests += 2
            now = time.perf_counter()
            sel.unregister(conn.sock)
            conn.sock.close()
            if warm_until <= conn.sent_at and now <= end:
                done += 1
                latencies.append(now - conn.sent_at)
            if now < end:
                begin(conn.unit)
            else:
                active -= 1
    return {"requests": done * 2, "connections": done, "samples": done, "errors": errors, "error_replies": {},
            "latencies": latencies, "seconds": args.seconds, "all_requests": all_requests}


def run_idle(args, units: list[int], epoch: int) -> dict:
    socks = []
    errors = 0
    for _ in units:
        try:
            socks.append(connect(args.host, args.port))
        except OSError:
            errors += 1
    # Prove they are being held: one request on the last one, then wait.
    time.sleep(args.seconds)
    held = 0
    for sock in socks:
        try:
            sock.setblocking(True)
            sock.settimeout(0.001)
            if sock.recv(1) == b"":
                continue
        except (BlockingIOError, socket.timeout):
            held += 1
        except OSError:
            pass
    for sock in socks:
        sock.close()
    return {"requests": 0, "samples": 0, "errors": errors, "held": held, "error_replies": {}, "latencies": [],
            "seconds": args.seconds}


def worker(payload):
    args, units, epoch = payload
    raise_nofile()
    mode = {"upload": run_upload, "cycle": run_cycle, "idle": run_idle}[args.mode]
    return mode(args, units, epoch)


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


def run(args) -> dict:
    raise_nofile()
    units = list(range(args.first_unit, args.first_unit + args.connections))
    shares = [units[i::args.processes] for i in range(args.processes)]
    epoch = args.epoch if args.epoch is not None else int(time.time()) % 100000
    payloads = [(args, share, epoch) for share in shares if share]
    if len(payloads) == 1:
        results = [worker(payloads[0])]
    else:
        with multiprocessing.get_context("fork").Pool(len(payloads)) as pool:
            results = pool.map(worker, payloads)
    latencies = sorted(x for r in results for x in r["latencies"])
    requests = sum(r["requests"] for r in results)
    summary = {
        "mode": args.mode, "connections": args.connections, "samples_per_request": args.samples,
        "seconds": args.seconds, "requests": requests,
        "requests_per_s": requests / args.seconds,
        "samples_per_s": sum(r["samples"] for r in results) / args.seconds,
        "errors": sum(r["errors"] for r in results),
        "all_requests": sum(r.get("all_requests", 0) for r in results),
        "error_replies": {k: v for r in results for k, v in r["error_replies"].items()},
        "p50_ms": percentile(latencies, 50) * 1000, "p90_ms": percentile(latencies, 90) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000, "max_ms": (latencies[-1] * 1000 if latencies else float("nan")),
    }
    if args.mode == "cycle":
        summary["connections_per_s"] = sum(r["connections"] for r in results) / args.seconds
    if args.mode == "idle":
        summary["held"] = sum(r["held"] for r in results)
    return summary


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9995)
    p.add_argument("--mode", choices=("upload", "cycle", "idle"), default="upload")
    p.add_argument("--connections", type=int, default=100)
    p.add_argument("--samples", type=int, default=1, help="samples per upload request")
    p.add_argument("--channels", type=int, default=4)
    p.add_argument("--key", default="benchkey")
    p.add_argument("--first-unit", type=int, default=0)
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds (after --warmup)")
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--processes", type=int, default=1)
    p.add_argument("--epoch", type=int, default=None, help="day offset for timestamps (distinct runs, no duplicates)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    summary = run(args)
    if args.json:
        print(json.dumps(summary))
    else:
        for key, value in summary.items():
            print(f"{key:>20}: {value:.2f}" if isinstance(value, float) else f"{key:>20}: {value}")
    return 1 if summary["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
