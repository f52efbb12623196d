#!/usr/bin/env python3
"""``txm serve`` starting and stopping: time to ready, time to stop, and the upload rate just after ready.

Each start makes a fresh folder with a txm.toml and a fresh SQLite database holding the units
(bench/ttp_scenarios.py's set-up: COMMIT_INTERVAL 1, the web interface and email worker on, as
deployed), and starts ``python -m txm --config FOLDER/txm.toml serve --port PORT`` from this checkout
in its own session, with ``NOTIFY_SOCKET`` naming an AF_UNIX datagram socket the bench listens on,
as systemd does for ``Type=notify``. Then:

1. start to ready: from ``Popen`` to the ``READY=1`` datagram -- or, when none comes (a txm without
   notify support), to the stdout line ``Press Ctrl-C to stop.``; the output says which was used.
   Beside it, from a probe connection: when the TTP port first accepts a connection, and when a
   request on it is first answered (a meter connecting between the two waits).
2. stop: SIGTERM to the whole process group (``os.killpg``, as a terminal's Ctrl-C or systemd's
   ``KillMode=control-group`` does), and, on another start, SIGTERM to the main process only;
   the time until the main process has exited and no process of the group is left (zombies
   nobody reaps do not count). A stop not done within --stop-timeout is a failure, reported as
   "hung" with the processes left, which are then killed.
3. the upload rate after ready: bench/ttpload.py upload processes (100 persistent connections, 1
   sample per upload, as the ``100x1`` scenario) are started beforehand and released at ready;
   the uploads answered in the first second after ready against those in the second starting
   --later seconds after ready (10 by default), their ratio, and p99 latency in both.

Prints the machine, the commands and a table (and JSON with --json FILE). Exit code 1 when a
start, a stop or an upload failed. ``--quick`` is a smoke run: 3 starts per stop, a 3 s load.

Example:
  python bench/startup_bench.py                      # 10 runs of each stop, 3 rate runs: a few minutes
  python bench/startup_bench.py --quick              # 3 runs of each stop, a 3 s load: proves the script works
  python bench/startup_bench.py --runs 20 --stop group --rate-runs 0 --json startup.json
"""

from __future__ import annotations

import argparse
import bisect
import datetime as dt
import json
import multiprocessing
import os
import platform
import queue
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import ttp_scenarios  # noqa: E402
import ttpload  # noqa: E402

#: What today's ``txm serve`` prints when it serves; the readiness signal without NOTIFY_SOCKET support.
READY_LINE = "Press Ctrl-C to stop."
STOP_MODES = {"group": "SIGTERM to the process group", "main": "SIGTERM to the main process"}


class BenchError(Exception):
    """A start that did not come to ready: the run cannot go on."""


def machine() -> dict:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {"cores": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "kernel": platform.release(), "load_average_at_start": os.getloadavg()[0]}


def checkout() -> str:
    """The commit measured, marked when the work tree differs from it."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + (" (with uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") else "")


def free_port() -> int:
    """A TCP port free now, so that the load processes know it before the server prints it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def group_members(pgid: int) -> list[dict]:
    """The processes of a process group still alive (a zombie is not: nobody may reap it here)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid or fields[0] in "ZX":
                continue
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, IndexError, ValueError):
            continue  # ended meanwhile
        members.append({"pid": int(entry.name), "role": role(int(entry.name), pgid, command), "command": command[:200]})
    return members


def role(pid: int, pgid: int, command: str) -> str:
    """A short name for a process of txm serve's group (they are all called python)."""
    if pid == pgid:
        return "the main process"
    if "multiprocessing.resource_tracker" in command:
        return "multiprocessing's resource tracker"
    if "multiprocessing.spawn" in command:
        return "a spawned child (multiprocessing)"
    return command[:60]


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return bool(group_members(pgid))


