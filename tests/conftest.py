"""Shared fixtures: real databases, real configuration files, the CLI runner.

Database-facing tests take the ``settings`` or ``database`` fixture and run once per selected
backend. SQLite is always selected; PostgreSQL and MariaDB/MySQL are added with
``--databases=sqlite,postgresql,mysql`` (or ``TXM_TEST_DATABASES``, or ``all``). A selected
server that is not reachable fails the tests instead of skipping them silently.
Each test gets a database of its own, created on the server and dropped afterwards.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from click.testing import CliRunner

from tests.meter import Meter
from txm import config, manage
from txm.db import schema
from txm.db.database import make_database

ALL_BACKENDS = ("sqlite", "postgresql", "mysql")
REPO = Path(__file__).resolve().parent.parent

SERVER_DEFAULTS = {
    "postgresql": {"host": "127.0.0.1", "port": 5432, "user": "postgres", "admin_db": "test"},
    "mysql": {"host": "127.0.0.1", "port": 3306, "user": "root", "admin_db": "test"},
}


def pytest_addoption(parser):
    parser.addoption("--databases", default=os.environ.get("TXM_TEST_DATABASES", "sqlite"),
                     help="comma-separated backends for database tests: sqlite, postgresql, mysql, or all")


def selected_backends(config_) -> list[str]:
    raw = config_.getoption("--databases")
    names = ALL_BACKENDS if raw.strip() == "all" else [n.strip() for n in raw.split(",") if n.strip()]
    unknown = set(names) - set(ALL_BACKENDS)
    if unknown:
        raise pytest.UsageError(f"unknown backend(s) {', '.join(sorted(unknown))}; choose from {ALL_BACKENDS}")
    return list(dict.fromkeys(["sqlite", *names]))


def pytest_configure(config):
    config.addinivalue_line("markers", "server_databases: runs on PostgreSQL and MariaDB only, not SQLite")
    config.addinivalue_line("markers", "sqlite_only: about SQLite itself (its one write lock); runs on SQLite only")
    config.addinivalue_line("markers", "backends(*names): about these engines only (e.g. \"postgresql\"); runs "
                                       "on them only")


def pytest_collection_modifyitems(config, items):
    """Tests about database servers are not collected for SQLite, nor tests about SQLite for the
    servers, nor tests about one engine for the others (deselected, not skipped)."""
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("backend") if callspec is not None else None
        only = item.get_closest_marker("backends")
        wrong = ((backend == "sqlite" and item.get_closest_marker("server_databases"))
                 or (backend not in (None, "sqlite") and item.get_closest_marker("sqlite_only"))
                 or (backend is not None and only is not None and backend not in only.args))
        (drop if wrong else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_generate_tests(metafunc):
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", selected_backends(metafunc.config), indirect=True)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch):
    """No test reads or writes the real home folder, data folder or configuration."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.delenv(config.ENV_VAR, raising=False)
    return home


class Backend:
    """A database server (or SQLite) that hands out fresh, empty databases."""

    def __init__(self, name: str):
        self.name = name
        self.created: list[str] = []

    def _admin(self):
        info = SERVER_DEFAULTS[self.name]
        if self.name == "postgresql":
            import psycopg2

            conn = psycopg2.connect(host=info["host"], port=info["port"], user=info["user"],
                                    dbname=info["admin_db"], connect_timeout=5)
            conn.autocommit = True
            return conn
        import pymysql

        return pymysql.connect(host=info["host"], port=info["port"], user=info["user"], password="",
                               database=info["admin_db"], connect_timeout=5, autocommit=True)

    def database_values(self, tmp_path: Path) -> dict[str, object]:
        """DATABASE_* values naming a new empty database."""
        if self.name == "sqlite":
            return {"DATABASE_ENGINE": "sqlite3", "DATABASE_NAME": str(tmp_path / "txm.db")}
        name = f"txm_t_{os.getpid()}_{secrets.token_hex(4)}"
        try:
            conn = self._admin()
        except Exception as exc:  # the server is selected, so not reaching it is a failure
            pytest.fail(f"{self.name} was selected for the tests but is not reachable: {exc}")
        with closing(conn), conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name}")
        self.created.append(name)
        info = SERVER_DEFAULTS[self.name]
        return {"DATABASE_ENGINE": self.name, "DATABASE_NAME": name, "DATABASE_HOST": info["host"],
                "DATABASE_PORT": info["port"], "DATABASE_USER": info["user"]}

    def drop_all(self) -> None:
        if not self.created:
            return
        with closing(self._admin()) as conn, conn.cursor() as cur:
            for name in self.created:
                if self.name == "postgresql":
                    cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
                else:
                    cur.execute(f"DROP DATABASE IF EXISTS {name}")
        self.created.clear()


