"""The admin panel's Bottle app: :func:`make_app`, and the routes of each area of the panel.

Routes (below the mount point):

* ``/`` -- the index: every model the user may see, and their own recent actions.
* ``/<model>/`` list (search, paging), ``/<model>/add``, ``/<model>/<id>/`` (change, or read-only
  without the change permission), ``/<model>/<id>/delete`` (a confirmation page, then POST) for
  users, groups, units, mailing lists, alarm messages and views; ``/user/<id>/password`` is the
  "change password form", ``/user/<id>/unlock`` (POST) forgets a user's failed logins;
  ``/alarmmessage/preview`` and ``/alarmmessage/<id>/test-email``.
* ``/sample/`` and ``/alarm/``: listed per unit with date filters and keyset paging; each record
  viewed at ``/<model>/<id>/`` and deleted singly, selected (``/<model>/delete-selected``), all
  (``/<model>/delete-all``) or old (``/<model>/delete-old``). No route changes a sample or alarm,
  but ``/alarm/send-again``: failed alarm emails are sent again. The index and the alarm list
  show the alarm emails not sent yet.
* ``/quarantinedrecord/``: the LoggerNet records the pull client could not store, newest first;
  each at ``/quarantinedrecord/<id>/`` with its raw text; deleted singly or selected.
* ``/logentry/``: the action log, filtered; ``/logentry/<id>/`` one entry. Never edited.

Only an active staff user enters (the web core checks it and sends an anonymous visitor to the
login page); every route then checks the model permission it needs on the server. The routes only
read requests and render pages; the work is done by the other modules of :mod:`txm.admin`, which
know nothing of HTTP. A :class:`Panel` holds what every route needs, and one function per area
adds that area's routes.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NoReturn
from urllib.parse import urlencode

import bottle

from txm.admin.actor import Actor, Forbidden
from txm.admin.alarm_emails import backlog_context, send_alarm_emails_again
from txm.admin.base import ModelAdmin
from txm.admin.forms import Form, FormInput, read_form, sentence
from txm.admin.meters import preview_alarm_message, sample_data, send_test_alarm_email
from txm.admin.people import password_fields, permission_grid
from txm.admin.records import (
    ALARMS,
    LOG,
    QUARANTINE,
    SAMPLES,
    Page,
    RecordAdmin,
    parse_when,
    selected_ids,
    with_article,
)
from txm.admin.registry import FORM_MODELS, registry, visible_sections
from txm.alarms.email import POLL_SECONDS
from txm.config import Settings
from txm.db import schema
from txm.errors import InvalidValue, NotFound, TxmError
from txm.webcore import WebCore, safe_next


def make_app(settings: Settings) -> bottle.Bottle:
    """The admin panel as a Bottle app; the web interface mounts it at ``/admin/``."""
    panel = Panel(settings)
    add_index(panel)
    for records in (SAMPLES, ALARMS, QUARANTINE, LOG):
        add_record_pages(panel, records)
    add_password_page(panel)
    add_unlock_action(panel)
    add_alarm_message_actions(panel)
    add_alarm_email_actions(panel)
    add_form_pages(panel)  # last: Bottle tries these /<model>/ rules after the more specific ones above
    return panel.app


def library_errors(route: Callable) -> Callable:
    """The library's refusals become the HTTP answers people expect (installed on every route)."""

    @functools.wraps(route)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return route(*args, **kwargs)
        except Forbidden as exc:
            bottle.abort(403, sentence(str(exc)))
        except NotFound as exc:
            bottle.abort(404, sentence(str(exc)))

    return wrapper