class NotifySocket:
    """The ``NOTIFY_SOCKET`` of one start: the datagrams received, each with its time and sender."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)  # the sender's pid, as systemd checks it
        self.sock.settimeout(0.05)
        self.messages: list[tuple[float, int | None, str]] = []
        self.changed = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._read, name="notify-socket", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        ucred = struct.calcsize("iII")
        while not self._closed:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(ucred))
            except socket.timeout:
                continue
            except OSError:
                return
            now = time.perf_counter()
            pid = None
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("iII", payload[:ucred])[0]
            self.messages.append((now, pid, data.decode(errors="replace")))
            self.changed.set()

    def first(self, assignment: str) -> tuple[float, int | None] | None:
        """When (and from which pid) a datagram first carried ``assignment``, e.g. ``READY=1``."""
        for at, pid, text in self.messages:
            if assignment in text.splitlines():
                return at, pid
        return None

    def close(self) -> None:
        self._closed = True
        self._thread.join()
        self.sock.close()


class ServerRun:
    """One ``txm serve`` in its own session, its stdout lines and notify datagrams timed as they come."""

    def __init__(self, folder: Path, port: int, probe: bool = False):
        self.folder = folder
        self.port = port
        self.config = ttp_scenarios.prepare(folder, 0, ttp_scenarios.BenchDatabase("sqlite3", folder))
        self.command = [sys.executable, "-m", "txm", "--config", str(self.config), "serve", "--port", str(port)]
        self.notify = NotifySocket(folder / "notify.sock")
        self.lines: list[tuple[float, str]] = []
        self.stderr_path = folder / "stderr.txt"
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "NOTIFY_SOCKET": str(self.notify.path)}
        with open(self.stderr_path, "wb") as stderr:
            self.started = time.perf_counter()
            self.proc = subprocess.Popen(self.command, cwd=REPO, stdout=subprocess.PIPE, stderr=stderr, text=True,
                                         env=env, start_new_session=True)
        self.pgid = self.proc.pid
        self._reader = threading.Thread(target=self._read, name="server-stdout", daemon=True)
        self._reader.start()
        self.port_open: float | None = None
        self.first_reply: float | None = None
        self._probe = threading.Thread(target=self._probe_port, name="ttp-probe", daemon=True) if probe else None
        if self._probe:
            self._probe.start()

    def _probe_port(self) -> None:
        """When the TTP port first accepts a connection, and when a request on it is first answered."""
        while self.proc.poll() is None and time.perf_counter() - self.started < 60:
            try:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
            except ConnectionRefusedError:
                time.sleep(0.005)
                continue
            except OSError:
                return
            self.port_open = time.perf_counter()
            with sock:
                try:
                    sock.sendall(f"TTP /dl/U0/last {ttp_scenarios.KEY}\r".encode())
                    if sock.recv(4096):  # any reply: the request was served
                        self.first_reply = time.perf_counter()
                except OSError:
                    pass
            return

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.perf_counter(), line.rstrip("\n")))
            self.notify.changed.set()

    def line_at(self, text: str) -> float | None:
        return next((at for at, line in self.lines if line.strip() == text), None)

    def wait_ready(self, grace: float, timeout: float) -> tuple[str, float]:
        """The readiness signal and its time: ``READY=1``, or the stdout line once ``grace`` seconds
        have passed after it without ``READY=1``. BenchError if neither comes in ``timeout``."""
        deadline = self.started + timeout
        while True:
            self.notify.changed.clear()  # before looking, so that nothing arriving meanwhile is missed
            ready = self.notify.first("READY=1")
            if ready:
                return "READY=1", ready[0]
            line = self.line_at(READY_LINE)
            now = time.perf_counter()
            if line is not None and now >= line + grace:
                return "stdout", line
            if self.proc.poll() is not None:
                raise BenchError(f"txm serve ended with code {self.proc.returncode} before ready: {self.stderr_tail()}")
            if now > deadline:
                raise BenchError(f"txm serve not ready within {timeout:.0f} s: {self.stderr_tail()}")
            wait = 0.05 if line is None else min(0.05, max(0.0, line + grace - now))
            self.notify.changed.wait(wait)

    def wait_probe(self, timeout: float) -> None:
        """Let the probe's request be answered (or fail) before anything else is measured."""
        if self._probe:
            self._probe.join(timeout)

    def stderr_tail(self) -> str:
        lines = self.stderr_path.read_text(errors="replace").strip().splitlines()
        return " | ".join(lines[-3:]) or "(nothing on stderr)"

    def stop(self, mode: str, timeout: float) -> dict:
        """SIGTERM (to the group or the main process) and the time until every process has gone."""
        signalled = time.perf_counter()
        if mode == "group":
            os.killpg(self.pgid, signal.SIGTERM)
        else:
            self.proc.send_signal(signal.SIGTERM)
        main_exit = None
        while True:
            now = time.perf_counter()
            if main_exit is None and self.proc.poll() is not None:
                main_exit = now
            if main_exit is not None and not group_alive(self.pgid):
                result = {"mode": mode, "hung": False, "seconds": now - signalled,
                          "main_exit_s": main_exit - signalled, "exit_code": self.proc.returncode}
                break
            if now - signalled > timeout:
                result = {"mode": mode, "hung": True, "seconds": None, "timeout_s": timeout,
                          "main_exit_s": main_exit - signalled if main_exit is not None else None,
                          "left": group_members(self.pgid), "stderr": self.stderr_tail()}
                self.kill()
                break
            time.sleep(0.005 if main_exit is None else 0.01)
        stopping = self.notify.first("STOPPING=1")
        result["stopping_s"] = stopping[0] - signalled if stopping else None
        return result

    def kill(self) -> None:
        """SIGKILL to the whole group (what is left after a failure), and wait for it."""
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)
        deadline = time.monotonic() + 10
        while group_alive(self.pgid) and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        if self.proc.poll() is None or group_alive(self.pgid):
            self.kill()
        self._reader.join(5)
        if self._probe:
            self._probe.join(5)
        self.notify.close()

    def readiness(self, signal_name: str, at: float) -> dict:
        """The start's figures: ready, and the other signal's time for comparison."""
        ready = self.notify.first("READY=1")
        line = self.line_at(READY_LINE)
        return {"signal": signal_name, "seconds": at - self.started,
                "ready_datagram_s": ready[0] - self.started if ready else None,
                "ready_datagram_from_main": (ready[1] == self.proc.pid) if ready and ready[1] is not None else None,
                "stdout_line_s": line - self.started if line is not None else None,
                "port_open_s": self.port_open - self.started if self.port_open is not None else None,
                "first_probe_reply_s": self.first_reply - self.started if self.first_reply is not None else None}


