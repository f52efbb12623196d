"""The web interface: a Bottle app built by :func:`make_app`, served by ``txm serve``.

Routes (docs/web.md describes them for users):

* ``/login``, ``/logout`` (POST), ``/password`` -- logging in and out, changing one's password;
* ``/`` -- the units the user may see and the multiple-meter views;
* ``/static/<file>`` -- the stylesheet;
* ``/admin/`` -- the admin panel, when :mod:`txm.admin` is installed (its own app, mounted).

Sessions, access checks, CSRF and error pages come from :mod:`txm.webcore`.

In ``txm serve`` the web server runs in a child process (:class:`WebService`), so that a big
graph render never holds the GIL the TTP loop needs; waitress serves it with a pool of threads.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
from typing import Any

import bottle

from txm import db as m
from txm.config import Settings
from txm.errors import TxmError
from txm.passwords import DEFAULT_PASSWORD, check_password, make_password, weakness
from txm.permissions import visible_units
from txm.webcore import STATIC, LoginRefused, WebCore, safe_next

log = logging.getLogger("txm.web")

#: Threads of waitress serving requests in the web process.
WEB_THREADS = 8
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
    @app.get("/")
    def home():
        units = list(visible_units(core.user, settings.LOGIN_REQUIRED))
        views = list(m.View.select().order_by(m.View.name))
        return core.render("home.html", units=units, views=views)


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


def make_services(settings: Settings, server: Any) -> list:
    """``txm serve``: the web interface on BIND_ADDRESS:HTTP_PORT, in a child process."""
    return [WebService(settings)]


def bind(address: str, port: int) -> socket.socket:
    """A listening TCP socket, or :class:`TxmError` with a one-line reason."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        return socket.create_server((address, port), family=family, backlog=1024)
    except OSError as exc:
        raise TxmError(f"cannot listen for HTTP on {address}:{port}: {exc.strerror or exc}") from None


class WebService:
    """The web server in a child process, with the socket bound here in the parent.

    Binding in the parent makes a port already in use stop ``txm serve`` at once with a one-line
    reason, and makes ``HTTP_PORT`` 0 report the real port. The child gets the socket, opens its
    own database connection, builds the app, says ready (or why not) over a pipe, and serves with
    waitress until asked to stop -- or until its parent is gone.
    """

    name = "web"

    def __init__(self, settings: Settings):
        self.settings = settings
        self.port: int | None = None
        self.description = ""
        self._process: multiprocessing.Process | None = None
        self._stop_event: Any = None

    def start(self) -> None:
        settings = self.settings
        sock = bind(settings.BIND_ADDRESS, settings.HTTP_PORT)
        self.port = sock.getsockname()[1]
        ctx = multiprocessing.get_context("spawn")
        self._stop_event = ctx.Event()
        reader, writer = ctx.Pipe(duplex=False)
        self._process = ctx.Process(target=run_web_process, name="txm-web", daemon=True,
                                    args=(self._stop_event, _settings_state(settings), sock, writer))
        try:
            self._process.start()
        finally:
            sock.close()  # the child has its own copy
            writer.close()
        message = None
        if reader.poll(START_TIMEOUT):
            try:
                message = reader.recv()
            except EOFError:
                message = None
        reader.close()
        if message != "ready":
            self.stop()
            code = self._process.exitcode
            raise TxmError(message or f"the web interface did not start (its process ended with code {code})")
        host = settings.BIND_ADDRESS
        shown = f"[{host}]" if ":" in host else host
        self.description = f"Web interface listening on http://{shown}:{self.port}/"

    def stop(self) -> None:
        if self._process is None or self._process.pid is None:
            return
        self._stop_event.set()
        self._process.join(10)
        if self._process.is_alive():
            log.warning("the web process did not stop within 10 s; terminating it")
            self._process.terminate()
            self._process.join(5)


def _settings_state(settings: Settings) -> tuple:
    """The settings as plain picklable parts (Settings itself answers every attribute)."""
    return (dict(settings.values), dict(settings.sources), settings.path, dict(settings.httpapps),
            dict(settings.ttpapps))


def run_web_process(stop_event: Any, settings_state: tuple, sock: socket.socket, ready: Any) -> None:
    """The web process: serve ``make_app(settings)`` on ``sock`` until ``stop_event`` is set."""
    settings = Settings(*settings_state)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent, which stops us
    _child_logging()
    parent = os.getppid()
    try:
        import waitress

        m.open_database(settings)
        app = make_app(settings)
        server = waitress.create_server(app, sockets=[sock], threads=WEB_THREADS, ident="txm",
                                        clear_untrusted_proxy_headers=True)
    except TxmError as exc:
        ready.send(str(exc))
        return
    except Exception as exc:  # a broken HTTP App, say: one line for the parent to report
        log.exception("the web interface cannot start")
        ready.send(f"the web interface cannot start: {type(exc).__name__}: {exc}")
        return
    ready.send("ready")
    ready.close()
    thread = threading.Thread(target=server.run, name="txm-waitress", daemon=True)
    thread.start()
    while not stop_event.wait(1.0):
        if os.getppid() != parent or not thread.is_alive():
            break
    try:
        server.close()
    except Exception:
        pass


def _child_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("txm", "waitress"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(logging.INFO)
        logger.propagate = False