class Panel:
    """What every route of the panel needs: the app and its web core, links below wherever the
    panel is mounted, the acting user and their permissions, request values, and pages rendered
    with the panel's own template context."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.app = bottle.Bottle()
        self.core = WebCore(settings)
        self.core.install(self.app, default_access="staff")
        self.app.install(library_errors)
        self.registry = registry()

    def link(self, path: str = "/", **query: Any) -> str:
        """A URL of the panel: ``link('/unit/')`` -> ``/admin/unit/``; empty query values are left out."""
        prefix = self.app.config.get("_mount.prefix", "/").rstrip("/")
        query = {k: v for k, v in query.items() if v not in (None, "")}
        return self.core.url(prefix + path) + ("?" + urlencode(query) if query else "")

    def go(self, path: str, **query: Any) -> NoReturn:
        bottle.redirect(self.link(path, **query), 303)

    def actor(self) -> Actor:
        return Actor.of(self.core.user, self.settings)

    def need(self, action: str, model: str) -> Actor:
        """The actor, if they may do ``action`` on ``model``; else the 403 page."""
        who = self.actor()
        if not who.may(action, model):
            bottle.abort(403, f"You do not have permission to {action} {self.registry[model].plural}.")
        return who

    def render(self, template: str, **context: Any) -> str:
        """A page of the panel; its templates also see ``admin_url``, ``who``, ``registry`` and ``here``."""
        who = context.pop("who", None) or self.actor()
        query = bottle.request.query_string
        here = bottle.request.fullpath + ("?" + query if query else "")
        return self.core.render(template, admin_url=self.link, who=who, registry=self.registry, here=here,
                                permission_grid=permission_grid, **context)

    def flash_warnings(self, warnings: list[str]) -> None:
        """Warnings of something saved anyway (a weak password)."""
        for warning in warnings:
            self.core.flash(warning + " It was saved all the same.", "warning")

    # --- what the request holds -------------------------------------------------------------

    def form_input(self) -> FormInput:
        forms = bottle.request.forms.decode()
        return FormInput({key: forms.getall(key) for key in forms.keys()})

    def query_value(self, name: str) -> str:
        return (bottle.request.query.getunicode(name) or "").strip()

    def page_number(self) -> int:
        try:
            return max(1, min(10_000, int(bottle.request.query.get("page") or 1)))
        except ValueError:
            return 1

    def unit_from_query(self) -> schema.Unit | None:
        """The unit named by the ``unit`` query or form value; None when none is; else the 404 page."""
        code = self.query_value("unit") or (bottle.request.forms.getunicode("unit") or "").strip()
        if not code:
            return None
        try:
            return schema.Unit.by_code(code)
        except NotFound:
            bottle.abort(404, f"There is no unit with code {code!r}.")

    def date_filters(self) -> tuple[Any, Any, str]:
        """The From and To filters, and what is wrong with them ("" when nothing)."""
        try:
            return parse_when(self.query_value("from"), "From"), parse_when(self.query_value("to"), "To"), ""
        except InvalidValue as exc:
            return None, None, sentence(str(exc))


# --- the index -------------------------------------------------------------------------------------


def add_index(panel: Panel) -> None:
    @panel.app.get("/")
    def index():
        who = panel.actor()
        recent = schema.LogEntry.select().where(schema.LogEntry.user == who.user).order_by(schema.LogEntry.id.desc()).limit(10)
        backlog = backlog_context() if who.may("view", "alarm") else {}
        return panel.render("admin/index.html", who=who, sections=visible_sections(who), recent=list(recent),
                            title="Administration", **backlog)


# --- samples, alarms, the action log -----------------------------------------------------------------


def add_record_pages(panel: Panel, records: RecordAdmin) -> None:
    """The list and detail pages of one kind of record and, when it can be deleted, its deletions."""
    app, name = panel.app, records.name

    @app.get(f"/{name}/")
    def record_list():
        who = panel.need("view", name)
        unit = panel.unit_from_query() if records.of_a_unit else None
        if records.per_unit and unit is None:
            return _unit_picker(panel, who, records)
        narrowing = {key: unit if key == "unit" else panel.query_value(key) for key in records.narrowed_by}
        filters = {key: panel.query_value(key) for key in (*narrowing, "from", "to") if key != "unit"}
        start, end, problem = panel.date_filters()
        page = Page([])
        if not problem:
            try:
                page = records.page(start, end, panel.query_value("before"), panel.query_value("after"), **narrowing)
            except InvalidValue as exc:  # a page cursor no link of the panel gives
                problem = sentence(str(exc))
                bottle.response.status = 400
        units = None
        if records.rows_of_many_units:  # the list offers a choice of unit
            units = list(schema.Unit.select(schema.Unit.id, schema.Unit.code, schema.Unit.name).order_by(schema.Unit.code).limit(1000))
        emails = {**backlog_context(), "can_resend": who.may("change", "alarm")} if records is ALARMS else {}
        return panel.render(records.list_template, who=who, unit=unit, units=units, page=page,
                            problem=problem, filters=filters, can_delete=records.deletion_allowed(who),
                            models=[(key, admin.plural) for key, admin in panel.registry.items()],  # the log's "What"
                            title=records.plural.capitalize() + (f" of {unit.code}" if unit else ""), **emails)

    @app.get(f"/{name}/<obj_id>/")
    def record_detail(obj_id):
        who = panel.need("view", name)
        record = records.get(obj_id)
        # A sample or alarm is about its unit; a log entry about the object it names.
        about = ({"unit": record.unit} if records.of_a_unit else
                 {"object_url": _object_url(panel, record)} if records is LOG else {})
        return panel.render(f"admin/{name}.html", who=who, can_delete=records.deletion_allowed(who),
                            can_resend=who.may("change", "alarm"), title=records.describe(record),
                            **{records.detail_name: record}, **about)

    if not records.deletable:
        return

    @app.route(f"/{name}/<obj_id>/delete", method=["GET", "POST"])
    def record_delete(obj_id):
        who = panel.need("delete", name)
        records.require_deletion(who)
        record = records.get(obj_id)
        if bottle.request.method == "POST":
            records.delete_selected(who, [record.id])
            panel.core.flash(f"Deleted {records.describe(record)}.", "success")
            panel.go(f"/{name}/", **({"unit": record.unit.code} if records.of_a_unit else {}))
        return panel.render("admin/confirm_delete.html", who=who, what=records.describe(record), warnings=[],
                            problems=[], back=panel.link(f"/{name}/{record.id}/"),
                            title=f"Delete {with_article(records.verbose)}")

    @app.post(f"/{name}/delete-selected")
    def delete_selected():
        who = panel.need("delete", name)
        records.require_deletion(who)
        forms = bottle.request.forms
        back = safe_next(forms.getunicode("back") or "", panel.link(f"/{name}/"))
        try:
            numbers = selected_ids(forms.getall("ids"))
        except InvalidValue as exc:
            panel.core.flash(sentence(str(exc)), "error")
            bottle.redirect(back, 303)
        if forms.get("confirm") == "yes":
            count = records.delete_selected(who, numbers)
            panel.core.flash(f"Deleted {count} {records.plural if count != 1 else records.verbose}.", "success")
            bottle.redirect(back, 303)
        chosen = records.selected(numbers)
        return panel.render("admin/confirm_selected.html", who=who, model=name,
                            names=[records.describe(record) for record in chosen], ids=[record.id for record in chosen],
                            back=back, title=f"Delete {len(chosen)} selected {records.plural}")

    if not records.bulk_deletable:
        return

    @app.route(f"/{name}/delete-all", method=["GET", "POST"])
    def delete_all():
        return _bulk_deletion(panel, records, old=False)

    @app.route(f"/{name}/delete-old", method=["GET", "POST"])
    def delete_old():
        return _bulk_deletion(panel, records, old=True)


def _unit_picker(panel: Panel, who: Actor, records: RecordAdmin) -> str:
    """Records listed per unit start with a choice of unit."""
    search = panel.query_value("q")
    page = panel.page_number()
    rows, more = panel.registry["unit"].page(search, page)
    return panel.render("admin/unit_picker.html", who=who, model=records.name, units=rows, more=more, page=page,
                        search=search, can_delete=records.deletion_allowed(who),
                        title=f"{records.plural.capitalize()}: choose a unit")


def _bulk_deletion(panel: Panel, records: RecordAdmin, old: bool) -> str:
    """ "Delete ALL ..." or "Delete old ...": a confirmation page (with the date for old ones), then POST."""
    who = panel.need("delete", records.name)
    records.require_deletion(who)
    unit = panel.unit_from_query()
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
                error = sentence(str(exc))
        if not error:
            result = records.delete_bulk(who, unit, before)
            panel.core.flash(result.message, "success")
            panel.go(f"/{records.name}/", unit=unit.code if unit else "")
    title = (f"Delete old {records.plural}" if old else f"Delete ALL {records.plural}") + (
        f" of {unit.code}" if unit else " of every unit")
    return panel.render("admin/bulk.html", who=who, model=records.name, unit=unit, old=old, before=before_text,
                        error=error, title=title, back=panel.link(f"/{records.name}/", unit=unit.code if unit else ""))


def _object_url(panel: Panel, entry: schema.LogEntry) -> str:
    """A link to the object a log entry is about, while it still exists."""
    if entry.action == "delete" or not entry.object_id.isdigit():
        return ""
    admin = panel.registry.get(entry.model)
    if admin is None or entry.model not in FORM_MODELS:
        return ""
    if not admin.model.select().where(admin.model._meta.primary_key == int(entry.object_id)).exists():
        return ""
    return panel.link(f"/{entry.model}/{entry.object_id}/")


# --- users: the change password form -----------------------------------------------------------------


def add_password_page(panel: Panel) -> None:
    @panel.app.route("/user/<obj_id>/password", method=["GET", "POST"])
    def user_password(obj_id):
        who = panel.need("change", "user")
        users = panel.registry["user"]
        user = users.get(obj_id)
        users.require_password_change(who, user)
        form = Form(password_fields())
        if bottle.request.method == "POST":
            form = users.set_password(who, user, panel.form_input())
            if form.saved is not None:
                panel.flash_warnings(form.warnings)
                # The user is logged out everywhere; an actor changing their own password stays in here.
                panel.core.end_other_sessions(user)
                panel.core.flash(f"The password of {user.username} was changed.", "success")
                panel.go(f"/user/{user.id}/")
        return panel.render("admin/password.html", who=who, form=form, obj=user,
                            title=f"Change password: {user.username}")


def add_unlock_action(panel: Panel) -> None:
    @panel.app.post("/user/<obj_id>/unlock")
    def user_unlock(obj_id):
        """Forget the user's failed logins, so that a user locked out logs in again at once."""
        who = panel.need("change", "user")
        users = panel.registry["user"]
        user = users.get(obj_id)
        count = users.unlock(who, user)
        panel.core.flash(f"Cleared {count} failed login(s) of {user.username}: they may log in again at once.",
                         "success")
        panel.go(f"/user/{user.id}/")