def _load_process(go, results, args, units: list[int], epoch: int, wait: float) -> None:
    """One ttpload upload process: forked early, it connects only when ``go`` is set."""
    ttpload.raise_nofile()
    if not go.wait(wait):
        results.put({"failed": "never released"})
        return
    timeline: list[tuple[float, float]] = []
    try:
        result = ttpload.run_upload(args, units, epoch, timeline=timeline)
    except Exception as exc:  # reported with the figures (a refused connection at ready is a finding)
        results.put({"failed": f"{type(exc).__name__}: {exc}"})
        return
    result.pop("latencies")
    result["timeline"] = timeline
    results.put(result)


class PrestartedLoad:
    """bench/ttpload.py ``upload`` processes started before the server, waiting for the go."""

    def __init__(self, port: int, connections: int, seconds: float, processes: int, epoch: int):
        self.args = ttpload.parser().parse_args([
            "--port", str(port), "--mode", "upload", "--connections", str(connections), "--samples", "1",
            "--channels", str(ttp_scenarios.CHANNELS), "--key", ttp_scenarios.KEY, "--seconds", str(seconds),
            "--warmup", "0", "--processes", str(processes), "--epoch", str(epoch)])
        ctx = multiprocessing.get_context("fork")
        self.go = ctx.Event()
        self.results = ctx.Queue()
        units = list(range(connections))
        self.processes = [ctx.Process(target=_load_process, args=(self.go, self.results, self.args,
                                                                  units[i::processes], epoch, 120), daemon=True)
                          for i in range(processes)]
        for process in self.processes:
            process.start()
        self.released = None

    def release(self) -> None:
        self.go.set()
        self.released = time.perf_counter()

    def collect(self) -> list[dict]:
        found = []
        for _ in self.processes:
            try:
                found.append(self.results.get(timeout=self.args.seconds + 60))
            except queue.Empty:
                found.append({"failed": "a load process gave no result"})
        for process in self.processes:
            process.join(10)
        return found

    def close(self) -> None:
        for process in self.processes:
            if process.is_alive():
                process.terminate()
                process.join(5)


def answered(timeline: list[tuple[float, float]], start: float, seconds: float) -> list[tuple[float, float]]:
    """The replies of a timeline sorted by time that came in ``[start, start + seconds)``."""
    return timeline[bisect.bisect_left(timeline, (start,)):bisect.bisect_left(timeline, (start + seconds,))]


def window(timeline: list[tuple[float, float]], start: float, seconds: float = 1.0) -> dict:
    """Uploads answered in ``[start, start + seconds)`` and their latency."""
    latencies = sorted(latency for _, latency in answered(timeline, start, seconds))
    return {"uploads_per_s": len(latencies) / seconds, "p50_ms": ttpload.percentile(latencies, 50) * 1000,
            "p99_ms": ttpload.percentile(latencies, 99) * 1000}