@pytest.fixture
def backend(request):
    """The backend under test. At the end of the test the database the models are bound to then
    (the test's own, however it opened it: syncdb, open_database) is closed before every
    database made for the test is dropped."""
    b = Backend(request.param)
    yield b
    schema.database.obj and schema.database.obj.close()
    b.drop_all()


def write_toml(path: Path, values: dict[str, object]) -> Path:
    """Write a txm.toml with top-level keys."""
    lines = []
    for key, value in values.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, (int, float)):
            lines.append(f"{key} = {value}")
        elif isinstance(value, list):
            lines.append(f"{key} = [{', '.join(repr(str(v)).replace(chr(39), chr(34)) for v in value)}]")
        else:
            lines.append(f'{key} = "{value}"')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def config_file(tmp_path, backend) -> Path:
    """A txm.toml naming a fresh database of the backend under test (tables not created).

    ``HTTP_PORT`` is 0 so that a ``txm serve`` started from it never fights over port 8080.
    """
    return write_toml(tmp_path / "txm.toml", {**backend.database_values(tmp_path), "HTTP_PORT": 0})


@pytest.fixture
def settings(config_file) -> config.Settings:
    return config.read_settings(config_file)


@pytest.fixture
def database(settings):
    """A synced database (tables and the Administrator) bound to the models."""
    result = manage.syncdb(settings)
    yield result.database
    result.database.close()


@pytest.fixture
def run_cli(config_file):
    """Run ``txm --config <the test's file> ARGS``; returns click's Result."""
    from txm.cli import cli

    def run(*args: str, input: str | None = None, expect: int | None = 0):
        result = CliRunner().invoke(cli, ["--config", str(config_file), *args], input=input)
        if expect is not None:
            assert result.exit_code == expect, (
                f"txm {' '.join(args)} exited {result.exit_code}, expected {expect}\n"
                f"output:\n{result.output}\nexception: {result.exception!r}")
        return result

    return run


def txm_subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for running ``python -m txm`` from this checkout in a subprocess."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


TXM = [sys.executable, "-m", "txm"]


# --- txm serve in a subprocess ------------------------------------------------------------

START_TIMEOUT = 30
WEB_LINE = re.compile(r"Web interface listening on http://\S+:(\d+)/")


