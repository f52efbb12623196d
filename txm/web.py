"""The web interface: a Bottle app built by :func:`make_app`, served by ``txm serve``.

Routes (docs/web.md describes them for users):

* ``/login``, ``/logout`` (POST), ``/password`` -- logging in and out, changing one's password;
* ``/`` -- the units the user may see and the multiple-meter views;
* ``/static/<file>`` -- the stylesheet;
* ``/units/<code>/`` graphs and statistics, ``/units/<code>/data.csv`` the CSV download;
* ``/views/<id>/`` -- a multiple-meter view, refreshed from ``/api/views/<id>``;
* ``/api/...`` -- the JSON API (session or HTTP basic auth);
* ``/admin/`` -- the admin panel, when :mod:`txm.admin` is installed (its own app, mounted);
* HTTP Apps at their urls (:mod:`txm.httpapps`).

Sessions, access checks, CSRF and error pages come from :mod:`txm.webcore`.

In ``txm serve`` the web server runs in a child process (:class:`WebService`), so that a big
graph render never holds the GIL the TTP loop needs; waitress serves it with a pool of threads.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import importlib
import json
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from typing import Any
from urllib.parse import quote, urlencode

import bottle

from txm import data, export
from txm import db as m
from txm.config import Settings
from txm.errors import InvalidValue, TxmError
from txm.graphs import render_graphs, unit_axes
from txm import httpapps
from txm.passwords import DEFAULT_PASSWORD, check_password, make_password, weakness
from txm.permissions import can_see_unit, visible_units
from txm.webcore import STATIC, LoginRefused, WebCore, format_when, safe_next

log = logging.getLogger("txm.web")

#: Threads of waitress serving requests in the web process.
WEB_THREADS = 8
#: How much lower the web process's CPU priority is than the TTP server's (see ``nice``).
WEB_NICENESS = 10
#: Samples per query and per piece of a CSV download.
CSV_PAGE = 2000
#: Bytes of a response waitress holds for a slow client before the app's thread waits.
OUTPUT_WATERMARK = 1 << 20
#: Seconds ``txm serve`` waits for the web process to be ready.
START_TIMEOUT = 60.0


def make_app(settings: Settings, database: Any = None) -> bottle.Bottle:
    """The web interface as a Bottle app (WSGI), with the admin panel and HTTP Apps mounted.

    The models must be bound to a database (:func:`txm.db.open_database`); when they are not,
    the database the settings name is opened. ``database`` is accepted for symmetry with the
    admin panel's factory and otherwise unused.
    """
    if m.database.obj is None:
        m.open_database(settings)
    app = bottle.Bottle()
    core = WebCore(settings)
    core.install(app, default_access="viewer")
    _account_routes(app, core)
    _page_routes(app, core, settings)
    mount_admin(app, settings)
    httpapps.mount_apps(app, settings)
    return app


# --- logging in and out, passwords ----------------------------------------------------------


def _account_routes(app: bottle.Bottle, core: WebCore) -> None:
    @app.get("/static/<path:path>", access="public")
    def static(path: str):
        return bottle.static_file(path, root=str(STATIC))

    @app.get("/login", access="public")
    def login_form():
        target = safe_next(bottle.request.query.getunicode("next"))
        if core.user is not None and not core.session.get("must_change_password"):
            core.redirect(target)
        return core.render("login.html", next=target, username="", error="")

    @app.post("/login", access="public")
    def login():
        forms = bottle.request.forms
        username = forms.getunicode("username") or ""
        password = forms.getunicode("password") or ""
        target = safe_next(forms.getunicode("next"))
        try:
            user = core.authenticate(username, password)
        except LoginRefused as exc:
            bottle.response.status = 401
            return core.render("login.html", next=target, username=username, error=str(exc))
        core.login(user, password)
        if password == DEFAULT_PASSWORD:
            core.flash("Please choose a new password: yours is still the installation default.", "warning")
            core.redirect("/password?next=" + bottle.urlquote(target))
        core.redirect(target)

    @app.post("/logout", access="public")
    def logout():
        core.logout()
        core.redirect("/login")

    @app.get("/password", access="user", default_password_ok=True)
    def password_form():
        return core.render("password.html", next=safe_next(bottle.request.query.getunicode("next")), error="")

    @app.post("/password", access="user", default_password_ok=True)
    def change_password():
        forms = bottle.request.forms
        user = core.user
        target = safe_next(forms.getunicode("next"))
        old = forms.getunicode("old_password") or ""
        new = forms.getunicode("new_password") or ""
        again = forms.getunicode("new_password2") or ""
        error = ""
        if not check_password(old, user.password):
            error = "Your current password is not right."
        elif not new:
            error = "The new password must have at least one character."
        elif new != again:
            error = "The two new passwords differ."
        elif new == DEFAULT_PASSWORD:
            error = "Choose a password other than the installation default."
        if error:
            bottle.response.status = 400
            return core.render("password.html", next=target, error=error)
        m.User.update(password=make_password(new)).where(m.User.id == user.id).execute()
        core.session.pop("must_change_password")
        ended = core.end_other_sessions(user)
        warning = weakness(new)
        core.flash("Your password was changed." + (" You were logged out elsewhere." if ended else ""), "success")
        if warning:
            core.flash(f"A weak password: {warning}.", "warning")
        core.redirect(target)


# --- pages ---------------------------------------------------------------------------------------


def _page_routes(app: bottle.Bottle, core: WebCore, settings: Settings) -> None:
    def visible_unit(code: str) -> m.Unit:
        """The unit with this code if the visitor may see it, else the 404 page."""
        unit = m.Unit.get_or_none(m.Unit.code == code)
        if unit is None or not can_see_unit(core.user, unit, settings.LOGIN_REQUIRED):
            bottle.abort(404, f"There is no unit {code!r} that you may see.")
        return unit

    def requested_range(unit: m.Unit) -> data.DateRange:
        query = bottle.request.query
        return data.resolve_range(unit, query.getunicode("range"), query.getunicode("from"),
                                  query.getunicode("to"))

    @app.get("/")
    def home():
        units = list(visible_units(core.user, settings.LOGIN_REQUIRED))
        views = list(m.View.select().order_by(m.View.name))
        return core.render("home.html", units=units, views=views)

    @app.get("/units/<code>")
    def unit_slash(code: str):
        core.redirect(f"/units/{quote(code)}/", 301)

    @app.get("/units/<code>/")
    def unit_page(code: str):
        unit = visible_unit(code)
        query = bottle.request.query
        context: dict[str, Any] = dict(unit=unit, presets=data.PRESETS, error="", range=None, stats=None,
                                       graphs=[], series=None, from_text=query.getunicode("from") or "",
                                       to_text=query.getunicode("to") or "", csv_query="",
                                       timestamp_format=export.TIMESTAMP_FORMAT)
        try:
            chosen = requested_range(unit)
        except InvalidValue as exc:
            bottle.response.status = 400
            context["error"] = str(exc)
            return core.render("unit.html", **context)
        axes = unit_axes(unit)
        limit = data.plot_limit(settings.MAX_PLOT_POINTS, unit.graph_width)
        stats, series = data.overview(unit, chosen.start, chosen.end, limit)
        context.update(range=chosen, stats=stats, series=series, csv_query=_range_query(chosen))
        if stats.count:
            context["graphs"] = render_graphs(unit, series, axes)
        return core.render("unit.html", **context)

    @app.get("/units/<code>/data.csv")
    def unit_csv(code: str):
        unit = visible_unit(code)
        if not unit.has_reports:
            bottle.abort(403, f"Data downloads are switched off for unit {unit.code}.")
        try:
            chosen = requested_range(unit)
            fields = _report_fields(unit, bottle.request.query.getunicode("fields"))
        except InvalidValue as exc:
            bottle.abort(400, str(exc))
        # Small pages: pieces of about 100 KB keep the web process's memory flat (large pieces
        # handed between waitress's threads leave the allocator holding megabytes).
        job = export.UnitExport(m.database.obj, unit, fields, chosen.start, chosen.end, page_size=CSV_PAGE)
        bottle.response.content_type = "text/csv; charset=utf-8"
        bottle.response.set_header("Content-Disposition", f'attachment; filename="{_csv_name(unit, chosen)}"')
        bottle.response.set_header("X-Content-Type-Options", "nosniff")
        return export.iter_pieces(job.csv_pages())

    @app.get("/views/<view_id:int>")
    def view_slash(view_id: int):
        core.redirect(f"/views/{view_id}/", 301)

    @app.get("/views/<view_id:int>/")
    def view_page(view_id: int):
        view = m.View.get_or_none(m.View.id == view_id)
        if view is None:
            bottle.abort(404, f"There is no multiple-meter view {view_id}.")
        return core.render("view.html", view=view, live=view_data(core.user, view, settings))

    # --- the JSON API ----------------------------------------------------------------------------

    credentials = CredentialCache()

    def api_user() -> m.User | None:
        """The caller: HTTP basic auth when sent, else the session's user; 401 when needed."""
        auth = bottle.request.auth
        if auth is not None:
            user = credentials.get(auth[0], auth[1])
            if user is not None:
                return user
            try:
                user = core.authenticate(auth[0], auth[1])
            except LoginRefused as exc:
                raise _json_error(401, str(exc), basic=True) from None
            credentials.put(auth[0], auth[1], user)
            return user
        user = core.user
        if user is None and settings.LOGIN_REQUIRED:
            raise _json_error(401, "log in first, or send HTTP basic authentication", basic=True)
        return user

    def api_unit(user: m.User | None, code: str) -> m.Unit:
        unit = m.Unit.get_or_none(m.Unit.code == code)
        if unit is None or not can_see_unit(user, unit, settings.LOGIN_REQUIRED):
            raise _json_error(404, f"there is no unit {code!r} that you may see")
        return unit

    @app.get("/api/units", access="public")
    def api_units():
        user = api_user()
        return _json({"units": [_unit_json(u) for u in visible_units(user, settings.LOGIN_REQUIRED)]})

    @app.get("/api/units/<code>/last", access="public")
    def api_last(code: str):
        unit = api_unit(api_user(), code)
        sample = data.last_sample(unit)
        labels = unit.channel_labels()
        body = {"unit": unit.code, "channels": labels, "timestamp": None, "received": None, "values": None}
        if sample is not None:
            body.update(timestamp=format_when(sample.timestamp), received=_utc(sample.received),
                        values=sample.values)
        return _json(body)

    @app.get("/api/units/<code>/samples", access="public")
    def api_samples(code: str):
        unit = api_unit(api_user(), code)
        query = bottle.request.query
        try:
            chosen = requested_range(unit)
            channels = export.resolve_fields(unit, query.getunicode("fields") or "all")
            after = export.parse_datetime(query.getunicode("after"), what="after") if query.get("after") else None
            limit = int(query.get("limit") or API_PAGE)
        except InvalidValue as exc:
            raise _json_error(400, str(exc)) from None
        except ValueError:
            raise _json_error(400, f"limit must be a whole number from 1 to {API_PAGE_MAX}") from None
        if not 1 <= limit <= API_PAGE_MAX:
            raise _json_error(400, f"limit must be a whole number from 1 to {API_PAGE_MAX}")
        rows = data.samples_page(unit, chosen.start, chosen.end, channels, after, limit)
        labels = unit.channel_labels()
        next_url = None
        if len(rows) == limit:
            params = {k: query.getunicode(k) for k in ("range", "from", "to", "fields") if query.get(k)}
            params.update(after=format_when(rows[-1][0]), limit=str(limit))
            next_url = core.url(f"/api/units/{quote(unit.code)}/samples") + "?" + urlencode(params)
        return _json({"unit": unit.code, "fields": [labels[n - 1] for n in channels],
                      "samples": [[format_when(r[0]), *r[1:]] for r in rows], "next": next_url})

    @app.get("/api/views/<view_id:int>", access="public")
    def api_view(view_id: int):
        user = api_user()
        view = m.View.get_or_none(m.View.id == view_id)
        if view is None:
            raise _json_error(404, f"there is no view {view_id}")
        return _json(view_data(user, view, settings))