def rate_run(folder: Path, number: int, args, grace: float) -> dict:
    port = free_port()
    load = PrestartedLoad(port, args.connections, args.later + 2, args.processes, epoch=number)
    server = None
    try:
        server = ServerRun(folder, port)
        signal_name, ready = server.wait_ready(grace, args.ready_timeout)
        load.release()
        found = load.collect()
        stop = server.stop("main", args.stop_timeout)
    finally:
        load.close()
        if server is not None:
            server.close()
    failed = [r["failed"] for r in found if "failed" in r]
    timeline = sorted(x for r in found for x in r.get("timeline", ()))
    first, later = window(timeline, ready), window(timeline, ready + args.later)
    seconds = int(args.later + 1)  # whole seconds of load, the later window the last
    return {
        "signal": signal_name, "start_to_ready_s": ready - server.started,
        "released_after_ready_ms": (load.released - ready) * 1000,
        "first_reply_after_ready_ms": (timeline[0][0] - ready) * 1000 if timeline else None,
        "first_second": first, "later_second": later, "later_starts_s": args.later,
        "ratio": first["uploads_per_s"] / later["uploads_per_s"] if later["uploads_per_s"] else None,
        "uploads_per_s_by_second": [window(timeline, ready + s)["uploads_per_s"] for s in range(seconds)],
        "uploads_per_100ms_first_second": [len(answered(timeline, ready + i / 10, 0.1)) for i in range(10)],
        "errors": sum(r.get("errors", 0) for r in found) + len(failed), "failed": failed,
        "stop_after_load": stop,
    }


def spread(values: list[float]) -> dict:
    return ({"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}
            if values else {"median": None, "min": None, "max": None, "n": 0})


def run(args) -> dict:
    modes = ["group", "main"] if args.stop == "both" else [args.stop]
    results: dict = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                     "machine": machine(), "checkout": checkout(), "starts": [], "stops": {m: [] for m in modes},
                     "rate_runs": []}
    grace = args.notify_grace
    with tempfile.TemporaryDirectory(prefix="txm-startup-") as tmp:
        results["command"] = " ".join(["python", "-m", "txm", "--config", f"{tmp}/RUN/txm.toml", "serve",
                                       "--port", "PORT"])
        results["notify_socket"] = f"{tmp}/RUN/notify.sock"
        for number in range(args.runs):
            for mode in modes:
                folder = Path(tmp) / f"{mode}-{number}"
                folder.mkdir()
                server = ServerRun(folder, free_port(), probe=True)
                try:
                    ready = server.wait_ready(grace, args.ready_timeout)
                    server.wait_probe(10)
                    start = server.readiness(*ready)
                    stop = server.stop(mode, args.stop_timeout)
                finally:
                    server.close()
                results["starts"].append(start)
                results["stops"][mode].append(stop)
                print(f"run {number + 1}/{args.runs}: ready after {start['seconds']:.3f} s ({start['signal']}); "
                      f"{STOP_MODES[mode]}: {describe_stop(stop)}", flush=True)
        signals = {s["signal"] for s in results["starts"]}
        if signals == {"stdout"}:
            grace = 0.0  # no READY=1 seen: release the load at the stdout line, not after the grace
        for number in range(args.rate_runs):
            folder = Path(tmp) / f"rate-{number}"
            folder.mkdir()
            rate = rate_run(folder, number, args, grace)
            results["rate_runs"].append(rate)
            print(f"rate run {number + 1}/{args.rate_runs}: ready after {rate['start_to_ready_s']:.3f} s "
                  f"({rate['signal']}); uploads/s by second after ready: "
                  + ", ".join(f"{r:,.0f}" for r in rate["uploads_per_s_by_second"])
                  + f"; then {STOP_MODES['main']}: {describe_stop(rate['stop_after_load'])}", flush=True)
    results["summary"] = summarise(results, args)
    return results


def describe_stop(stop: dict) -> str:
    if not stop["hung"]:
        return f"{stop['seconds']:.3f} s (the main process exited after {stop['main_exit_s']:.3f} s)"
    main = ("main process still running" if stop["main_exit_s"] is None
            else f"main process exited after {stop['main_exit_s']:.3f} s")
    left = ", ".join(f"{p['pid']} {p['role']}" for p in stop["left"])
    return f"HUNG: not stopped within {stop['timeout_s']:.0f} s ({main}; left: {left}); killed"