class ServeProcess:
    """``txm serve`` in a subprocess; threads collect its stdout lines and its log (stderr),
    so a chatty server never stalls on a full pipe and a failing test can show what it logged."""

    def __init__(self, config_path, *args: str, env: dict[str, str] | None = None):
        # In a session of its own, as under systemd: signals can go to its whole process group.
        self.proc = subprocess.Popen([*TXM, "--config", str(config_path), "serve", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=txm_subprocess_env(**(env or {})), start_new_session=True)
        self.lines: list[str] = []
        self.log: list[str] = []
        self.port: int | None = None
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_log, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            match = re.search(r"TTP server listening on \S+:(\d+)", line)
            if match:
                self.port = int(match.group(1))
                self._ready.set()
        self._ready.set()

    def _read_log(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line.rstrip("\n"))

    def logged(self, level: str = "") -> str:
        """The log lines so far (of ``level`` and up, e.g. "WARNING"), one per line."""
        levels = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
        wanted = levels[levels.index(level):] if level else levels
        return "\n".join(line for line in self.log if not level or any(f" {w} " in line for w in wanted))

    def wait_ready(self) -> int:
        if not self._ready.wait(START_TIMEOUT) or self.port is None:
            self.proc.kill()
            self.proc.wait(10)
            time.sleep(0.2)  # the reader threads take the last lines
            raise AssertionError(f"txm serve did not start:\n{chr(10).join(self.lines)}\n{self.logged()}")
        return self.port

    def web_port(self, timeout: float = 30) -> int:
        """The web interface's port, from the start-up lines (waiting for them)."""
        self.wait_ready()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                match = WEB_LINE.search(line)
                if match:
                    return int(match.group(1))
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError("no web interface line:\n" + "\n".join(self.lines))

    def stop(self, sig=signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError("txm serve did not stop on " + signal.Signals(sig).name) from None


@pytest.fixture
def serve_process(config_file):
    started: list[ServeProcess] = []

    def start(*args: str, path=None, env: dict[str, str] | None = None) -> ServeProcess:
        process = ServeProcess(path or config_file, *args, env=env)
        started.append(process)
        return process

    yield start
    for process in started:
        try:
            os.killpg(process.proc.pid, signal.SIGKILL)  # the server and any child it left
        except ProcessLookupError:
            pass
        process.proc.wait(10)
        for pipe in (process.proc.stdout, process.proc.stderr):
            if pipe:
                pipe.close()


# --- a meter's connection ---------------------------------------------------------------------


@contextmanager
def closed_at_the_end(make: Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    """``make`` as a function whose every result is closed when the block ends: the body of a
    fixture that hands a test connections, clients or servers it may open as it likes."""
    made: list[Any] = []

    def make_one(*args: Any, **kwargs: Any) -> Any:
        thing = make(*args, **kwargs)
        made.append(thing)
        return thing

    try:
        yield make_one
    finally:
        for thing in made:
            thing.close()


@pytest.fixture
def open_meter():
    """``open_meter(port)``: a raw TTP connection (:class:`tests.meter.Meter`) to 127.0.0.1:port;
    every one opened is closed at the end of the test."""
    with closed_at_the_end(Meter) as connect:
        yield connect


def fail_the_database(settings, seconds: float = 1.0) -> None:
    """Make other connections' next statements fail for real, as a database that fails for a
    moment does: on SQLite another connection holds the write lock for ``seconds`` (writers
    whose busy timeout is shorter fail with "database is locked"); on PostgreSQL and MariaDB
    the server ends every other connection to the test's database."""
    engine = settings.DATABASE_ENGINE
    if engine == "sqlite3":
        import sqlite3

        other = sqlite3.connect(str(settings.sqlite_path()), isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")
        threading.Timer(seconds, lambda: (other.rollback(), other.close())).start()
        return
    other = make_database(settings)
    other.connect()
    try:
        if engine == "postgresql":
            other.execute_sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        else:
            ids = [row[0] for row in other.execute_sql(
                "SELECT id FROM information_schema.processlist WHERE db = DATABASE() AND id <> CONNECTION_ID()")]
            for connection_id in ids:
                other.execute_sql(f"KILL CONNECTION {int(connection_id)}")
    finally:
        other.close()


def database_values(settings) -> dict:
    """The DATABASE_* values of ``settings``, and the web interface on any free port."""
    values = {key: settings[key] for key in ("DATABASE_ENGINE", "DATABASE_NAME", "DATABASE_HOST",
                                             "DATABASE_PORT", "DATABASE_USER") if settings[key]}
    return {**values, "HTTP_PORT": 0}  # the web interface on any free port


# --- a real browser -------------------------------------------------------------------------

#: Debian's Chromium, driven by Playwright; never a browser Playwright downloads.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture
def browser():
    """Headless Chromium; a missing browser fails the test (CI installs it). Closed at the end of
    the test, and with it every context and page the test opened."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()
