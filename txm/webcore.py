"""What every txm web app shares: templates, sessions, the current user, access checks, CSRF,
flash messages and error pages.

The web interface (:mod:`txm.web`), the admin panel and HTTP Apps are separate Bottle apps; each
builds a :class:`WebCore` and installs it::

    from bottle import Bottle
    from txm.webcore import WebCore

    def make_app(settings):
        app = Bottle()
        core = WebCore(settings, template_dirs=[Path(__file__).parent / "templates"])
        core.install(app, default_access="staff")

        @app.get("/")
        def index():
            return core.render("admin/index.html", title="Admin")

        @app.post("/units/<code>/delete")        # the CSRF token was already checked
        def delete(code):
            ...
            core.flash(f"Deleted {code}.", "success")
            core.redirect("/admin/units/")
        return app

What :meth:`WebCore.install` gives the app
------------------------------------------
* **Access per route**, from the route's ``access`` option (``@app.get("/x", access="public")``)
  or the app's ``default_access``:

  - ``"public"``: anyone (the login page, static files);
  - ``"viewer"``: units, graphs, views -- anyone when ``LOGIN_REQUIRED`` is off, else a
    logged-in user;
  - ``"user"``: a logged-in user whatever ``LOGIN_REQUIRED`` says (changing one's password);
  - ``"staff"``: an active staff user (the admin panel).

  An anonymous visitor who may not see a page is redirected to ``/login?next=<the page>``; a
  logged-in user who may not is shown the 403 page. A user still on the default password
  ``admin`` is sent to ``/password`` first (routes with ``access="public"`` and those with the
  option ``default_password_ok=True`` excepted).
* **Sessions** in the ``web_session`` table, so several txm nodes behind one address share them.
  The cookie (``txm_session``) is HttpOnly and SameSite=Lax (and Secure with
  ``SESSION_COOKIE_SECURE``); it holds a random token whose SHA-256 is the row's key, so reading
  the table does not give away a working cookie. A session row is written only when something
  changes (login, a flash message, a new CSRF token) and its expiry is renewed at most once
  an hour. ``core.session`` is the current :class:`Session`; ``session.data`` is a JSON dict.
* **CSRF**: every POST, PUT, PATCH and DELETE must carry the session's token as the form field
  ``csrf_token`` or the header ``X-CSRF-Token``, else 403 -- checked before the route runs. Put
  ``{{ csrf_field() }}`` in each form. A route that authenticates each request itself (the JSON
  API with HTTP basic auth) opts out with ``csrf=False``.
* **The current user**: ``core.user`` (a :class:`txm.db.User` or ``None``), also ``user`` in
  every template.
* **Flash messages**: ``core.flash(text, category)`` (``info``, ``success``, ``warning``,
  ``error``); ``base.html`` shows and clears them on the next page.
* **Error pages** 400, 403, 404, 405 and 500 rendered with ``error.html``; a 500 is logged with
  its traceback and the user sees only that something went wrong.
* **A database connection** for each request's thread (peewee keeps one per thread).

Templates
---------
Jinja2 with autoescape on. The app's own ``template_dirs`` come first, then txm's
``txm/templates``; extend ``base.html`` and fill the blocks ``title`` and ``content`` (``head``
for extra ``<head>`` lines, ``scripts`` at the end of ``<body>``). Every template sees
``user``, ``settings``, ``url(path)``, ``csrf_field()``, ``csrf_token()``, ``request_path`` and
``get_flashed()``; :meth:`WebCore.render` adds what the route passes.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import quote, urlsplit

import bottle
import jinja2
import peewee as pw
from markupsafe import Markup

from txm.config import Settings
from txm.db import schema
from txm.passwords import DEFAULT_PASSWORD, check_password, make_password, needs_upgrade
from txm.timestamps import format_timestamp

log = logging.getLogger("txm.web")

COOKIE_NAME = "txm_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
#: Session expiry is renewed when less than this remains of SESSION_DAYS (saves a write per page).
RENEW_SLACK = dt.timedelta(hours=1)
#: Failed logins counted over this window ...
LOGIN_FAILURE_WINDOW = dt.timedelta(minutes=15)
#: ... are refused beyond this many for one user name from one address (so a stranger's wrong
#: passwords elsewhere never lock the owner out) ...
LOGIN_FAILURES_PER_USER = 5
#: ... or this many from one address, whatever the names (one address cannot guess endlessly).
LOGIN_FAILURES_PER_ADDRESS = 20
#: Expired sessions and old login failures are deleted at most this often (seconds) per process.
PURGE_INTERVAL = 300.0
ACCESS_LEVELS = ("public", "viewer", "user", "staff")
UNSAFE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
TEMPLATES = Path(__file__).resolve().parent / "templates"
STATIC = Path(__file__).resolve().parent / "static"
ERROR_TITLES = {400: "Bad request", 401: "Login required", 403: "Forbidden", 404: "Not found",
                405: "Method not allowed", 500: "Server error"}

_ENV_KEY = "txm.web.state"
#: Sent with every page: no framing by other sites, no type sniffing, no full URLs to other sites.
SECURITY_HEADERS = (("X-Frame-Options", "DENY"), ("X-Content-Type-Options", "nosniff"),
                    ("Referrer-Policy", "same-origin"))


class LoginRefused(Exception):
    """A login attempt that failed; ``str()`` is the message for the person."""


class Session:
    """One browser's session: its token, user id and a JSON dict of data."""

    def __init__(self, token: str | None = None, user_id: int | None = None, data: dict | None = None,
                 expires: dt.datetime | None = None):
        self.token = token  # None: not stored yet
        self.user_id = user_id
        self.data: dict[str, Any] = dict(data or {})
        self.expires = expires
        self.modified = False
        self.deleted = False

    @property
    def is_new(self) -> bool:
        return self.token is None

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def __setitem__(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.modified = True

    def pop(self, key: str, default: Any = None) -> Any:
        if key in self.data:
            self.modified = True
        return self.data.pop(key, default)


def session_key(token: str) -> str:
    """The ``web_session.key`` stored for a cookie token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


#: What a browser strips from both ends of a URL (C0 controls and space) ...
_C0_OR_SPACE = "".join(chr(c) for c in range(0x21))
#: ... and removes anywhere in it (tab, LF, CR), as the WHATWG URL parser does.
_TAB_OR_NEWLINE = str.maketrans("", "", "\t\n\r")


def safe_next(target: str | None, default: str = "/") -> str:
    """``target`` when it is a path on this site, else ``default`` (no open redirects).

    The target is read first as a browser reads a URL: control characters and spaces stripped
    from both ends, tabs and newlines removed anywhere (``/<TAB>//evil.example`` is
    ``///evil.example`` to a browser: another site). What remains must be a path: a slash and
    then no second one, no backslash (a slash to a browser) and no other control character. The
    path as the browser reads it is returned.
    """
    path = (target or "").strip(_C0_OR_SPACE).translate(_TAB_OR_NEWLINE)
    if (not path.startswith("/") or path.startswith("//") or "\\" in path
            or any(c < " " or c == "\x7f" for c in path)):
        return default
    parts = urlsplit(path)
    if parts.scheme or parts.netloc:
        return default
    return path


class _RequestState:
    """What one request learned: its session and user (loaded on first use)."""

    def __init__(self) -> None:
        self.session: Session | None = None
        self.user: schema.User | None = None
        self.user_loaded = False


class WebCore:
    """Shared web machinery for one Bottle app; see the module docstring."""

    def __init__(self, settings: Settings, template_dirs: Iterable[str | Path] = ()):
        self.settings = settings
        loaders: list[jinja2.BaseLoader] = [jinja2.FileSystemLoader(str(d)) for d in template_dirs]
        loaders.append(jinja2.FileSystemLoader(str(TEMPLATES)))
        self.env = jinja2.Environment(loader=jinja2.ChoiceLoader(loaders), autoescape=True,
                                      trim_blocks=True, lstrip_blocks=True)
        self.env.globals.update(
            settings=settings, url=self.url, csrf_field=self.csrf_field, csrf_token=self.csrf_token,
            get_flashed=self.pop_flashes,
        )
        self.env.filters["when"] = _when
        self._last_purge = 0.0
        self._purge_lock = threading.Lock()

    # --- installing -----------------------------------------------------------------------------

    def install(self, app: bottle.Bottle, default_access: str = "viewer") -> bottle.Bottle:
        """Install sessions, access checks, CSRF and error pages on ``app``; return it."""
        if default_access not in ACCESS_LEVELS:
            raise ValueError(f"default_access must be one of {ACCESS_LEVELS}")
        app.config["txm.core"] = self
        app.install(_CorePlugin(self, default_access))
        for code in ERROR_TITLES:
            app.error(code)(self.error_page)
        return app

    # --- request state --------------------------------------------------------------------------

    def _state(self) -> _RequestState:
        environ = bottle.request.environ
        state = environ.get(_ENV_KEY)
        if state is None:
            state = environ[_ENV_KEY] = _RequestState()
        return state

    @property
    def session(self) -> Session:
        """The current request's session (loaded from the cookie, or a new empty one)."""
        state = self._state()
        if state.session is None:
            state.session = self._load_session()
        return state.session

    @property
    def user(self) -> schema.User | None:
        """The logged-in, active user of this request, or None."""
        state = self._state()
        if not state.user_loaded:
            state.user_loaded = True
            user_id = self.session.user_id
            if user_id is not None:
                user = schema.User.get_or_none(schema.User.id == user_id)
                state.user = user if user is not None and user.is_active else None
        return state.user

    def _load_session(self) -> Session:
        token = bottle.request.get_cookie(COOKIE_NAME)
        if not token or len(token) > 128:
            return Session()
        row = (schema.WebSession.select().where((schema.WebSession.key == session_key(token))
                                                & (schema.WebSession.expires > schema.utcnow())).first())
        if row is None:
            return Session()
        data = row.data if isinstance(row.data, dict) else {}
        return Session(token, row.user_id, data, row.expires)

    def save_session(self, response: bottle.BaseResponse) -> None:
        """Store the session if it changed and set or clear the cookie on ``response``."""
        for name, value in SECURITY_HEADERS:
            if name not in response.headers:
                response.set_header(name, value)
        state = bottle.request.environ.get(_ENV_KEY)
        session = state.session if state else None
        if session is None:
            return
        now = schema.utcnow()
        lifetime = dt.timedelta(days=self.settings.SESSION_DAYS)
        if session.deleted:
            if session.token:
                schema.WebSession.delete().where(schema.WebSession.key == session_key(session.token)).execute()
            response.delete_cookie(COOKIE_NAME, path="/")
            return
        renew = session.expires is not None and session.expires - now < lifetime - RENEW_SLACK
        if not (session.modified or renew):
            return
        session.expires = now + lifetime
        if session.token is None:
            session.token = secrets.token_urlsafe(32)
            schema.WebSession.create(key=session_key(session.token), user=session.user_id, data=session.data,
                                     created=now, expires=session.expires)
        else:
            key = session_key(session.token)
            updated = (schema.WebSession.update(user=session.user_id, data=session.data, expires=session.expires)
                       .where(schema.WebSession.key == key).execute())
            if not updated:  # deleted meanwhile (logout elsewhere, purge): store it afresh
                schema.WebSession.create(key=key, user=session.user_id, data=session.data, created=now,
                                         expires=session.expires)
        session.modified = False
        response.set_cookie(COOKIE_NAME, session.token, path="/", httponly=True, samesite="lax",
                            secure=self.settings.SESSION_COOKIE_SECURE,
                            max_age=int(lifetime.total_seconds()))

    def purge(self, force: bool = False) -> None:
        """Delete expired sessions and login failures too old to count (at most every few minutes)."""
        now = time.monotonic()
        with self._purge_lock:
            if not force and now - self._last_purge < PURGE_INTERVAL:
                return
            self._last_purge = now
        schema.WebSession.delete().where(schema.WebSession.expires <= schema.utcnow()).execute()
        schema.LoginFailure.delete().where(schema.LoginFailure.when < schema.utcnow() - LOGIN_FAILURE_WINDOW).execute()

    # --- logging in and out -----------------------------------------------------------------------

    def client_address(self) -> str:
        """The peer's address as the WSGI server saw it (never a client-supplied header)."""
        return (bottle.request.environ.get("REMOTE_ADDR") or "unknown")[:45]

    def authenticate(self, username: str, password: str) -> schema.User:
        """The active user with this name and password, or :class:`LoginRefused` saying why.

        Failures are recorded in ``login_failure`` and logged (the name and address, never the
        password). Beyond the limits for the user name from this address, or for this address
        whatever the names, attempts are refused without checking the password; failures from
        other addresses do not count, so nobody locks the owner out from elsewhere. A success
        clears the name's failures from this address. A legacy hash is upgraded.
        """
        username = (username or "").strip()
        address = self.client_address()
        name_key = failure_key(username)
        minutes = int(LOGIN_FAILURE_WINDOW.total_seconds() // 60)
        here = schema.LoginFailure.select().where((schema.LoginFailure.address == address)
                                                  & (schema.LoginFailure.when >= schema.utcnow() - LOGIN_FAILURE_WINDOW))
        by_address = here.count()
        by_name = here.where(schema.LoginFailure.username == name_key).count()
        if by_name >= LOGIN_FAILURES_PER_USER or by_address >= LOGIN_FAILURES_PER_ADDRESS:
            log.warning("login of %r from %s refused: too many failed logins (%d of the name, %d from the address "
                        "in %d minutes)", username[:150], address, by_name, by_address, minutes)
            raise LoginRefused(f"Too many failed logins; try again in {minutes} minutes.")
        user = schema.User.get_or_none(schema.User.username == username) if username else None
        if user is None:
            check_password(password or "", _DUMMY_HASH)  # the same time as for a real user
            ok = False
        else:
            ok = check_password(password or "", user.password)
        if not ok or not user.is_active:
            schema.LoginFailure.create(username=name_key, address=address)
            log.warning("failed login for user name %r from %s (%s)", username[:150], address,
                        "no such user" if user is None else "wrong password" if not ok else "account disabled")
            if by_name + 1 == LOGIN_FAILURES_PER_USER:
                log.warning("user name %r locked out at %s for %d minutes after %d failed logins", username[:150],
                            address, minutes, LOGIN_FAILURES_PER_USER)
            if by_address + 1 == LOGIN_FAILURES_PER_ADDRESS:
                log.warning("address %s locked out for %d minutes after %d failed logins", address, minutes,
                            LOGIN_FAILURES_PER_ADDRESS)
            raise LoginRefused("Wrong user name or password (both are case-sensitive)."
                               if not ok else "This account is disabled.")
        changes: dict[str, Any] = {"last_login": schema.utcnow()}
        if needs_upgrade(user.password):
            changes["password"] = make_password(password)
        schema.User.update(**changes).where(schema.User.id == user.id).execute()
        for key, value in changes.items():
            setattr(user, key, value)
        schema.LoginFailure.delete().where((schema.LoginFailure.username == name_key)
                                           & (schema.LoginFailure.address == address)).execute()
        return user

    def login(self, user: schema.User, password: str | None = None) -> None:
        """Start a fresh session for ``user`` (a new token: no session fixation)."""
        old = self.session
        if old.token:
            schema.WebSession.delete().where(schema.WebSession.key == session_key(old.token)).execute()
        session = Session(user_id=user.id)
        session["csrf"] = secrets.token_urlsafe(32)
        if password is not None and password == DEFAULT_PASSWORD:
            session["must_change_password"] = True
        state = self._state()
        state.session, state.user, state.user_loaded = session, user, True

    def logout(self) -> None:
        """End the session: its row is deleted and the cookie cleared."""
        self.session.deleted = True
        state = self._state()
        state.user, state.user_loaded = None, True

    def end_other_sessions(self, user: schema.User) -> int:
        """Delete the user's sessions but this one (after a password change); return how many."""
        query = schema.WebSession.delete().where(schema.WebSession.user == user.id)
        if self.session.token:
            query = query.where(schema.WebSession.key != session_key(self.session.token))
        return query.execute()

    # --- CSRF --------------------------------------------------------------------------------------

    def csrf_token(self) -> str:
        """This session's CSRF token (created, with the session, on first use)."""
        session = self.session
        token = session.get("csrf")
        if not token:
            token = secrets.token_urlsafe(32)
            session["csrf"] = token
        return token

    def csrf_field(self) -> Markup:
        """A hidden form field with the CSRF token."""
        return Markup('<input type="hidden" name="%s" value="%s">') % (CSRF_FIELD, self.csrf_token())

    def check_csrf(self) -> None:
        """Abort with 403 unless the request carries this session's CSRF token."""
        expected = self.session.get("csrf")
        given = bottle.request.forms.get(CSRF_FIELD) or bottle.request.get_header(CSRF_HEADER) or ""
        if not expected or not hmac.compare_digest(str(given).encode(), str(expected).encode()):
            bottle.abort(403, "The form has expired or came from another site. Reload the page and try again "
                              "(cookies must be enabled).")

    # --- flash messages ------------------------------------------------------------------------------

    def flash(self, text: str, category: str = "info") -> None:
        """A message shown once on the next page rendered for this session."""
        messages = list(self.session.get("flash", []))
        messages.append([category, text])
        self.session["flash"] = messages[-10:]

    def pop_flashes(self) -> list[tuple[str, str]]:
        if not self.session.get("flash"):
            return []
        return [(c, t) for c, t in self.session.pop("flash", [])]

    # --- pages -----------------------------------------------------------------------------------------

    def url(self, path: str) -> str:
        """An absolute path on this site (``/units/M1/``), below the WSGI script name if any."""
        root = bottle.request.environ.get("SCRIPT_NAME", "").rstrip("/")
        return root + path

    def render(self, name: str, **context: Any) -> str:
        """Render a template with the shared context (``user``, ``request_path``, ...)."""
        try:
            user = self.user
        except pw.PeeweeException:  # the error page of a dead database connection
            user = None
        context.setdefault("user", user)
        context.setdefault("request_path", bottle.request.path)
        return self.env.get_template(name).render(**context)

    def render_string(self, source: str, **context: Any) -> str:
        """Render template text (a one-file HTTP App's page) with the shared context."""
        context.setdefault("user", self.user)
        context.setdefault("request_path", bottle.request.path)
        return self.env.from_string(source).render(**context)

    def redirect(self, path: str, code: int = 303) -> None:
        """Redirect to a path on this site (raises)."""
        bottle.redirect(self.url(path) if path.startswith("/") else path, code)

    def login_url(self) -> str:
        here = bottle.request.fullpath
        if bottle.request.query_string:
            here += "?" + bottle.request.query_string
        return self.url("/login") + "?next=" + quote(here, safe="/")

    def error_page(self, error: bottle.HTTPError) -> str:
        """Render ``error.html`` for an HTTP error; a 500 shows no detail of what failed."""
        status = error.status_code
        try:
            _connect()
        except pw.PeeweeException:
            pass
        if status >= 500:  # Bottle wrote the traceback to wsgi.errors (the server's log)
            message = "Something went wrong on the server. The error was logged; please try again later."
        else:
            message = error.body if isinstance(error.body, str) and error.body else ERROR_TITLES.get(status, "")
            if status == 404 and message.startswith("Not found: "):
                message = "There is no page at this address."
        try:
            return self.render("error.html", status=status, title=ERROR_TITLES.get(status, "Error"), message=message)
        except Exception:  # never fail while reporting a failure
            log.exception("rendering the error page failed")
            return f"<!doctype html><title>Error {status}</title><h1>Error {status}</h1>"

    # --- access -----------------------------------------------------------------------------------------

    def check_access(self, access: str, default_password_ok: bool = False) -> None:
        """Redirect or abort unless the current visitor may see a page of this access level."""
        if access == "public":
            return
        user = self.user
        if access == "viewer" and not self.settings.LOGIN_REQUIRED and user is None:
            return
        if user is None:
            bottle.redirect(self.login_url(), 303)
        if self.session.get("must_change_password") and not default_password_ok:
            self.flash("Please choose a new password: yours is still the installation default.", "warning")
            bottle.redirect(self.url("/password") + "?next=" + quote(safe_next(bottle.request.fullpath), safe="/"),
                            303)
        if access == "staff" and not user.is_staff:
            bottle.abort(403, "This page is for staff users only.")


def failure_key(username: str) -> str:
    """The ``login_failure.username`` a typed user name is counted under, whatever its case."""
    return (username or "").strip().lower()[:150]


@dataclass
class FailedLogins:
    """A user name's recent failed logins from one address."""

    address: str
    count: int
    latest: dt.datetime
    #: Logins of the name from this address are refused now (its own failures or the address's).
    locked: bool


def recent_login_failures(username: str) -> list[FailedLogins]:
    """The failed logins of a user name within :data:`LOGIN_FAILURE_WINDOW`, per address, the
    latest first."""
    failure = schema.LoginFailure
    since = schema.utcnow() - LOGIN_FAILURE_WINDOW
    rows = list(failure.select(failure.address, pw.fn.COUNT(failure.id), pw.fn.MAX(failure.when))
                .where((failure.username == failure_key(username)) & (failure.when >= since))
                .group_by(failure.address).order_by(pw.fn.MAX(failure.when).desc()).tuples())
    if not rows:
        return []
    by_address = dict(failure.select(failure.address, pw.fn.COUNT(failure.id))
                      .where(failure.address.in_([row[0] for row in rows]) & (failure.when >= since))
                      .group_by(failure.address).tuples())
    return [FailedLogins(address, count, latest,
                         count >= LOGIN_FAILURES_PER_USER or by_address.get(address, 0) >= LOGIN_FAILURES_PER_ADDRESS)
            for address, count, latest in rows]


def clear_login_failures(username: str) -> int:
    """Forget a user name's failed logins from every address, so that it may log in again at
    once; returns how many were forgotten. An address refused for its failures at other names
    stays refused until they are older than :data:`LOGIN_FAILURE_WINDOW`."""
    deleted = schema.LoginFailure.delete().where(schema.LoginFailure.username == failure_key(username)).execute()
    log.info("cleared %d failed login(s) of user name %r", deleted, username[:150])
    return deleted


#: Seconds a download refused for a bound asks the client to wait (``Retry-After``).
DOWNLOAD_RETRY_AFTER = 30


class DownloadSlots:
    """Bounds on the long responses a web process streams at once (CSV downloads): per client
    (a logged-in user, else an address) and in all.

    A download's thread is the client's for as long as the client takes to read it, and a
    client that stops reading holds it until ``WEB_STALL_SECONDS`` closes the connection
    (:mod:`txm.web.process`). Without these bounds, eight such downloads would take every thread
    of the web server and nobody could even log in. With them, one user (or one address) runs
    at most ``per_client`` downloads and everyone together ``at_once``, fewer than the server's
    threads; beyond, the request is answered at once with 429 (that client's bound) or 503 (the
    bound in all), a ``Retry-After`` header and a plain-text message. Make one with the app
    (``make_app``), shared by its threads, not one per request.
    """

    def __init__(self, per_client: int, at_once: int):
        self.per_client = per_client
        self.at_once = at_once
        self._lock = threading.Lock()
        self._running: dict[tuple[str, Any], int] = {}  # client -> its downloads running
        self._total = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> DownloadSlots:
        return cls(settings.WEB_DOWNLOADS_PER_CLIENT, settings.WEB_DOWNLOADS_AT_ONCE)

    def stream(self, core: WebCore, pieces: Iterable[bytes]) -> Iterator[bytes]:
        """``pieces`` as the body of this request's response, holding one of the visitor's slots
        until it ends or is closed; raises the 429 or 503 response over a bound (in a route)."""
        user = core.user
        client: tuple[str, Any] = ("user", user.id) if user is not None else ("address", core.client_address())
        who = f"user {user.username!r}" if user is not None else core.client_address()
        pieces = iter(pieces)
        with self._lock:
            mine = self._running.get(client, 0)
            refused = mine >= self.per_client or self._total >= self.at_once
            if not refused:
                self._running[client] = mine + 1
                self._total += 1
        if not refused:
            return _Download(self, client, pieces)
        path = bottle.request.path
        if mine >= self.per_client:
            log.info("download of %s for %s refused: %d of its downloads are running", path, who, mine)
            raise _refusal(429, f"Too many downloads at once: you have {mine} running, the most one "
                                f"{'user' if user is not None else 'address'} may. Let one finish (or stop "
                                f"it), then try again.")
        log.info("download of %s for %s refused: %d downloads are running, the most at once", path, who,
                 self.at_once)
        raise _refusal(503, f"The server is running as many downloads as it may at once ({self.at_once}). "
                            f"Try again in half a minute.")

    def _release(self, client: tuple[str, Any]) -> None:
        with self._lock:
            left = self._running.get(client, 0) - 1
            if left > 0:
                self._running[client] = left
            else:
                self._running.pop(client, None)
            self._total -= 1


def _refusal(status: int, message: str) -> bottle.HTTPResponse:
    response = bottle.HTTPResponse(message + "\n", status)
    response.content_type = "text/plain; charset=utf-8"
    response.set_header("Retry-After", str(DOWNLOAD_RETRY_AFTER))
    response.set_header("Cache-Control", "no-store")
    return response


class _Download:
    """A response body that gives its slot back when the server closes it (the WSGI ``close``:
    at its end, or when the client went away), or when it is dropped unclosed (an error before
    the server took it)."""

    def __init__(self, slots: DownloadSlots, client: tuple[str, Any], pieces: Iterator[bytes]):
        self._slots = slots
        self._client = client
        self._pieces = pieces
        self._open = True

    def __iter__(self) -> _Download:
        return self

    def __next__(self) -> bytes:
        return next(self._pieces)

    def close(self) -> None:
        if self._open:
            self._open = False
            try:
                close = getattr(self._pieces, "close", None)
                if close is not None:
                    close()
            finally:
                self._slots._release(self._client)

    def __del__(self) -> None:
        self.close()


def _when(value: dt.datetime | str | None) -> str:
    """The templates' ``when`` filter: :func:`~txm.timestamps.format_timestamp`, and nothing for
    no value (a channel without values has no first or last time)."""
    if value is None:
        return ""
    return value if isinstance(value, str) else format_timestamp(value)


_DUMMY_HASH = make_password("not a password", salt="txmdummysalt0000000000")


class _CorePlugin:
    """The Bottle plugin :meth:`WebCore.install` installs."""

    name = "txm_core"
    api = 2

    def __init__(self, core: WebCore, default_access: str):
        self.core = core
        self.default_access = default_access

    def apply(self, callback: Callable, route: bottle.Route) -> Callable:
        core = self.core
        config = route.config
        access = config.get("access", self.default_access)
        if access not in ACCESS_LEVELS:
            raise ValueError(f"route {route.rule}: access must be one of {ACCESS_LEVELS}, not {access!r}")
        csrf = config.get("csrf", True)
        default_password_ok = config.get("default_password_ok", False)

        @functools.wraps(callback)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            environ = bottle.request.environ
            outermost = not environ.get("txm.web.active")
            environ["txm.web.active"] = True
            _connect()
            try:
                if _holds_nul():
                    bottle.abort(400, "The request holds a NUL character, which no field of txm accepts.")
                core.check_access(access, default_password_ok)
                if csrf and bottle.request.method in UNSAFE_METHODS:
                    core.check_csrf()
                result = callback(*args, **kwargs)
            except bottle.HTTPResponse as response:
                if outermost:
                    core.save_session(response)
                raise
            except (pw.OperationalError, pw.InterfaceError):
                _disconnect()  # a broken connection: the next request opens a new one
                raise
            if outermost:
                core.save_session(result if isinstance(result, bottle.HTTPResponse) else bottle.response)
                core.purge()
            return result

        return wrapper


def _holds_nul() -> bool:
    """Does the path, a query or form value, or the basic auth of this request hold a NUL?
    No text of txm has one, and PostgreSQL refuses it in any query (a 500 otherwise)."""
    request = bottle.request
    texts = [request.path, *(part for part in request.auth or () if part)]
    for items in (request.query.allitems(), request.forms.allitems()):
        texts += [text for item in items for text in item]
    return any("\x00" in text for text in texts)


def _connect() -> None:
    database = schema.database
    if database.obj is not None and database.is_closed():
        database.connect()


def _disconnect() -> None:
    try:
        if schema.database.obj is not None:
            schema.database.close()
    except Exception:
        pass