def summarise(results: dict, args) -> dict:
    starts = results["starts"] + [{"signal": r["signal"], "seconds": r["start_to_ready_s"]}
                                  for r in results["rate_runs"]]
    summary: dict = {"signals": sorted({s["signal"] for s in starts}),
                     "start_to_ready_s": spread([s["seconds"] for s in starts])}
    summary["first_start_s"] = starts[0]["seconds"] if starts else None
    lines = [s["stdout_line_s"] for s in results["starts"] if s.get("stdout_line_s") is not None]
    summary["stdout_line_s"] = spread(lines)
    for figure in ("port_open_s", "first_probe_reply_s"):
        summary[figure] = spread([s[figure] for s in results["starts"] if s.get(figure) is not None])
    summary["ready_datagram_not_from_main"] = sum(1 for s in results["starts"]
                                                  if s.get("ready_datagram_from_main") is False)
    for mode, stops in results["stops"].items():
        summary[f"stop_{mode}_s"] = {**spread([s["seconds"] for s in stops if not s["hung"]]),
                                     "hung": sum(1 for s in stops if s["hung"]), "runs": len(stops)}
        stopping = [s["stopping_s"] for s in stops if s["stopping_s"] is not None]
        summary[f"stopping_datagram_{mode}_s"] = spread(stopping)
    rates = results["rate_runs"]
    if rates:
        summary["rate"] = {
            "first_second_uploads_per_s": spread([r["first_second"]["uploads_per_s"] for r in rates]),
            "later_second_uploads_per_s": spread([r["later_second"]["uploads_per_s"] for r in rates]),
            "ratio": spread([r["ratio"] for r in rates if r["ratio"] is not None]),
            "first_second_p99_ms": spread([r["first_second"]["p99_ms"] for r in rates]),
            "later_second_p99_ms": spread([r["later_second"]["p99_ms"] for r in rates]),
            "errors": sum(r["errors"] for r in rates),
        }
    return summary


def report(results: dict, args) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 120)
    m, s = results["machine"], results["summary"]
    console.print(f"\n[bold]txm start-up and stop[/bold], {results['date']}, checkout {results['checkout']}")
    console.print(f"Machine: {m['cores']} cores, {m['cpu']}, Linux {m['kernel']}, Python {m['python']}, "
                  f"load average {m['load_average_at_start']:.2f} at the start")
    console.print(f"Server:  {results['command']}  (in {REPO}, a new session; NOTIFY_SOCKET={results['notify_socket']};"
                  f" a fresh SQLite database with {ttp_scenarios.UNITS:,} units, COMMIT_INTERVAL 1, web interface on)")
    console.print(f"Load:    bench/ttpload.py upload, {args.connections} persistent connections, 1 sample per upload, "
                  f"{args.processes} processes started beforehand and released at ready, {args.later + 2:g} s")
    console.print(f"Ready:   {' and '.join(describe_signal(x) for x in s['signals']) or '-'}")
    if s["ready_datagram_not_from_main"]:
        console.print(f"[red]READY=1 came from another process than the main one in {s['ready_datagram_not_from_main']}"
                      " start(s): systemd (NotifyAccess=main, the default) would ignore it[/red]")

    def secs(value) -> str:
        return "-" if value is None else f"{value:.3f} s"

    table = Table(title=f"Start and stop ({args.runs} run(s) of each stop)")
    for column in ("figure", "median", "min", "max", "n", "failures"):
        table.add_column(column, justify="left" if column == "figure" else "right")
    start = s["start_to_ready_s"]
    table.add_row("start to ready", secs(start["median"]), secs(start["min"]), secs(start["max"]), str(start["n"]), "")
    table.add_row("  the first start alone", secs(s["first_start_s"]), "", "", "1", "")
    if s["stdout_line_s"]["n"] and s["signals"] != ["stdout"]:
        line = s["stdout_line_s"]
        table.add_row(f'  stdout "{READY_LINE}"', secs(line["median"]), secs(line["min"]), secs(line["max"]),
                      str(line["n"]), "")
    for figure, label in (("port_open_s", "  TTP port accepts a connection"),
                          ("first_probe_reply_s", "  first TTP request answered")):
        if s[figure]["n"]:
            table.add_row(label, secs(s[figure]["median"]), secs(s[figure]["min"]), secs(s[figure]["max"]),
                          str(s[figure]["n"]), "")
    for mode in results["stops"]:
        stop = s[f"stop_{mode}_s"]
        failures = f"[red]{stop['hung']} hung[/red]" if stop["hung"] else "0"
        table.add_row(f"stop: {STOP_MODES[mode]}", secs(stop["median"]) if stop["n"] else "[red]hung[/red]",
                      secs(stop["min"]), secs(stop["max"]), f"{stop['n']} of {stop['runs']}", failures)
        stopping = s[f"stopping_datagram_{mode}_s"]
        if stopping["n"]:
            table.add_row("  STOPPING=1 after the signal", secs(stopping["median"]), secs(stopping["min"]),
                          secs(stopping["max"]), str(stopping["n"]), "")
    console.print(table)

    if results["rate_runs"]:
        later = results["rate_runs"][0]["later_starts_s"]
        table = Table(title=f"Upload rate after ready ({args.connections} connections, 1 sample per upload)")
        for column in ("run", "first second", f"seconds {later:g}-{later + 1:g}", "ratio", "p99 first",
                       "p99 later", "first reply", "errors"):
            table.add_column(column, justify="right")
        for number, r in enumerate(results["rate_runs"], 1):
            table.add_row(str(number), f"{r['first_second']['uploads_per_s']:,.0f}/s",
                          f"{r['later_second']['uploads_per_s']:,.0f}/s", ratio(r["ratio"]),
                          f"{r['first_second']['p99_ms']:.1f} ms", f"{r['later_second']['p99_ms']:.1f} ms",
                          ms(r["first_reply_after_ready_ms"], 0),
                          str(r["errors"]))
        rate = s["rate"]
        table.add_row("median", f"{rate['first_second_uploads_per_s']['median']:,.0f}/s",
                      f"{rate['later_second_uploads_per_s']['median']:,.0f}/s", ratio(rate["ratio"]["median"]),
                      f"{rate['first_second_p99_ms']['median']:.1f} ms",
                      f"{rate['later_second_p99_ms']['median']:.1f} ms", "", str(rate["errors"]))
        console.print(table)
        for number, r in enumerate(results["rate_runs"], 1):
            console.print(f"run {number}, uploads per 100 ms in the first second after ready: "
                          + " ".join(str(n) for n in r["uploads_per_100ms_first_second"]))
            if r["failed"]:
                console.print(f"[red]run {number}, load processes failed: {'; '.join(r['failed'])}[/red]")
            if r["released_after_ready_ms"] > 50:  # the stdout line, used only after --notify-grace
                console.print(f"[red]run {number}: the load was released {r['released_after_ready_ms']:.0f} ms after"
                              " ready, so the first second is not fully loaded[/red]")