# --- alarm messages: preview and test email ----------------------------------------------------------


def add_alarm_message_actions(panel: Panel) -> None:
    messages = panel.registry["alarmmessage"]

    @panel.app.post("/alarmmessage/preview")
    def alarm_message_preview():
        """Render the subject and message as typed (saved or not) with sample data; nothing is saved.

        Only for who may write alarm messages (add a new one, change a saved one): rendering runs
        a template, and what a template costs is for its authors to spend."""
        raw = panel.form_input()
        obj = messages.get(raw.get("_id")) if raw.get("_id") else None
        who = panel.need("add" if obj is None else "change", "alarmmessage")
        form, data = read_form(messages.fields(who, obj, raw), raw, messages.initial(obj))
        sample = sample_data(raw.get("sample_data"))
        preview, problem = None, ""
        unit = schema.Unit.get_or_none(schema.Unit.id == int(data["unit"])) if data.get("unit") else None
        if unit is None or data.get("level") is None:
            problem = "Choose the unit and the alarm level first."
        else:
            try:
                subject, body = preview_alarm_message(unit, data["level"], data.get("subject") or "",
                                                      data.get("body") or "", sample)
                preview = {"subject": subject, "body": body}
            except TxmError as exc:
                problem = sentence(str(exc))
        return _form_page(panel, messages, who, obj, form, preview=preview, preview_problem=problem,
                          sample_data=", ".join(sample))

    @panel.app.post("/alarmmessage/<obj_id>/test-email")
    def alarm_message_test(obj_id):
        who = panel.need("change", "alarmmessage")
        message = messages.get(obj_id)
        forms = bottle.request.forms
        data = sample_data(forms.getunicode("data"))
        recipients = (forms.getunicode("recipients") or "").replace(";", ",").split(",")
        try:
            sent_to = send_test_alarm_email(who, message, recipients, data)
        except TxmError as exc:
            panel.core.flash(f"The test email was not sent: {sentence(str(exc))}", "error")
        else:
            panel.core.flash(f"A test email was sent to {', '.join(sent_to)}.", "success")
        panel.go(f"/alarmmessage/{message.id}/")


