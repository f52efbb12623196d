"""The Administration Control Panel: its own Bottle app, mounted by the web interface at ``/admin/``.

Routes (below the mount point):

* ``/`` -- the index: every model the user may see, and their own recent actions.
* ``/<model>/`` list (search, paging), ``/<model>/add``, ``/<model>/<id>/`` (change, or read-only
  without the change permission), ``/<model>/<id>/delete`` (a confirmation page, then POST) for
  users, groups, units, mailing lists, alarm messages and views; ``/user/<id>/password`` is the
  "change password form"; ``/alarmmessage/<id>/preview`` and ``/alarmmessage/<id>/test-email``.
* ``/sample/`` and ``/alarm/``: listed per unit with date filters and keyset paging; each record
  viewed at ``/<model>/<id>/`` and deleted singly, selected (``/<model>/delete-selected``), all
  (``/<model>/delete-all``) or old (``/<model>/delete-old``). No route changes a sample or alarm.
* ``/logentry/``: the action log, filtered; ``/logentry/<id>/`` one entry. Never edited.

Only an active staff user enters (the web core checks it and sends an anonymous visitor to the
login page); every route then checks the model permission it needs on the server.
All the work is done by the other modules of :mod:`txm.admin`; these routes only read requests and
render pages.
"""

from __future__ import annotations

import functools
from typing import Any, Callable
from urllib.parse import urlencode

import bottle

from txm import db as m
from txm.admin.actor import Actor, Forbidden
from txm.admin.base import delete, new_form, submit
from txm.admin.forms import Form, FormInput, read_input
from txm.admin.meters import (SAMPLE_ALARM_DATA, mailing_list_addresses, preview_alarm_message,
                              send_test_alarm_email)
from txm.admin.people import password_fields, permission_grid, set_password
from txm.admin.records import ALARMS, LOG, SAMPLES, Page, parse_when, selected_ids
from txm.admin.registry import FORM_MODELS, registry, visible_sections
from txm.config import Settings
from txm.errors import InvalidValue, NotFound, TxmError
from txm.webcore import WebCore, safe_next