def describe_signal(name: str) -> str:
    return "the READY=1 datagram" if name == "READY=1" else f'the stdout line "{READY_LINE}" (no READY=1 came)'


def ms(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f} ms"


def ratio(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a short smoke run: 3 runs, 1 rate run of a 3 s load")
    p.add_argument("--runs", type=int, default=None, help="starts for each kind of stop (default 10)")
    p.add_argument("--stop", choices=("both", "group", "main"), default="both",
                   help="SIGTERM to the process group, to the main process, or a run of each (default)")
    p.add_argument("--stop-timeout", type=float, default=15.0, help="seconds before a stop counts as hung")
    p.add_argument("--ready-timeout", type=float, default=60.0, help="seconds before a start counts as failed")
    p.add_argument("--notify-grace", type=float, default=1.0,
                   help="seconds to wait for READY=1 after the stdout line before using the line instead")
    p.add_argument("--rate-runs", type=int, default=None, help="starts with the upload load (default 3)")
    p.add_argument("--later", type=float, default=None,
                   help="the later 1-second window starts this long after ready (default 10); the load runs 2 s longer")
    p.add_argument("--connections", type=int, default=100)
    p.add_argument("--processes", type=int, default=2, help="load generator processes")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = p.parse_args(argv)
    args.runs = args.runs if args.runs is not None else (3 if args.quick else 10)
    args.rate_runs = args.rate_runs if args.rate_runs is not None else (1 if args.quick else 3)
    args.later = args.later if args.later is not None else (1.0 if args.quick else 10.0)
    try:
        results = run(args)
    except BenchError as exc:
        print(f"startup_bench: {exc}", file=sys.stderr)
        return 1
    report(results, args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    s = results["summary"]
    failed = (any(s[f"stop_{mode}_s"]["hung"] for mode in results["stops"]) or s.get("rate", {}).get("errors")
              or any(r["stop_after_load"]["hung"] for r in results["rate_runs"]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