# --- alarm emails: sending failed ones again -----------------------------------------------------------


def add_alarm_email_actions(panel: Panel) -> None:
    @panel.app.post("/alarm/send-again")
    def alarm_send_again():
        """Send the failed emails of the selected alarms (or of one alarm) again."""
        who = panel.need("change", "alarm")
        forms = bottle.request.forms
        back = safe_next(forms.getunicode("back") or "", panel.link("/alarm/"))
        try:
            count = send_alarm_emails_again(who, forms.getall("ids"))
        except InvalidValue as exc:
            panel.core.flash(sentence(str(exc)), "error")
        else:
            if count:
                panel.core.flash(f"The email{'s' if count != 1 else ''} of {count} alarm{'s' if count != 1 else ''} "
                                 f"will be sent again within {POLL_SECONDS:g} seconds.", "success")
            else:
                panel.core.flash("None of the selected alarms has a failed email: nothing to send again.", "warning")
        bottle.redirect(back, 303)


# --- the pages of the models edited through forms ------------------------------------------------------


def add_form_pages(panel: Panel) -> None:
    app = panel.app

    def admin_for(model: str, action: str) -> tuple[ModelAdmin, Actor]:
        """The model's admin (else the 404 page), and the actor if they may do ``action`` (else 403)."""
        admin = panel.registry.get(model)
        if admin is None or model not in FORM_MODELS:
            bottle.abort(404, "There is no such page in the administration panel.")
        return admin, panel.need(action, model)

    @app.get("/<model>/")
    def object_list(model):
        admin, who = admin_for(model, "view")
        search = panel.query_value("q")
        page = panel.page_number()
        rows, more = admin.page(search, page)
        return panel.render("admin/list.html", who=who, admin=admin, rows=rows, more=more, page=page,
                            search=search, title=admin.plural.capitalize())

    @app.route("/<model>/add", method=["GET", "POST"])
    def object_add(model):
        admin, who = admin_for(model, "add")
        if bottle.request.method == "POST":
            form = admin.submit(who, panel.form_input())
            if form.saved is not None:
                _after_save(panel, admin, form, added=True)
        else:
            form = admin.new_form(who)
            for f in form.fields:  # links may fill in fields: /mailinglist/add?unit=3
                if f.kind not in ("multi", "password") and panel.query_value(f.name):
                    form.values[f.name] = panel.query_value(f.name)
        return _form_page(panel, admin, who, None, form)

    @app.route("/<model>/<obj_id>/", method=["GET", "POST"])
    def object_change(model, obj_id):
        admin, who = admin_for(model, "view")
        obj = admin.get(obj_id)
        form = None
        if bottle.request.method == "POST":
            who = panel.need("change", model)
            form = admin.submit(who, panel.form_input(), obj)
            if form.saved is not None:
                _after_save(panel, admin, form, added=False)
        return _form_page(panel, admin, who, obj, form)

    @app.route("/<model>/<obj_id>/delete", method=["GET", "POST"])
    def object_delete(model, obj_id):
        admin, who = admin_for(model, "delete")
        obj = admin.get(obj_id)
        admin.require_allowed(who, obj)
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
                    admin.delete(who, obj)
                except InvalidValue as exc:
                    problems = [sentence(str(exc))]
                else:
                    panel.core.flash(f"The {admin.verbose} {name!r} was deleted.", "success")
                    if own:
                        panel.core.logout()
                        bottle.redirect(panel.core.url("/login"), 303)
                    panel.go(f"/{model}/")
        return panel.render("admin/confirm_delete.html", who=who, what=f"{admin.verbose} {admin.repr(obj)!r}",
                            warnings=warnings, problems=problems, own=own, error=error,
                            back=panel.link(f"/{model}/{obj.id}/"), title=f"Delete {admin.verbose}")


