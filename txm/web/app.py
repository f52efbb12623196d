"""The web interface's pages: a Bottle app built by :func:`make_app`.

Routes (docs/web.md describes them for users):

* ``/login``, ``/logout`` (POST), ``/password`` -- logging in and out, changing one's password;
* ``/`` -- the units the user may see and the multiple-meter views;
* ``/static/<file>`` -- the stylesheet;
* ``/units/<code>/`` graphs and statistics, ``/units/<code>/data.csv`` the CSV download;
* ``/views/<id>/`` -- a multiple-meter view, refreshed from ``/api/views/<id>``;
* ``/api/...`` -- the JSON API (:mod:`txm.web.api`).

Sessions, access checks, CSRF and error pages come from :mod:`txm.webcore`. The admin panel
(``/admin/``) and HTTP Apps are mounted beside these pages by :func:`txm.serve.make_site`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import quote, urlencode

import bottle

from txm.config import Settings
from txm.db import schema
from txm.db.database import open_database
from txm.errors import InvalidValue
from txm.export.csv import UnitExport, iter_pieces, resolve_fields
from txm.export.ranges import PRESETS, DateRange
from txm.export.stats import overview, plot_limit
from txm.passwords import DEFAULT_PASSWORD, check_password, make_password, weakness
from txm.permissions import visible_unit, visible_units
from txm.timestamps import TIMESTAMP_FORMAT, format_timestamp
from txm.web.api import add_api_routes, requested_range, view_data
from txm.web.graphs import render_graphs, unit_axes
from txm.webcore import STATIC, DownloadSlots, LoginRefused, WebCore, safe_next

#: Samples per query and per piece of a CSV download.
CSV_PAGE = 2000


def make_app(settings: Settings) -> bottle.Bottle:
    """The web interface's own pages and JSON API as a Bottle app (WSGI); the whole site, with
    the admin panel and HTTP Apps, is :func:`txm.serve.make_site`.

    The models must be bound to a database (:func:`txm.db.database.open_database`); when they
    are not, the database the settings name is opened.
    """
    if schema.database.obj is None:
        open_database(settings)
    app = bottle.Bottle()
    core = WebCore(settings)
    core.install(app, default_access="viewer")
    _account_routes(app, core)
    _page_routes(app, core, settings)
    add_api_routes(app, core, settings)
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
        schema.User.update(password=make_password(new)).where(schema.User.id == user.id).execute()
        core.session.pop("must_change_password")
        ended = core.end_other_sessions(user)
        warning = weakness(new)
        core.flash("Your password was changed." + (" You were logged out elsewhere." if ended else ""), "success")
        if warning:
            core.flash(f"A weak password: {warning}.", "warning")
        core.redirect(target)


# --- pages ---------------------------------------------------------------------------------------


def _page_routes(app: bottle.Bottle, core: WebCore, settings: Settings) -> None:
    downloads = DownloadSlots.from_settings(settings)

    def unit_or_404(code: str) -> schema.Unit:
        """The unit with this code if the visitor may see it, else the 404 page."""
        unit = visible_unit(core.user, code, settings.LOGIN_REQUIRED)
        if unit is None:
            bottle.abort(404, f"There is no unit {code!r} that you may see.")
        return unit

    @app.get("/")
    def home():
        units = list(visible_units(core.user, settings.LOGIN_REQUIRED))
        views = list(schema.View.select().order_by(schema.View.name))
        return core.render("home.html", units=units, views=views)

    @app.get("/units/<code>")
    def unit_slash(code: str):
        core.redirect(f"/units/{quote(code)}/", 301)

    @app.get("/units/<code>/")
    def unit_page(code: str):
        unit = unit_or_404(code)
        query = bottle.request.query
        context: dict[str, Any] = dict(unit=unit, presets=PRESETS, error="", range=None, stats=None,
                                       graphs=[], series=None, from_text=query.getunicode("from") or "",
                                       to_text=query.getunicode("to") or "", csv_query="",
                                       timestamp_format=TIMESTAMP_FORMAT)
        try:
            chosen = requested_range(unit)
        except InvalidValue as exc:
            bottle.response.status = 400
            context["error"] = str(exc)
            return core.render("unit.html", **context)
        axes = unit_axes(unit)
        limit = plot_limit(settings.MAX_PLOT_POINTS, unit.graph_width)
        stats, series = overview(unit, chosen.start, chosen.end, limit)
        context.update(range=chosen, stats=stats, series=series, csv_query=_range_query(chosen))
        if stats.count:
            context["graphs"] = render_graphs(unit, series, axes)
        return core.render("unit.html", **context)

    @app.get("/units/<code>/data.csv")
    def unit_csv(code: str):
        unit = unit_or_404(code)
        if not unit.has_reports:
            bottle.abort(403, f"Data downloads are switched off for unit {unit.code}.")
        try:
            chosen = requested_range(unit)
            fields = _report_fields(unit, bottle.request.query.getunicode("fields"))
        except InvalidValue as exc:
            bottle.abort(400, str(exc))
        # Small pages: pieces of about 100 KB keep the web process's memory flat (large pieces
        # handed between waitress's threads leave the allocator holding megabytes).
        job = UnitExport(schema.database.obj, unit, fields, chosen.start, chosen.end, page_size=CSV_PAGE)
        # A slot of the bounded few: a client that reads slowly, or not at all, holds a thread.
        body = downloads.stream(core, iter_pieces(job.csv_pages()))
        bottle.response.content_type = "text/csv; charset=utf-8"
        bottle.response.set_header("Content-Disposition", f'attachment; filename="{_csv_name(unit, chosen)}"')
        bottle.response.set_header("X-Content-Type-Options", "nosniff")
        return body

    @app.get("/views/<view_id:int>")
    def view_slash(view_id: int):
        core.redirect(f"/views/{view_id}/", 301)

    @app.get("/views/<view_id:int>/")
    def view_page(view_id: int):
        view = schema.View.get_or_none(schema.View.id == view_id)
        if view is None:
            bottle.abort(404, f"There is no multiple-meter view {view_id}.")
        return core.render("view.html", view=view, live=view_data(core.user, view, settings))

def _report_fields(unit: schema.Unit, spec: str | None) -> list[int]:
    """The channels a download asks for, each one the unit's report options allow."""
    allowed = resolve_fields(unit, None)
    if not spec or not spec.strip():
        return allowed
    asked = resolve_fields(unit, spec)
    refused = [n for n in asked if n not in allowed]
    if refused:
        labels = unit.channel_labels()
        raise InvalidValue(f"field {labels[refused[0] - 1]} is not offered for download; "
                           f"the fields are {', '.join(labels[n - 1] for n in allowed)}")
    return asked


def _range_query(chosen: DateRange) -> str:
    """The query string that asks for the same range again."""
    if chosen.preset:
        return urlencode({"range": chosen.preset})
    params = {}
    if chosen.start is not None:
        params["from"] = format_timestamp(chosen.start)
    if chosen.end is not None:
        params["to"] = format_timestamp(chosen.end - dt.timedelta(microseconds=1))
    return urlencode(params)


def _csv_name(unit: schema.Unit, chosen: DateRange) -> str:
    """``M1_2026-01-01T000000_to_2026-01-31T235959.csv``: the unit and the first and last second
    of the range."""
    def part(value: dt.datetime | None, open_name: str) -> str:
        return value.strftime("%Y-%m-%dT%H%M%S") if value is not None else open_name

    if chosen.start is None and chosen.end is None:
        return f"{unit.code}_all.csv"
    last = chosen.end - dt.timedelta(microseconds=1) if chosen.end is not None else None
    return f"{unit.code}_{part(chosen.start, 'start')}_to_{part(last, 'end')}.csv"