class CredentialCache:
    """Basic-auth credentials checked in the last minute, so a script polling the API does not
    pay a full password hash (a fraction of a second of CPU) on every call.

    Only a SHA-256 of name and password is kept, in this process's memory, with the user's id
    and stored password hash: a changed password, a disabled or deleted user is noticed at once.
    """

    def __init__(self, seconds: float = 60.0, size: int = 256):
        self.seconds = seconds
        self.size = size
        self._entries: dict[bytes, tuple[float, int, str]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(username: str, password: str) -> bytes:
        return hashlib.sha256(f"{username}\0{password}".encode("utf-8", "surrogatepass")).digest()

    def get(self, username: str, password: str) -> m.User | None:
        key = self._key(username, password)
        with self._lock:
            entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            return None
        user = m.User.get_or_none(m.User.id == entry[1])
        if user is None or not user.is_active or not hmac.compare_digest(user.password, entry[2]):
            with self._lock:
                self._entries.pop(key, None)
            return None
        return user

    def put(self, username: str, password: str, user: m.User) -> None:
        with self._lock:
            if len(self._entries) >= self.size:
                now = time.monotonic()
                self._entries = {k: v for k, v in self._entries.items() if v[0] >= now}
                if len(self._entries) >= self.size:
                    self._entries.clear()
            self._entries[self._key(username, password)] = (time.monotonic() + self.seconds, user.id, user.password)


#: Samples per page of ``/api/units/<code>/samples`` unless ``limit`` says otherwise, and the most.
API_PAGE = 1000
API_PAGE_MAX = 10_000


def view_data(user: m.User | None, view: m.View, settings: Settings) -> dict[str, Any]:
    """What a multiple-meter view shows now: per unit the user may see, the chosen channels'
    newest values, the sample time and whether the unit is stale."""
    entries = list(m.ViewEntry.select(m.ViewEntry, m.Unit).join(m.Unit).where(m.ViewEntry.view == view.id)
                   .order_by(m.ViewEntry.position, m.ViewEntry.id))
    visible = {u.id for u in visible_units(user, settings.LOGIN_REQUIRED).where(
        m.Unit.id.in_([e.unit_id for e in entries]))} if entries else set()
    units = []
    now = m.utcnow()
    for entry in entries:
        unit = entry.unit
        if unit.id not in visible:
            continue
        labels = unit.channel_labels()
        channels = data.check_channels(unit, entry.channels or []) or list(range(1, unit.channels + 1))
        sample = data.last_sample(unit)
        units.append({
            "code": unit.code, "name": unit.name,
            "timestamp": format_when(sample.timestamp) if sample else None,
            "received": _utc(sample.received) if sample else None,
            "stale": data.is_stale(sample, settings.STALE_SECONDS, now),
            "channels": [{"channel": n, "label": labels[n - 1],
                          "value": sample.values[n - 1] if sample else None} for n in channels],
        })
    return {"id": view.id, "name": view.name, "refresh_seconds": max(1, view.refresh_seconds),
            "stale_seconds": settings.STALE_SECONDS, "now": _utc(now), "units": units}


def _utc(value: Any) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def _unit_json(unit: m.Unit) -> dict[str, Any]:
    return {"code": unit.code, "name": unit.name, "channels": unit.channel_labels(),
            "has_reports": unit.has_reports}


def _json(body: Any, status: int = 200) -> bottle.HTTPResponse:
    response = bottle.HTTPResponse(json.dumps(body, allow_nan=False, default=str), status)
    response.content_type = "application/json"
    response.set_header("Cache-Control", "no-store")
    return response


def _json_error(status: int, message: str, basic: bool = False) -> bottle.HTTPResponse:
    response = _json({"error": message}, status)
    if basic:
        response.set_header("WWW-Authenticate", 'Basic realm="txm", charset="UTF-8"')
    return response


def _report_fields(unit: m.Unit, spec: str | None) -> list[int]:
    """The channels a download asks for, each one the unit's report options allow."""
    allowed = export.resolve_fields(unit, None)
    if not spec or not spec.strip():
        return allowed
    asked = export.resolve_fields(unit, spec)
    refused = [n for n in asked if n not in allowed]
    if refused:
        labels = unit.channel_labels()
        raise InvalidValue(f"field {labels[refused[0] - 1]} is not offered for download; "
                           f"the fields are {', '.join(labels[n - 1] for n in allowed)}")
    return asked


def _range_query(chosen: data.DateRange) -> str:
    """The query string that asks for the same range again."""
    if chosen.preset:
        return urlencode({"range": chosen.preset})
    params = {}
    if chosen.start is not None:
        params["from"] = format_when(chosen.start)
    if chosen.end is not None:
        params["to"] = format_when(chosen.end - dt.timedelta(microseconds=1))
    return urlencode(params)


def _csv_name(unit: m.Unit, chosen: data.DateRange) -> str:
    """``M1_2026-01-01T000000_to_2026-01-31T235959.csv``: the unit and the first and last second
    of the range."""
    def part(value: dt.datetime | None, open_name: str) -> str:
        return value.strftime("%Y-%m-%dT%H%M%S") if value is not None else open_name

    if chosen.start is None and chosen.end is None:
        return f"{unit.code}_all.csv"
    last = chosen.end - dt.timedelta(microseconds=1) if chosen.end is not None else None
    return f"{unit.code}_{part(chosen.start, 'start')}_to_{part(last, 'end')}.csv"


# --- the admin panel and HTTP Apps ------------------------------------------------------------------


def mount_admin(app: bottle.Bottle, settings: Settings) -> bool:
    """Mount ``txm.admin.make_app(settings)`` at ``/admin/`` when that module is installed."""
    try:
        admin = importlib.import_module("txm.admin")
    except ModuleNotFoundError as exc:
        if exc.name == "txm.admin":
            return False
        raise
    factory = getattr(admin, "make_app", None)
    if factory is None:
        return False
    app.mount("/admin/", factory(settings))

    @app.get("/admin", access="public")
    def admin_slash():
        bottle.redirect(bottle.request.script_name.rstrip("/") + "/admin/", 301)

    return True


# --- the service in txm serve ------------------------------------------------------------------------

#: Seconds the web process has to stop once asked, before it is terminated, then killed.
STOP_TIMEOUT = 5.0
#: The signals blocked while a web process is spawned: it unblocks them once it can handle them,
#: so a signal to the process group during its start-up never ends it with a traceback.
_START_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def make_services(settings: Settings, server: Any) -> list:
    """``txm serve``: the web interface on BIND_ADDRESS:HTTP_PORT, in a child process."""
    return [WebService(settings, stopping=getattr(server, "stopping", None))]


def bind(address: str, port: int) -> socket.socket:
    """A listening TCP socket, or :class:`TxmError` with a one-line reason."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        return socket.create_server((address, port), family=family, backlog=1024)
    except OSError as exc:
        raise TxmError(f"cannot listen for HTTP on {address}:{port}: {exc.strerror or exc}") from None


class WebService:
    """The web server in a child process, with the socket bound here in the parent.

    Binding in the parent (:meth:`prepare`, before ``txm serve`` touches the database) makes a
    port already in use stop ``txm serve`` at once with a one-line reason, and makes
    ``HTTP_PORT`` 0 report the real port; the HTTP Apps are found then too. The child gets the
    socket, opens its own database connection, builds the app, says ready (or why not) over a
    pipe, and serves with waitress until asked to stop.

    Stopping goes through a second pipe that only the parent holds open for writing: the
    parent closes it to ask the child to stop, and when the parent dies, even by SIGKILL, the
    kernel closes it and the child stops within a second instead of holding the HTTP port.
    (Not a ``multiprocessing.Event``: its ``set()`` waits for every waiter to wake, and a
    waiter killed by a signal never does.) SIGTERM to the child alone stops it cleanly too.

    The parent keeps the listening socket: should the child die while txm is not stopping (a
    crash, the kernel's out-of-memory killer), a watcher thread logs it and starts a new child
    on the same socket, and browsers' connections wait in the socket's queue meanwhile. Once
    ``stopping`` (the server's event) is set, no child is started again.
    """

    name = "web"

    def __init__(self, settings: Settings, stopping: threading.Event | None = None):
        self.settings = settings
        self.port: int | None = None
        self.description = ""
        self.restarts = 0
        self.apps: list[tuple[str, str | None, str]] = []  # (name, mount point, where found)
        self._sock: socket.socket | None = None
        self._process: multiprocessing.Process | None = None
        self._stop_writer: Any = None  # closing it asks the child to stop
        self._stopping = stopping if stopping is not None else threading.Event()
        self._watcher: threading.Thread | None = None
        self._lock = threading.Lock()  # one child started or ended at a time
        self._ctx = multiprocessing.get_context("spawn")

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def prepare(self) -> None:
        """Bind the HTTP port and find the HTTP Apps (TxmError saying why not)."""
        if self._sock is None:
            self.apps = httpapps.find_apps(self.settings)
            self._sock = bind(self.settings.BIND_ADDRESS, self.settings.HTTP_PORT)
            self.port = self._sock.getsockname()[1]

    def start(self) -> None:
        self.prepare()
        try:
            self._spawn()
        except BaseException:
            self.stop()
            raise
        host = self.settings.BIND_ADDRESS
        shown = f"[{host}]" if ":" in host else host
        lines = [f"Web interface listening on http://{shown}:{self.port}/"]
        if self.apps:
            lines.append("HTTP Apps: " + ", ".join(f"{name} at {prefix}" if prefix else f"{name} (not mounted)"
                                                   for name, prefix, _ in self.apps))
        self.description = "\n".join(lines)
        self._watcher = threading.Thread(target=self._watch, name="txm-web-watcher", daemon=True)
        self._watcher.start()

    def _spawn(self) -> None:
        """Start a child on the socket and wait until it is ready; TxmError saying why not."""
        with self._lock:
            if self._stopping.is_set():
                return
            ready_reader, ready_writer = self._ctx.Pipe(duplex=False)
            stop_reader, self._stop_writer = self._ctx.Pipe(duplex=False)
            process = self._ctx.Process(target=run_web_process, name="txm-web", daemon=True,
                                        args=(_settings_state(self.settings), self._sock, ready_writer, stop_reader))
            self._process = process
            blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _START_SIGNALS)
            try:
                process.start()
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
                ready_writer.close()
                stop_reader.close()
        message = None
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while not self._stopping.is_set() and time.monotonic() < deadline:
                if ready_reader.poll(0.1):
                    message = ready_reader.recv()
                    break
        except EOFError:
            message = None
        finally:
            ready_reader.close()
        if message != "ready":
            self._end_child()
            if self._stopping.is_set():
                return
            if isinstance(message, tuple):
                error = TxmError(message[1])
                error.exit_code = message[0]  # 2 for a configuration error, as the CLI documents
                raise error
            raise TxmError(f"the web interface did not start (its process ended with code {process.exitcode})")

    def _watch(self) -> None:
        delay = 1.0
        while not self._stopping.is_set():
            process = self._process
            if process is None:
                return
            process.join(0.5)
            if process.is_alive() or self._stopping.is_set():
                continue
            # The stop of the whole service group (a signal to it) reaches the child first at
            # times: wait a moment for the parent's own stop before starting a child again.
            if self._stopping.wait(delay):
                return
            log.error("the web process ended unexpectedly (exit code %s); starting it again", process.exitcode)
            try:
                self._spawn()
                self.restarts += 1
                delay = 1.0
            except TxmError as exc:
                log.error("the web interface cannot start again: %s", exc)
                delay = min(delay * 2, 60.0)

    def _end_child(self) -> None:
        """Ask the child to stop and wait; terminate, then kill one that does not."""
        with self._lock:
            process, writer = self._process, self._stop_writer
            self._stop_writer = None
            if writer is not None:
                writer.close()
            if process is None or process.pid is None:
                return
            process.join(STOP_TIMEOUT)
            if process.is_alive():
                log.warning("the web process did not stop within %.0f s; terminating it", STOP_TIMEOUT)
                process.terminate()
                process.join(2)
            if process.is_alive():
                process.kill()
                process.join(2)

    def stop(self) -> None:
        self._stopping.set()
        self._end_child()  # the watcher, seeing stopping set, starts no other
        watcher, self._watcher = self._watcher, None
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(START_TIMEOUT)
        self._end_child()  # one the watcher was starting meanwhile
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _settings_state(settings: Settings) -> tuple:
    """The settings as plain picklable parts (Settings itself answers every attribute)."""
    return (dict(settings.values), dict(settings.sources), settings.path, dict(settings.httpapps),
            dict(settings.ttpapps))


class _StopServing(Exception):
    """SIGTERM reached the web process: it stops serving."""


def _on_sigterm(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM changes nothing
    raise _StopServing


def _tell(ready: Any, message: Any) -> bool:
    """Send the parent the start's outcome; False when it no longer listens."""
    try:
        ready.send(message)
        ready.close()
    except OSError:
        return False
    return True


def run_web_process(settings_state: tuple, sock: socket.socket, ready: Any, stop: Any) -> None:
    """The web process: serve ``make_app(settings)`` on ``sock`` until ``stop`` (a pipe) ends
    or SIGTERM arrives. SIGINT is the parent's to handle (Ctrl-C reaches both)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _START_SIGNALS)  # SIGTERM ends a start quietly
    settings = Settings(*settings_state)
    try:
        os.nice(WEB_NICENESS)  # on a busy machine the meters' loop gets the CPU first
    except OSError:
        pass
    _child_logging()
    try:
        import waitress

        m.open_database(settings)
        app = make_app(settings)
        # A small output watermark: a big CSV download's thread waits for the client instead of
        # buffering megabytes ahead of it, so memory stays flat however long the download.
        proxy: dict[str, Any] = {}
        if settings.TRUSTED_PROXY:
            proxy = {"trusted_proxy": settings.TRUSTED_PROXY, "trusted_proxy_count": 1,
                     "trusted_proxy_headers": {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"}}
        server = waitress.create_server(app, sockets=[sock], threads=WEB_THREADS, ident="txm",
                                        clear_untrusted_proxy_headers=True,
                                        outbuf_high_watermark=OUTPUT_WATERMARK, outbuf_overflow=OUTPUT_WATERMARK,
                                        **proxy)
    except TxmError as exc:
        _tell(ready, (exc.exit_code, str(exc)))
        return
    except Exception as exc:  # a bug: one line for the parent to report, the traceback in the log
        log.exception("the web interface cannot start")
        _tell(ready, (1, f"the web interface cannot start: {type(exc).__name__}: {exc}"))
        return
    thread = threading.Thread(target=server.run, name="txm-waitress", daemon=True)
    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
        if _tell(ready, "ready"):  # else the parent stopped waiting: it is stopping
            thread.start()
            while thread.is_alive() and not stop.poll(1.0):  # true once the parent closes its end
                pass
    except _StopServing:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Exit at once. Closing waitress first would pull its trigger from under requests still
    # being served (each then logs a traceback); the listening socket is the parent's to close,
    # and the kernel ends the connections and database sessions with the process.
    logging.shutdown()
    os._exit(0)


def _child_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("txm", "waitress"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(logging.INFO)
        logger.propagate = False