def _form_page(panel: Panel, admin: ModelAdmin, who: Actor, obj: Any, form: Form | None, **extra: Any) -> str:
    """The add page (``obj`` None) or an object's change page, read-only without the change permission."""
    if obj is None:
        return panel.render("admin/form.html", who=who, admin=admin, form=form, obj=None, readonly=False,
                            title=f"Add {admin.verbose}", **extra)
    refusal = admin.refusal(who, obj) if who.may("change", admin.name) else ""
    readonly = not who.may("change", admin.name) or bool(refusal)
    if form is None:
        form = admin.new_form(who, obj)
    if readonly:
        for f in form.fields:
            f.readonly = True
    return panel.render("admin/form.html", who=who, admin=admin, form=form, obj=obj, readonly=readonly,
                        refusal=sentence(refusal),
                        title=f"{'View' if readonly else 'Change'} {admin.verbose}: {admin.repr(obj)}",
                        **{**admin.page_context(obj), **extra})


def _after_save(panel: Panel, admin: ModelAdmin, form: Form, added: bool) -> NoReturn:
    """Say what was saved, then go where the button pressed asked: the list, the object, a new form."""
    panel.flash_warnings(form.warnings)
    verb = "added" if added else "changed"
    panel.core.flash(f"The {admin.verbose} {admin.repr(form.saved)!r} was {verb}.", "success")
    forms = bottle.request.forms
    if forms.get("_continue"):
        panel.go(f"/{admin.name}/{form.saved.id}/")
    if forms.get("_addanother"):
        panel.go(f"/{admin.name}/add")
    panel.go(f"/{admin.name}/")