def make_app(settings: Settings) -> bottle.Bottle:
    """The admin panel as a Bottle app; the web interface mounts it at ``/admin/``."""
    app = bottle.Bottle()
    core = WebCore(settings)
    core.install(app, default_access="staff")
    reg = registry()

    # --- helpers ------------------------------------------------------------------------------

    def prefix() -> str:
        return app.config.get("_mount.prefix", "/").rstrip("/")

    def link(path: str = "/", **query: Any) -> str:
        """A URL of the panel: ``link('/unit/')`` -> ``/admin/unit/``."""
        url = core.url(prefix() + path)
        query = {k: v for k, v in query.items() if v not in (None, "")}
        return url + ("?" + urlencode(query) if query else "")

    def go(path: str, **query: Any) -> None:
        bottle.redirect(link(path, **query), 303)

    def actor() -> Actor:
        return Actor.of(core.user, settings)

    def need(action: str, model: str) -> Actor:
        who = actor()
        if not who.may(action, model):
            bottle.abort(403, f"You do not have permission to {action} {reg[model].plural}.")
        return who

    def model_admin(name: str) -> Any:
        admin = reg.get(name)
        if admin is None or name not in FORM_MODELS:
            bottle.abort(404, "There is no such page in the administration panel.")
        return admin

    def render(template: str, **context: Any) -> str:
        who = context.pop("who", None) or actor()
        query = bottle.request.query_string
        here = bottle.request.fullpath + ("?" + query if query else "")
        return core.render(template, admin_url=link, who=who, registry=reg, here=here,
                           permission_grid=permission_grid, **context)

    def form_input() -> FormInput:
        forms = bottle.request.forms.decode()
        return FormInput({key: forms.getall(key) for key in forms.keys()})

    def query_value(name: str) -> str:
        return (bottle.request.query.getunicode(name) or "").strip()

    def library_errors(route: Callable) -> Callable:
        """The library's refusals become the HTTP answers people expect."""

        @functools.wraps(route)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return route(*args, **kwargs)
            except Forbidden as exc:
                bottle.abort(403, _sentence(str(exc)))
            except NotFound as exc:
                bottle.abort(404, _sentence(str(exc)))

        return wrapper

    def get_object(admin: Any, obj_id: str) -> Any:
        return admin.get(obj_id)

    # --- the index ----------------------------------------------------------------------------

    @app.get("/")
    def index():
        who = actor()
        recent = (m.LogEntry.select().where(m.LogEntry.user == who.user).order_by(m.LogEntry.id.desc()).limit(10))
        return render("admin/index.html", who=who, sections=visible_sections(who), recent=list(recent),
                      title="Administration")

    # --- samples ---------------------------------------------------------------------------------

    def unit_from_query(required: bool) -> m.Unit | None:
        code = query_value("unit") or (bottle.request.forms.getunicode("unit") or "").strip()
        if not code:
            if required:
                bottle.abort(400, "Choose a unit.")
            return None
        unit = m.Unit.get_or_none(m.Unit.code == code)
        if unit is None:
            bottle.abort(404, f"There is no unit with code {code!r}.")
        return unit

    def date_filters() -> tuple[Any, Any, str]:
        try:
            return (parse_when(query_value("from"), "From"), parse_when(query_value("to"), "To"), "")
        except InvalidValue as exc:
            return None, None, _sentence(str(exc))

    @app.get("/sample/")
    @library_errors
    def sample_list():
        who = need("view", "sample")
        unit = unit_from_query(False)
        if unit is None:
            return unit_picker(who, "sample")
        start, end, problem = date_filters()
        page = Page([])
        if not problem:
            try:
                page = SAMPLES.page(start, end, query_value("before"), query_value("after"), unit=unit)
            except InvalidValue as exc:
                problem = _sentence(str(exc))
        return render("admin/samples.html", who=who, unit=unit, page=page, problem=problem,
                      filters={"from": query_value("from"), "to": query_value("to")},
                      can_delete=SAMPLES.deletion_allowed(who), title=f"Samples of {unit.code}")

    def unit_picker(who: Actor, model: str):
        search = query_value("q")
        page = _page_number()
        rows, more = reg["unit"].page(search, page)
        return render("admin/unit_picker.html", who=who, model=model, units=rows, more=more, page=page,
                      search=search, can_delete=reg[model].deletion_allowed(who),
                      title=f"{reg[model].plural.capitalize()}: choose a unit")

    @app.get("/sample/<obj_id>/")
    @library_errors
    def sample_detail(obj_id):
        who = need("view", "sample")
        sample = SAMPLES.get(obj_id)
        return render("admin/sample.html", who=who, sample=sample, unit=sample.unit,
                      can_delete=SAMPLES.deletion_allowed(who), title=SAMPLES.describe(sample))

    @app.route("/sample/<obj_id>/delete", method=["GET", "POST"])
    @library_errors
    def sample_delete(obj_id):
        who = need("delete", "sample")
        SAMPLES.require_deletion(who)
        sample = SAMPLES.get(obj_id)
        if bottle.request.method == "POST":
            SAMPLES.delete_selected(who, [sample.id])
            core.flash(f"Deleted {SAMPLES.describe(sample)}.", "success")
            go("/sample/", unit=sample.unit.code)
        return render("admin/confirm_delete.html", who=who, what=SAMPLES.describe(sample), warnings=[],
                      problems=[], back=link(f"/sample/{sample.id}/"), title="Delete a sample")

    @app.post("/sample/delete-selected")
    @library_errors
    def sample_delete_selected():
        return delete_selected("sample")

    @app.post("/alarm/delete-selected")
    @library_errors
    def alarm_delete_selected():
        return delete_selected("alarm")

    def delete_selected(model: str):
        who = need("delete", model)
        kind = reg[model]
        kind.require_deletion(who)
        forms = bottle.request.forms
        ids = forms.getall("ids")
        back = safe_next(forms.getunicode("back") or "", link(f"/{model}/"))
        try:
            numbers = selected_ids(ids)
        except InvalidValue as exc:
            core.flash(_sentence(str(exc)), "error")
            bottle.redirect(back, 303)
        if forms.get("confirm") == "yes":
            count = kind.delete_selected(who, numbers)
            core.flash(f"Deleted {count} {reg[model].plural if count != 1 else reg[model].verbose}.", "success")
            bottle.redirect(back, 303)
        records = kind.selected(numbers)
        names = [kind.describe(r) for r in records]
        return render("admin/confirm_selected.html", who=who, model=model, names=names, ids=[r.id for r in records],
                      back=back, title=f"Delete {len(records)} selected {reg[model].plural}")

    @app.route("/sample/delete-all", method=["GET", "POST"])
    @library_errors
    def sample_delete_all():
        return bulk("sample", old=False)

    @app.route("/sample/delete-old", method=["GET", "POST"])
    @library_errors
    def sample_delete_old():
        return bulk("sample", old=True)

    @app.route("/alarm/delete-all", method=["GET", "POST"])
    @library_errors
    def alarm_delete_all():
        return bulk("alarm", old=False)

    @app.route("/alarm/delete-old", method=["GET", "POST"])
    @library_errors
    def alarm_delete_old():
        return bulk("alarm", old=True)

    def bulk(model: str, old: bool):
        who = need("delete", model)
        reg[model].require_deletion(who)
        unit = unit_from_query(False)
        before_text = (bottle.request.forms.getunicode("before") or "").strip()
        error = ""
        if bottle.request.method == "POST":
            before = None
            if old:
                try:
                    before = parse_when(before_text, "Older than")
                    if before is None:
                        error = "Give the date: everything older than it is deleted."
                except InvalidValue as exc:
                    error = _sentence(str(exc))
            if not error:
                result = reg[model].delete_bulk(who, unit, before)
                core.flash(result.message, "success")
                go(f"/{model}/", unit=unit.code if unit else "")
        noun = reg[model].plural
        if old:
            title = f"Delete old {noun}" + (f" of {unit.code}" if unit else " of every unit")
        else:
            title = f"Delete ALL {noun}" + (f" of {unit.code}" if unit else " of every unit")
        return render("admin/bulk.html", who=who, model=model, unit=unit, old=old, before=before_text,
                      error=error, title=title,
                      back=link(f"/{model}/", unit=unit.code if unit else ""))

    # --- alarms ----------------------------------------------------------------------------------

    @app.get("/alarm/")
    @library_errors
    def alarm_list():
        who = need("view", "alarm")
        unit = unit_from_query(False)
        start, end, problem = date_filters()
        page = Page([])
        if not problem:
            try:
                page = ALARMS.page(start, end, query_value("before"), query_value("after"), unit=unit)
            except InvalidValue as exc:
                problem = _sentence(str(exc))
        units = list(m.Unit.select(m.Unit.id, m.Unit.code, m.Unit.name).order_by(m.Unit.code).limit(1000))
        return render("admin/alarms.html", who=who, unit=unit, units=units, page=page, problem=problem,
                      filters={"from": query_value("from"), "to": query_value("to")},
                      can_delete=ALARMS.deletion_allowed(who),
                      title="Alarms" + (f" of {unit.code}" if unit else ""))

    @app.get("/alarm/<obj_id>/")
    @library_errors
    def alarm_detail(obj_id):
        who = need("view", "alarm")
        alarm = ALARMS.get(obj_id)
        return render("admin/alarm.html", who=who, alarm=alarm, can_delete=ALARMS.deletion_allowed(who),
                      title=ALARMS.describe(alarm))

    @app.route("/alarm/<obj_id>/delete", method=["GET", "POST"])
    @library_errors
    def alarm_delete(obj_id):
        who = need("delete", "alarm")
        ALARMS.require_deletion(who)
        alarm = ALARMS.get(obj_id)
        if bottle.request.method == "POST":
            ALARMS.delete_selected(who, [alarm.id])
            core.flash(f"Deleted {ALARMS.describe(alarm)}.", "success")
            go("/alarm/", unit=alarm.unit.code)
        return render("admin/confirm_delete.html", who=who, what=ALARMS.describe(alarm), warnings=[], problems=[],
                      back=link(f"/alarm/{alarm.id}/"), title="Delete an alarm")

    # --- the action log --------------------------------------------------------------------------

    @app.get("/logentry/")
    @library_errors
    def log_list():
        who = need("view", "logentry")
        filters = {name: query_value(name) for name in ("model", "action", "user", "q", "from", "to", "object")}
        start, end, problem = date_filters()
        page = Page([])
        if not problem:
            try:
                page = LOG.page(start, end, query_value("before"), query_value("after"), model=filters["model"],
                                action=filters["action"], user=filters["user"], q=filters["q"], object=filters["object"])
            except InvalidValue as exc:
                problem = _sentence(str(exc))
        return render("admin/log.html", who=who, page=page, filters=filters, problem=problem,
                      models=[(name, a.plural) for name, a in reg.items()], title="Action log")

    @app.get("/logentry/<obj_id>/")
    @library_errors
    def log_detail(obj_id):
        who = need("view", "logentry")
        entry = LOG.get(obj_id)
        return render("admin/logentry.html", who=who, entry=entry, object_url=object_url(entry),
                      title=f"Log entry {entry.id}")

    def object_url(entry: m.LogEntry) -> str:
        """A link to the object a log entry is about, while it still exists."""
        if entry.action == "delete" or not entry.object_id.isdigit():
            return ""
        admin = reg.get(entry.model)
        if admin is None or entry.model not in FORM_MODELS:
            return ""
        if not admin.model.select().where(admin.model._meta.primary_key == int(entry.object_id)).exists():
            return ""
        return link(f"/{entry.model}/{entry.object_id}/")

    # --- users: the change password form ------------------------------------------------------------

    @app.route("/user/<obj_id>/password", method=["GET", "POST"])
    @library_errors
    def user_password(obj_id):
        who = need("change", "user")
        user = reg["user"].get(obj_id)
        form = Form(password_fields())
        if bottle.request.method == "POST":
            form = set_password(who, user, form_input())
            if form.saved is not None:
                for warning in form.warnings:
                    core.flash(warning + " It was saved all the same.", "warning")
                if user.id == who.user.id:
                    core.end_other_sessions(user)
                else:
                    m.WebSession.delete().where(m.WebSession.user == user.id).execute()
                core.flash(f"The password of {user.username} was changed.", "success")
                go(f"/user/{user.id}/")
        return render("admin/password.html", who=who, form=form, obj=user, title=f"Change password: {user.username}")

    # --- alarm messages: preview and test email -------------------------------------------------

    @app.post("/alarmmessage/preview")
    @library_errors
    def alarm_message_preview():
        """Render the subject and message as typed (saved or not) with sample data; nothing is saved."""
        admin = reg["alarmmessage"]
        who = need("view", "alarmmessage")
        raw = form_input()
        obj = admin.get(raw.get("_id")) if raw.get("_id") else None
        if obj is None:
            who.require("add", "alarmmessage")
        fields = admin.fields(who, obj, raw)
        data, shown, errors = read_input(fields, raw, admin.initial(obj))
        form = Form(fields, shown, errors)
        sample = _data_list(raw.get("sample_data"))
        preview, problem = None, ""
        unit = m.Unit.get_or_none(m.Unit.id == int(data["unit"])) if data.get("unit") else None
        if unit is None or data.get("level") is None:
            problem = "Choose the unit and the alarm level first."
        else:
            try:
                subject, body = preview_alarm_message(unit, data["level"], data.get("subject") or "",
                                                         data.get("body") or "", sample)
                preview = {"subject": subject, "body": body}
            except TxmError as exc:
                problem = _sentence(str(exc))
        extra = {"preview": preview, "preview_problem": problem, "sample_data": ", ".join(sample)}
        if obj is None:
            return render("admin/form.html", who=who, admin=admin, form=form, obj=None, readonly=False,
                          title=f"Add {admin.verbose}", **extra)
        return change_page(admin, who, obj, form, **extra)

    @app.post("/alarmmessage/<obj_id>/test-email")
    @library_errors
    def alarm_message_test(obj_id):
        who = need("change", "alarmmessage")
        message = reg["alarmmessage"].get(obj_id)
        forms = bottle.request.forms
        data = _data_list(forms.getunicode("data"))
        recipients = [r for r in (forms.getunicode("recipients") or "").replace(";", ",").split(",")]
        try:
            send_test_alarm_email(who, message, recipients, data)
        except TxmError as exc:
            core.flash(f"The test email was not sent: {_sentence(str(exc))}", "error")
        else:
            core.flash(f"A test email was sent to {', '.join(r.strip() for r in recipients if r.strip())}.",
                       "success")
        go(f"/alarmmessage/{message.id}/")

    # --- the generic pages of the form models -------------------------------------------------------

    @app.get("/<model>/")
    @library_errors
    def object_list(model):
        admin = model_admin(model)
        who = need("view", model)
        search = query_value("q")
        page = _page_number()
        rows, more = admin.page(search, page)
        return render("admin/list.html", who=who, admin=admin, rows=rows, more=more, page=page, search=search,
                      title=admin.plural.capitalize())

    @app.route("/<model>/add", method=["GET", "POST"])
    @library_errors
    def object_add(model):
        admin = model_admin(model)
        who = need("add", model)
        if bottle.request.method == "POST":
            form = submit(admin, who, form_input())
            if form.saved is not None:
                saved(admin, form, added=True)
        else:
            form = new_form(admin, who)
            for f in form.fields:  # links may fill in fields: /mailinglist/add?unit=3
                if f.kind not in ("multi", "password") and query_value(f.name):
                    form.values[f.name] = query_value(f.name)
        return render("admin/form.html", who=who, admin=admin, form=form, obj=None, readonly=False,
                      title=f"Add {admin.verbose}")

    def saved(admin: Any, form: Form, added: bool) -> None:
        for warning in form.warnings:
            core.flash(warning + " It was saved all the same.", "warning")
        verb = "added" if added else "changed"
        core.flash(f"The {admin.verbose} {admin.repr(form.saved)!r} was {verb}.", "success")
        forms = bottle.request.forms
        if forms.get("_continue"):
            go(f"/{admin.name}/{form.saved.id}/")
        if forms.get("_addanother"):
            go(f"/{admin.name}/add")
        go(f"/{admin.name}/")

    def change_page(admin: Any, who: Actor, obj: Any, form: Form | None = None, **extra: Any) -> str:
        readonly = not who.may("change", admin.name)
        if form is None:
            form = new_form(admin, who, obj)
        if readonly:
            for f in form.fields:
                f.readonly = True
        if admin.name == "unit":
            extra["mailing_list"] = m.MailingList.get_or_none(m.MailingList.unit == obj)
        if admin.name == "alarmmessage":
            extra.setdefault("sample_data", ", ".join(SAMPLE_ALARM_DATA))
            extra.setdefault("recipients", ", ".join(mailing_list_addresses(obj.unit)))
        return render("admin/form.html", who=who, admin=admin, form=form, obj=obj, readonly=readonly,
                      title=f"{'View' if readonly else 'Change'} {admin.verbose}: {admin.repr(obj)}", **extra)

    @app.route("/<model>/<obj_id>/", method=["GET", "POST"])
    @library_errors
    def object_change(model, obj_id):
        admin = model_admin(model)
        who = need("view", model)
        obj = get_object(admin, obj_id)
        form = None
        if bottle.request.method == "POST":
            who = need("change", model)
            form = submit(admin, who, form_input(), obj)
            if form.saved is not None:
                saved(admin, form, added=False)
        return change_page(admin, who, obj, form)

    @app.route("/<model>/<obj_id>/delete", method=["GET", "POST"])
    @library_errors
    def object_delete(model, obj_id):
        admin = model_admin(model)
        who = need("delete", model)
        obj = get_object(admin, obj_id)
        problems = admin.delete_problems(who, obj)
        warnings = admin.delete_warnings(who, obj)
        own = model == "user" and obj.id == who.user.id
        error = ""
        if bottle.request.method == "POST" and not problems:
            if own and bottle.request.forms.get("confirm_self") != "on":
                error = "Tick the box to confirm that you delete your own account."
            else:
                name = admin.repr(obj)
                try:
                    delete(admin, who, obj)
                except InvalidValue as exc:
                    problems = [_sentence(str(exc))]
                else:
                    core.flash(f"The {admin.verbose} {name!r} was deleted.", "success")
                    if own:
                        core.logout()
                        bottle.redirect(core.url("/login"), 303)
                    go(f"/{model}/")
        return render("admin/confirm_delete.html", who=who, what=f"{admin.verbose} {admin.repr(obj)!r}",
                      warnings=warnings, problems=problems, own=own, error=error,
                      back=link(f"/{model}/{obj.id}/"), title=f"Delete {admin.verbose}")

    return app


# --- small helpers ---------------------------------------------------------------------------------


def _sentence(text: str) -> str:
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def _page_number() -> int:
    try:
        return max(1, min(10_000, int(bottle.request.query.get("page") or 1)))
    except ValueError:
        return 1


def _data_list(text: str | None) -> list[str]:
    if text is None or not text.strip():
        return list(SAMPLE_ALARM_DATA)
    return [part.strip() for part in text.split(",")]
