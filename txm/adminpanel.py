"""The admin panel's library: managed models, their forms, permissions, the action log, bulk deletion.

:mod:`txm.admin` puts this behind HTTP routes; everything here works without HTTP.

* An :class:`Actor` is the staff user acting, with their permissions and the settings.
* :data:`REGISTRY` (built by :func:`registry`) holds one :class:`ModelAdmin` per managed model:
  users, groups, units, mailing lists, alarm messages and multiple-meter views are edited through
  forms; samples, alarms and the action log are only viewed (samples and alarms can be deleted,
  never changed).
* A form is a list of :class:`Field` specs; :func:`submit` validates what was typed on the server,
  keeps it for redisplay with an error next to each wrong field, saves, and writes one
  :class:`txm.db.LogEntry` saying what changed.
* Bulk deletion (:func:`delete_samples_bulk`, :func:`delete_alarms_bulk`) works in batches of
  :data:`txm.db.BATCH_SIZE` rows, one short transaction each, so the TTP server is never locked out
  for long, and logs a single entry.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import peewee as pw

from txm import alarms, manage
from txm import db as m
from txm.config import Settings
from txm.errors import InvalidValue, NotFound, TxmError
from txm.passwords import make_password, weakness
from txm.permissions import ACTIONS, ALL_PERMISSIONS, PERMISSION_MODELS, permissions_of
from txm.ttp.parser import format_timestamp

#: Most axes a unit's graph may have.
MAX_AXES = 4
#: Rows on one page of a list.
PAGE_SIZE = 50
#: Most samples or alarms one "Delete selected" may name (each one gets its own log entry).
MAX_SELECTED = 500
#: Longest change message kept in the log.
MAX_MESSAGE = 4000


class Forbidden(TxmError):
    """The acting user may not do this (HTTP 403)."""


# --- who acts ------------------------------------------------------------------------------


@dataclass
class Actor:
    """The staff user acting in the panel, with their permissions, and the server's settings."""

    user: m.User
    settings: Settings
    perms: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, user: m.User, settings: Settings) -> "Actor":
        return cls(user, settings, permissions_of(user))

    @property
    def is_superuser(self) -> bool:
        return bool(self.user.is_superuser and self.user.is_active)

    def may(self, action: str, model: str) -> bool:
        """May the actor do ``action`` (view/add/change/delete) on ``model``?

        Who may change a model may also view it.
        """
        if action == "view":
            return f"view_{model}" in self.perms or f"change_{model}" in self.perms
        return f"{action}_{model}" in self.perms

    def require(self, action: str, model: str) -> None:
        if not self.may(action, model):
            raise Forbidden(f"you may not {action} {model} records")


# --- transactions ---------------------------------------------------------------------------


# --- the action log ------------------------------------------------------------------------


def log_action(actor: Actor, action: str, model: str, obj_id: Any, obj_repr: str, message: str = "") -> m.LogEntry:
    """Record one add / change / delete in the action log."""
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE - 1] + "…"
    return m.LogEntry.create(user=actor.user.id, username=actor.user.username, action=action, model=model,
                             object_id=str(obj_id if obj_id is not None else "")[:64],
                             object_repr=str(obj_repr)[:200], change_message=message)


def describe_changes(before: Mapping[str, str], after: Mapping[str, str], labels: Mapping[str, str],
                     secret: Iterable[str] = ()) -> str:
    """``Changed name from 'A' to 'B'; changed key.`` -- secret values are never written out."""
    secret = set(secret)
    parts = []
    for name, new in after.items():
        old = before.get(name, "")
        if old == new:
            continue
        label = labels.get(name, name)
        if name in secret:
            parts.append(f"changed {label}")
        else:
            parts.append(f"changed {label} from {_quote(old)} to {_quote(new)}")
    if not parts:
        return "No fields changed."
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "."


def _quote(value: str) -> str:
    return "(empty)" if value == "" else repr(value)


# --- forms ---------------------------------------------------------------------------------

#: Field kinds: how a field is shown and how what was typed is read.
KINDS = ("text", "password", "int", "bool", "textarea", "select", "multi")


@dataclass
class Field:
    """One form field: how it is shown, and the generic checks on what was typed."""

    name: str
    label: str
    kind: str = "text"
    help: str = ""
    required: bool = False
    minimum: Optional[int] = None
    maximum: Optional[int] = None
    max_length: Optional[int] = None
    choices: Sequence[tuple[str, str]] = ()  # (value, label) for select and multi
    secret: bool = False  # not written to the log (keys, passwords)
    readonly: bool = False  # shown, not changeable by this user
    group: str = ""  # a heading the field is shown under

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown field kind {self.kind!r}")


class FormInput:
    """What the browser sent: every name with all its values (checkboxes, multi-selects)."""

    def __init__(self, data: Mapping[str, Sequence[str] | str] | None = None):
        self._data: dict[str, list[str]] = {}
        for key, value in (data or {}).items():
            self._data[key] = [value] if isinstance(value, str) else [str(v) for v in value]

    def get(self, name: str, default: str = "") -> str:
        values = self._data.get(name)
        return values[-1] if values else default

    def getall(self, name: str) -> list[str]:
        return list(self._data.get(name, []))

    def __contains__(self, name: str) -> bool:
        return name in self._data


@dataclass
class Form:
    """A form being shown: its fields, the values to show, errors by field, warnings."""

    fields: list[Field]
    values: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    saved: Any = None  # the object, once saved
    message: str = ""  # the log message of the save

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def add_error(self, name: str, text: str) -> None:
        if name not in self.errors:
            self.errors[name] = text

    @property
    def groups(self) -> list[tuple[str, list[Field]]]:
        """Fields in runs sharing a heading, in order."""
        out: list[tuple[str, list[Field]]] = []
        for f in self.fields:
            if not out or out[-1][0] != f.group:
                out.append((f.group, []))
            out[-1][1].append(f)
        return out


def read_input(fields: Sequence[Field], raw: FormInput, current: Mapping[str, Any]) -> tuple[dict, dict, dict]:
    """Typed values, what to redisplay, and errors, field by field.

    A read-only field keeps its current value whatever was sent.
    """
    cleaned: dict[str, Any] = {}
    shown: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for f in fields:
        if f.readonly:
            shown[f.name] = current.get(f.name, "")
            cleaned[f.name] = _typed(f, shown[f.name])
            continue
        if f.kind == "bool":
            value = raw.get(f.name) not in ("", "0", "off", "no")
            shown[f.name] = cleaned[f.name] = value
            continue
        if f.kind == "multi":
            values = [v for v in raw.getall(f.name) if v != ""]
            shown[f.name] = values
            allowed = {c[0] for c in f.choices}
            bad = [v for v in values if v not in allowed]
            if bad:
                errors[f.name] = f"not a choice: {', '.join(bad[:3])}"
            cleaned[f.name] = list(dict.fromkeys(values))
            continue
        text = raw.get(f.name)
        if f.kind not in ("password", "textarea"):
            text = text.strip()
        shown[f.name] = "" if f.kind == "password" else text
        if text == "":
            if f.required:
                errors[f.name] = "This field is required."
            cleaned[f.name] = None if f.kind in ("int", "select") else ""
            continue
        if f.max_length is not None and len(text) > f.max_length:
            errors[f.name] = f"At most {f.max_length} characters (this has {len(text)})."
            continue
        if f.kind == "int":
            try:
                number = int(text)
            except ValueError:
                errors[f.name] = "Enter a whole number."
                continue
            if f.minimum is not None and number < f.minimum or f.maximum is not None and number > f.maximum:
                errors[f.name] = _range_text(f)
                continue
            cleaned[f.name] = number
        elif f.kind == "select":
            if text not in {c[0] for c in f.choices}:
                errors[f.name] = "Choose one of the offered values."
                continue
            cleaned[f.name] = text
        else:
            cleaned[f.name] = text
    return cleaned, shown, errors


def _range_text(f: Field) -> str:
    if f.minimum is not None and f.maximum is not None:
        return f"Enter a number from {f.minimum} to {f.maximum}."
    if f.minimum is not None:
        return f"Enter a number of at least {f.minimum}."
    return f"Enter a number of at most {f.maximum}."


def _typed(f: Field, value: Any) -> Any:
    if f.kind == "int":
        try:
            return int(value)
        except (TypeError, ValueError):
            return None
    return value


# --- model admins --------------------------------------------------------------------------


@dataclass
class Column:
    title: str
    value: Callable[[Any], Any]


class ModelAdmin:
    """How the panel manages one model. Subclasses fill in the form and its checks."""

    name = ""  # the model's name in permission codenames and URLs
    verbose = ""
    plural = ""
    model: type[m.BaseModel]
    description = ""
    editable = True  # has add and change forms
    deletable = True
    columns: list[Column] = []
    search_fields: tuple[str, ...] = ()
    ordering: tuple = ()

    # --- reading ----------------------------------------------------------------------------

    def get(self, obj_id: Any) -> Any:
        try:
            number = int(obj_id)
        except (TypeError, ValueError):
            raise NotFound(f"there is no {self.verbose} {obj_id!r}") from None
        obj = self.model.get_or_none(self.model._meta.primary_key == number)
        if obj is None:
            raise NotFound(f"there is no {self.verbose} with id {number}")
        return obj

    def query(self, search: str = "") -> pw.ModelSelect:
        q = self.model.select()
        if search and self.search_fields:
            cond = None
            for name in self.search_fields:
                c = getattr(self.model, name).contains(search)
                cond = c if cond is None else cond | c
            q = q.where(cond)
        return q.order_by(*self.ordering) if self.ordering else q

    def page(self, search: str = "", page: int = 1) -> tuple[list, bool]:
        """One page of a small table (users, units, views ...): rows and whether more follow."""
        page = max(1, page)
        rows = list(self.query(search).limit(PAGE_SIZE + 1).offset((page - 1) * PAGE_SIZE))
        return rows[:PAGE_SIZE], len(rows) > PAGE_SIZE

    # --- forms ------------------------------------------------------------------------------

    def fields(self, actor: Actor, obj: Any, raw: FormInput | None = None) -> list[Field]:
        raise NotImplementedError

    def initial(self, obj: Any) -> dict[str, Any]:
        """Form values of an existing object (or of a new one when ``obj`` is None)."""
        raise NotImplementedError

    def clean(self, actor: Actor, form: Form, data: dict[str, Any], obj: Any, raw: FormInput) -> None:
        """Model checks on typed values; add errors to the form. ``data`` may be adjusted."""

    def save(self, actor: Actor, obj: Any, data: dict[str, Any]) -> Any:
        raise NotImplementedError

    def snapshot(self, obj: Any) -> dict[str, str]:
        """Field values as text, to tell in the log what changed."""
        values = self.initial(obj)
        return {k: _text(v) for k, v in values.items()}

    def labels(self, actor: Actor, obj: Any) -> dict[str, str]:
        return {f.name: f.label for f in self.fields(actor, obj)}

    def secret_fields(self) -> tuple[str, ...]:
        return ()

    def repr(self, obj: Any) -> str:
        return str(obj)

    # --- deleting ---------------------------------------------------------------------------

    def delete_problems(self, actor: Actor, obj: Any) -> list[str]:
        """Reasons the object cannot be deleted (shown on the confirmation page)."""
        return []

    def delete_warnings(self, actor: Actor, obj: Any) -> list[str]:
        """What deleting it also removes, or other things the person should know first."""
        return []

    def prepare_delete(self, actor: Actor, obj: Any) -> str:
        """Work done before the deletion's transaction (batches of data); returns a log message or ""."""
        return ""

    def delete(self, actor: Actor, obj: Any) -> None:
        """Delete the object (inside a transaction with its log entry)."""
        obj.delete_instance(recursive=True)

    def permission_name(self) -> str:
        return self.name


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return "" if value is None else str(value)


def new_form(admin: ModelAdmin, actor: Actor, obj: Any = None) -> Form:
    """An empty add form, or a change form filled from the object."""
    fields = admin.fields(actor, obj)
    values = admin.initial(obj)
    return Form(fields, {f.name: values.get(f.name, "" if f.kind != "multi" else []) for f in fields})


def submit(admin: ModelAdmin, actor: Actor, raw: FormInput, obj: Any = None) -> Form:
    """Validate what was typed and, when it is all right, save it and log what changed.

    Returns the form: with ``errors`` (nothing saved; ``values`` hold what was typed) or with
    ``saved`` set to the object. Permission to add or change is checked here too.
    """
    if not admin.editable:
        raise Forbidden(f"{admin.plural} cannot be added or changed")
    actor.require("add" if obj is None else "change", admin.permission_name())
    fields = admin.fields(actor, obj, raw)
    current = admin.initial(obj)
    data, shown, errors = read_input(fields, raw, current)
    form = Form(fields, shown, dict(errors))
    admin.clean(actor, form, data, obj, raw)
    if form.errors:
        return form
    before = admin.snapshot(obj) if obj is not None else {}
    try:
        with m.write_transaction():
            saved = admin.save(actor, obj, data)
            if obj is None:
                message = "Added."
                action = "add"
            else:
                message = describe_changes(before, admin.snapshot(saved), admin.labels(actor, saved),
                                           admin.secret_fields())
                action = "change"
            log_action(actor, action, admin.name, saved.id, admin.repr(saved), message)
    except pw.IntegrityError:
        # Two people saved the same code/name at once: the database's unique index decided.
        form.errors["__all__"] = ("Not saved: another record already uses one of these unique values "
                                  "(perhaps saved a moment ago). Check and try again.")
        return form
    form.saved = saved
    form.message = message
    return form


def delete(admin: ModelAdmin, actor: Actor, obj: Any) -> str:
    """Delete one object after the confirmation page; log it. Returns the log message."""
    if not admin.deletable:
        raise Forbidden(f"{admin.plural} cannot be deleted")
    actor.require("delete", admin.permission_name())
    problems = admin.delete_problems(actor, obj)
    if problems:
        raise InvalidValue(" ".join(problems))
    obj_id, obj_repr = obj.id, admin.repr(obj)
    message = admin.prepare_delete(actor, obj)
    own = isinstance(obj, m.User) and obj.id == actor.user.id
    with m.write_transaction():
        problems = admin.delete_problems(actor, obj)  # again, now inside the transaction
        if problems:
            raise InvalidValue(" ".join(problems))
        admin.delete(actor, obj)
        if own:  # the log keeps the name; the row it would point to is gone
            actor = Actor(m.User(id=None, username=actor.user.username), actor.settings, actor.perms)
        log_action(actor, "delete", admin.name, obj_id, obj_repr, message or "Deleted.")
    return message or "Deleted."


# --- choices -------------------------------------------------------------------------------


def permission_label(codename: str) -> str:
    action, _, model = codename.partition("_")
    verbose = {"mailinglist": "mailing list", "alarmmessage": "alarm message", "view": "multiple-meter view",
               "logentry": "log entry"}.get(model, model)
    return f"Can {action} {verbose}"


def unit_choices() -> list[tuple[str, str]]:
    return [(str(u.id), str(u)) for u in m.Unit.select().order_by(m.Unit.code)]


def group_choices() -> list[tuple[str, str]]:
    return [(str(g.id), g.name) for g in m.Group.select().order_by(m.Group.name)]


def user_choices(with_email: bool = False) -> list[tuple[str, str]]:
    out = []
    for u in m.User.select().order_by(m.User.username):
        label = u.username
        if with_email:
            label += f" <{u.email}>" if u.email else " (no email address: gets no email)"
        out.append((str(u.id), label))
    return out


def permission_grid(choices: Sequence[tuple[str, str]]) -> list[tuple[str, list[Optional[str]]]]:
    """Permission choices as rows of a table: (kind of record, [codename or None per action])."""
    offered = {c[0] for c in choices}
    rows = []
    for model in PERMISSION_MODELS:
        cells = [f"{action}_{model}" if f"{action}_{model}" in offered else None for action in ACTIONS]
        if any(cells):
            rows.append((permission_label(f"view_{model}")[len("Can view "):], cells))
    return rows


#: Permissions that mean nothing in the panel: samples and alarms are never added or changed there,
#: and the log is only read. They are not offered (a user who holds one keeps it).
IDLE_PERMISSIONS = frozenset({"add_sample", "change_sample", "add_alarm", "change_alarm", "add_logentry",
                              "change_logentry", "delete_logentry"})


def grantable_permissions(actor: Actor) -> list[tuple[str, str]]:
    """Permissions the actor may hand out: a superuser all, anyone else only their own."""
    return [(p, permission_label(p)) for p in ALL_PERMISSIONS
            if p not in IDLE_PERMISSIONS and (actor.is_superuser or p in actor.perms)]


def _ids(values: Iterable[str]) -> list[int]:
    return [int(v) for v in values]


def _set_links(link_model, owner_field: str, owner, other_field: str, wanted: Iterable[Any]) -> None:
    """Make the owner's link rows (user-group, group-unit, user-permission ...) exactly ``wanted``."""
    wanted = list(dict.fromkeys(wanted))
    owner_col = getattr(link_model, owner_field)
    other_col = getattr(link_model, other_field)
    stale = link_model.delete().where(owner_col == owner)
    if wanted:
        stale = stale.where(other_col.not_in(wanted))
    stale.execute()
    have = set(link_model.select(other_col).where(owner_col == owner).tuples())
    rows = [{owner_field: owner, other_field: w} for w in wanted if (w,) not in have]
    if rows:
        link_model.insert_many(rows).execute()


# --- users and groups ------------------------------------------------------------------------


def active_superuser_count() -> int:
    return manage.active_superusers().count()


class UserAdmin(ModelAdmin):
    name = "user"
    verbose = "user"
    plural = "users"
    model = m.User
    description = "People who log in: staff and superuser status, groups, permissions, units they see."
    columns = [Column("User name", lambda u: u.username), Column("Email", lambda u: u.email),
               Column("Active", lambda u: u.is_active), Column("Staff", lambda u: u.is_staff),
               Column("Superuser", lambda u: u.is_superuser), Column("Last login", lambda u: format_timestamp(u.last_login)[:16] if u.last_login else "never")]
    search_fields = ("username", "email", "first_name", "last_name")
    ordering = (m.User.username,)

    def fields(self, actor, obj, raw=None):
        limited = not actor.is_superuser
        fields = [
            Field("username", "User name", required=True, max_length=150, group="Account"),
        ]
        if obj is None:
            fields += [
                Field("password1", "Password", "password", required=True, group="Account",
                      help="At least one character; a longer mix of letters, digits and signs is safer."),
                Field("password2", "Password again", "password", required=True, group="Account"),
            ]
        fields += [
            Field("email", "Email address", max_length=254, group="Personal",
                  help="Alarm emails of the unit mailing lists this user is on go here."),
            Field("first_name", "First name", max_length=150, group="Personal"),
            Field("last_name", "Last name", max_length=150, group="Personal"),
            Field("is_active", "Active", "bool", group="Status",
                  help="Unticked: the user cannot log in (use this instead of deleting)."),
            Field("is_staff", "Staff status (is_staff)", "bool", group="Status",
                  help="May enter this administration panel."),
            Field("is_superuser", "Superuser status (is_superuser)", "bool", group="Status", readonly=limited,
                  help="Has every permission without assigning them."
                       + (" Only a superuser may change this." if limited else "")),
        ]
        if obj is not None and obj.id == actor.user.id:
            fields.append(Field("confirm_self", "Yes, change my own account even if I lose access", "bool",
                                group="Status",
                                help="Needed when you take away your own superuser, staff or active status."))
        fields += [
            Field("groups", "Groups", "multi", choices=group_choices(), group="Permissions", readonly=limited,
                  help="The user has the permissions and units of these groups too."),
            Field("permissions", "User permissions", "multi", choices=grantable_permissions(actor),
                  group="Permissions", help="What this user may do in the administration panel (needs staff status)."),
            Field("units", "Units", "multi", choices=unit_choices(), group="Permissions",
                  help="Units this user sees on the home page (a superuser and users who may view units "
                       "see all of them)."),
        ]
        return fields

    def initial(self, obj):
        if obj is None:
            return {"is_active": True, "is_staff": False, "is_superuser": False, "groups": [], "permissions": [],
                    "units": []}
        return {
            "username": obj.username, "email": obj.email, "first_name": obj.first_name,
            "last_name": obj.last_name, "is_active": obj.is_active, "is_staff": obj.is_staff,
            "is_superuser": obj.is_superuser,
            "groups": [str(row.group_id) for row in m.UserGroup.select().where(m.UserGroup.user == obj)
                       .order_by(m.UserGroup.group)],
            "permissions": sorted(row.codename for row in
                                  m.UserPermission.select().where(m.UserPermission.user == obj)),
            "units": [str(row.unit_id) for row in m.UserUnit.select().where(m.UserUnit.user == obj)
                      .order_by(m.UserUnit.unit)],
        }

    def snapshot(self, obj):
        values = self.initial(obj)
        groups = {str(g.id): g.name for g in m.Group.select()}
        units = {str(u.id): u.code for u in m.Unit.select()}
        values["groups"] = sorted(groups.get(g, g) for g in values["groups"])
        values["units"] = sorted(units.get(u, u) for u in values["units"])
        return {k: _text(v) for k, v in values.items()}

    def clean(self, actor, form, data, obj, raw):
        username = data.get("username") or ""
        if username and (m.User.select().where((m.User.username == username) & (m.User.id != (obj.id if obj else 0)))
                         .exists()):
            form.add_error("username", f"A user named {username!r} already exists.")
        email = data.get("email") or ""
        if email and not re.fullmatch(r"[^@\s]+@[^@\s]+", email):
            form.add_error("email", "Enter an email address such as name@example.com.")
        if obj is None:
            if data.get("password1") and data.get("password1") != data.get("password2"):
                form.add_error("password2", "The two passwords differ.")
            elif data.get("password1"):
                warning = weakness(data["password1"])
                if warning:
                    form.warnings.append(f"The password is weak: {warning}.")
        if data.get("is_superuser"):
            data["is_staff"] = True
        if obj is not None:
            # Permissions the actor may not grant stay as they were (they are not shown to them).
            grantable = {c[0] for c in grantable_permissions(actor)}
            kept = [p for p in form.values.get("permissions", []) if p in grantable]
            hidden = [p for p in self.initial(obj)["permissions"] if p not in grantable]
            data["permissions"] = kept + hidden
            last = obj.is_superuser and obj.is_active and active_superuser_count() <= 1
            if last and not data.get("is_superuser"):
                form.add_error("is_superuser", "This is the last active superuser: make another superuser first.")
            if last and not data.get("is_active"):
                form.add_error("is_active", "This is the last active superuser: it must stay active.")
            if last and not data.get("is_staff"):
                form.add_error("is_staff", "This is the last active superuser: it keeps staff status.")
            if obj.id == actor.user.id:
                losing = [label for key, label in (("is_superuser", "superuser"), ("is_staff", "staff"),
                                                   ("is_active", "active"))
                          if getattr(obj, key) and not data.get(key)]
                if losing and not data.get("confirm_self"):
                    form.add_error("confirm_self", f"You are taking away your own {' and '.join(losing)} status: "
                                                   f"you may lose access to this panel. Tick this box to confirm.")
            if not actor.is_superuser and obj.is_superuser:
                form.add_error("__all__", "Only a superuser may change a superuser's account.")

    def save(self, actor, obj, data):
        values = {k: data[k] for k in ("username", "email", "first_name", "last_name", "is_active", "is_staff",
                                       "is_superuser")}
        if obj is None:
            obj = m.User.create(password=make_password(data["password1"]), **values)
        else:
            for k, v in values.items():
                setattr(obj, k, v)
            obj.save()
        _set_links(m.UserGroup, "user", obj, "group", _ids(data["groups"]))
        _set_links(m.UserPermission, "user", obj, "codename", data["permissions"])
        _set_links(m.UserUnit, "user", obj, "unit", _ids(data["units"]))
        return obj

    def delete_problems(self, actor, obj):
        if obj.is_superuser and obj.is_active and active_superuser_count() <= 1:
            return ["This is the last active superuser and cannot be deleted: make another superuser first."]
        if obj.is_superuser and not actor.is_superuser:
            return ["Only a superuser may delete a superuser."]
        return []

    def delete_warnings(self, actor, obj):
        warnings = []
        if obj.id == actor.user.id:
            warnings.append("This is YOUR OWN account: you will be logged out and cannot log in again.")
        warnings.append("Unticking 'Active' on the user's page keeps their history; deleting removes them "
                        "from every group and mailing list.")
        return warnings


def password_fields() -> list[Field]:
    return [Field("password1", "New password", "password", required=True,
                  help="At least one character; a longer mix of letters, digits and signs is safer."),
            Field("password2", "New password again", "password", required=True)]


def set_password(actor: Actor, user: m.User, raw: FormInput) -> Form:
    """The "change password form": set another user's (or one's own) password; logged, never shown."""
    actor.require("change", "user")
    fields = password_fields()
    data, shown, errors = read_input(fields, raw, {})
    form = Form(fields, shown, dict(errors))
    if user.is_superuser and not actor.is_superuser:
        form.add_error("__all__", "Only a superuser may change a superuser's password.")
    if not form.errors and data["password1"] != data["password2"]:
        form.add_error("password2", "The two passwords differ.")
    if form.errors:
        return form
    warning = weakness(data["password1"])
    if warning:
        form.warnings.append(f"The password is weak: {warning}.")
    with m.write_transaction():
        user.password = make_password(data["password1"])
        user.save()
        # Sessions of the user end, except the one of an actor changing their own password.
        log_action(actor, "change", "user", user.id, user.username, "Changed password.")
    form.saved = user
    form.message = "Changed password."
    return form


class GroupAdmin(ModelAdmin):
    name = "group"
    verbose = "group"
    plural = "groups"
    model = m.Group
    description = "Groups of users sharing permissions and units."
    columns = [Column("Name", lambda g: g.name),
               Column("Members", lambda g: m.UserGroup.select().where(m.UserGroup.group == g).count())]
    search_fields = ("name",)
    ordering = (m.Group.name,)

    def fields(self, actor, obj, raw=None):
        return [
            Field("name", "Name", required=True, max_length=150),
            Field("permissions", "Permissions", "multi", choices=grantable_permissions(actor),
                  help="What the group's members may do in the administration panel."),
            Field("units", "Units", "multi", choices=unit_choices(),
                  help="Units the group's members see on the home page."),
        ]

    def initial(self, obj):
        if obj is None:
            return {"permissions": [], "units": []}
        return {"name": obj.name,
                "permissions": sorted(r.codename for r in m.GroupPermission.select()
                                      .where(m.GroupPermission.group == obj)),
                "units": [str(r.unit_id) for r in m.GroupUnit.select().where(m.GroupUnit.group == obj)
                          .order_by(m.GroupUnit.unit)]}

    def snapshot(self, obj):
        values = self.initial(obj)
        units = {str(u.id): u.code for u in m.Unit.select()}
        values["units"] = sorted(units.get(u, u) for u in values["units"])
        return {k: _text(v) for k, v in values.items()}

    def clean(self, actor, form, data, obj, raw):
        name = data.get("name") or ""
        if name and m.Group.select().where((m.Group.name == name) & (m.Group.id != (obj.id if obj else 0))).exists():
            form.add_error("name", f"A group named {name!r} already exists.")
        if obj is not None:
            grantable = {c[0] for c in grantable_permissions(actor)}
            hidden = [p for p in self.initial(obj)["permissions"] if p not in grantable]
            data["permissions"] = list(data["permissions"]) + hidden

    def save(self, actor, obj, data):
        if obj is None:
            obj = m.Group.create(name=data["name"])
        else:
            obj.name = data["name"]
            obj.save()
        _set_links(m.GroupPermission, "group", obj, "codename", data["permissions"])
        _set_links(m.GroupUnit, "group", obj, "unit", _ids(data["units"]))
        return obj


# --- units ---------------------------------------------------------------------------------


def parse_channel_list(text: str, channels: int, what: str) -> list[int]:
    """``1, 3-5`` -> [1, 3, 4, 5]; every number a channel of the unit."""
    out: list[int] = []
    for part in re.split(r"[,\s]+", text.strip()):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            numbers = range(int(lo), int(hi) + 1) if sep else [int(lo)]
        except ValueError:
            raise InvalidValue(f"{what}: {part!r} is not a channel number (write e.g. 1, 2, 5-8)") from None
        for n in numbers:
            if not 1 <= n <= channels:
                raise InvalidValue(f"{what}: channel {n} does not exist (the unit has {channels})")
            if n not in out:
                out.append(n)
    return out


def channel_list_text(numbers: Sequence[int]) -> str:
    return ", ".join(str(n) for n in numbers)


class UnitAdmin(ModelAdmin):
    name = "unit"
    verbose = "unit"
    plural = "units"
    model = m.Unit
    description = "Tiger meters: code and key for TTP, data fields and labels, graph and report options."
    columns = [Column("Code", lambda u: u.code), Column("Name", lambda u: u.name),
               Column("Data fields", lambda u: u.channels), Column("Reports", lambda u: u.has_reports)]
    search_fields = ("code", "name")
    ordering = (m.Unit.code,)

    def fields(self, actor, obj, raw=None):
        fields = [
            Field("code", "Unit code", required=True, max_length=64, group="TTP connection",
                  help="Letters and digits only; the meter sends it with every request. A change takes effect "
                       "at the meter's next request."),
            Field("key", "Unit key", required=True, max_length=128, secret=True, group="TTP connection",
                  help="The secret ending every request of the meter; no spaces."),
            Field("name", "Name", max_length=200, group="TTP connection", help="A name for people."),
            Field("channels", "Number of data fields", "int", required=True, minimum=1, maximum=m.MAX_CHANNELS,
                  group="Data fields",
                  help=f"Values in each upload, 1 to {m.MAX_CHANNELS}; every upload must send exactly this many."),
            Field("labels", "Channel labels", max_length=64 * m.MAX_CHANNELS + m.MAX_CHANNELS, group="Data fields",
                  help="Comma-separated, in channel order, e.g. Flow,Temp,Level; empty ones show as ch1, ch2 ... "
                       "No spaces or = < > ; \" ' inside a label."),
            Field("show_labels", "Downloads show labels", "bool", group="Data fields",
                  help="TTP downloads answer Flow=11 Temp=22 instead of 11 22."),
            Field("graph_width", "Graph width (pixels)", "int", required=True, minimum=100, maximum=4000,
                  group="Graphing options"),
            Field("graph_height", "Graph height (pixels)", "int", required=True, minimum=100, maximum=4000,
                  group="Graphing options"),
            Field("graph_axes", "Number of axes", "int", required=True, minimum=1, maximum=MAX_AXES,
                  group="Graphing options", help=f"1 to {MAX_AXES}; fill in a label and channels for each below."),
        ]
        for i in range(1, MAX_AXES + 1):
            fields.append(Field(f"axis{i}_label", f"Axis {i} label", max_length=100, group="Graphing options"))
            fields.append(Field(f"axis{i}_channels", f"Axis {i} channels", max_length=200, group="Graphing options",
                                help="Channel numbers, e.g. 1, 2 or 3-5" + (
                                    "; empty: every channel" if i == 1 else "")))
        fields += [
            Field("has_reports", "Has reports", "bool", group="Report options",
                  help="Offer CSV data downloads of this unit."),
            Field("report_fields", "Exported fields", max_length=200, group="Report options",
                  help="Channel numbers the downloads hold, e.g. 1, 2, 4; empty: all."),
        ]
        return fields

    def initial(self, obj):
        if obj is None:
            return {"channels": "1", "graph_width": "800", "graph_height": "400", "graph_axes": "1",
                    "has_reports": True, "show_labels": False}
        values: dict[str, Any] = {
            "code": obj.code, "key": obj.key, "name": obj.name, "channels": str(obj.channels),
            "labels": ",".join(obj.labels or []), "show_labels": obj.show_labels,
            "graph_width": str(obj.graph_width), "graph_height": str(obj.graph_height),
            "graph_axes": str(max(1, len(obj.graph_axes or []))),
            "has_reports": obj.has_reports, "report_fields": channel_list_text(obj.report_fields or []),
        }
        for i, axis in enumerate(obj.graph_axes or [], start=1):
            values[f"axis{i}_label"] = axis.get("label", "")
            values[f"axis{i}_channels"] = channel_list_text(axis.get("channels", []))
        return values

    def secret_fields(self):
        return ("key",)

    def clean(self, actor, form, data, obj, raw):
        code = data.get("code") or ""
        if code:
            try:
                m.check_unit_code(code)
            except InvalidValue:
                form.add_error("code", "Use letters and digits only (1 to 64), no spaces or signs.")
            else:
                clash = m.Unit.select().where((m.Unit.code == code) & (m.Unit.id != (obj.id if obj else 0)))
                if clash.exists():
                    form.add_error("code", f"Another unit already has the code {code!r}.")
        if data.get("key"):
            try:
                manage.check_key(data["key"])
            except InvalidValue:
                form.add_error("key", "No spaces allowed in a key.")
        channels = data.get("channels")
        if channels is None:
            return
        try:
            data["labels"] = manage.parse_labels(data.get("labels") or "", channels)
        except InvalidValue as exc:
            form.add_error("labels", str(exc)[0].upper() + str(exc)[1:] + ".")
        axes_count = data.get("graph_axes") or 1
        axes = []
        for i in range(1, MAX_AXES + 1):
            label = data.get(f"axis{i}_label") or ""
            text = data.get(f"axis{i}_channels") or ""
            try:
                numbers = parse_channel_list(text, channels, f"axis {i}")
            except InvalidValue as exc:
                form.add_error(f"axis{i}_channels", str(exc)[0].upper() + str(exc)[1:] + ".")
                continue
            if i <= axes_count:
                if not numbers and axes_count > 1:
                    form.add_error(f"axis{i}_channels", f"Name the channels axis {i} shows.")
                axes.append({"label": label, "channels": numbers})
        if axes_count == 1 and axes and not axes[0]["label"] and not axes[0]["channels"]:
            axes = []  # one axis with every channel: the default
        elif axes_count == 1 and axes and not axes[0]["channels"]:
            axes[0]["channels"] = list(range(1, channels + 1))
        data["graph_axes"] = axes
        try:
            data["report_fields"] = parse_channel_list(data.get("report_fields") or "", channels, "exported fields")
        except InvalidValue as exc:
            form.add_error("report_fields", str(exc)[0].upper() + str(exc)[1:] + ".")

    def save(self, actor, obj, data):
        values = {k: data[k] for k in ("code", "key", "name", "channels", "labels", "show_labels", "graph_width",
                                       "graph_height", "graph_axes", "has_reports", "report_fields")}
        if obj is None:
            return m.Unit.create(**values)
        for k, v in values.items():
            setattr(obj, k, v)
        obj.save()
        return obj

    def delete_problems(self, actor, obj):
        problems = []
        for model, table, setting in (("samples", m.Sample, "ALLOW_SAMPLE_DELETION"),
                                      ("alarms", m.Alarm, "ALLOW_ALARM_DELETION")):
            if not actor.settings[setting] and table.select().where(table.unit == obj).limit(1).exists():
                problems.append(f"The unit has {model}, and deleting {model} is switched off on this server "
                                f"({setting} is no), so the unit cannot be deleted.")
        return problems

    def delete_warnings(self, actor, obj):
        samples = m.Sample.select().where(m.Sample.unit == obj).limit(1).exists()
        alarms = m.Alarm.select().where(m.Alarm.unit == obj).limit(1).exists()
        out = []
        if samples or alarms:
            out.append("ALL samples and alarms of this unit are deleted with it (in batches; this may take a while "
                       "for a unit with millions of samples).")
        out.append("Its mailing list, alarm messages and places in multiple-meter views go too.")
        return out

    def prepare_delete(self, actor, obj):
        samples = _delete_batches_samples(obj, None)[0]
        alarms = _delete_batches_alarms(obj, None)[0]
        return f"Deleted with {samples} sample(s) and {alarms} alarm(s)."


# --- mailing lists and alarm messages --------------------------------------------------------


class MailingListAdmin(ModelAdmin):
    name = "mailinglist"
    verbose = "mailing list"
    plural = "mailing lists"
    model = m.MailingList
    description = "One per unit: the users who receive the unit's alarm emails."
    columns = [Column("Unit", lambda ml: str(ml.unit)), Column("Name", lambda ml: ml.name),
               Column("Members", lambda ml: m.MailingListMember.select()
                      .where(m.MailingListMember.mailing_list == ml).count())]
    search_fields = ("name",)
    ordering = (m.MailingList.id,)

    def query(self, search=""):
        q = m.MailingList.select(m.MailingList, m.Unit).join(m.Unit)
        if search:
            q = q.where(m.MailingList.name.contains(search) | m.Unit.code.contains(search))
        return q.order_by(m.Unit.code)

    def repr(self, obj):
        return f"mailing list of {obj.unit.code}" + (f" ({obj.name})" if obj.name else "")

    def fields(self, actor, obj, raw=None):
        return [
            Field("unit", "Unit", "select", required=True, choices=unit_choices(),
                  help="A unit has one mailing list."),
            Field("name", "Name", max_length=200),
            Field("members", "Members", "multi", choices=user_choices(with_email=True),
                  help="Users receiving the unit's alarm emails; a user without an email address gets none."),
        ]

    def initial(self, obj):
        if obj is None:
            return {"members": []}
        return {"unit": str(obj.unit_id), "name": obj.name,
                "members": [str(r.user_id) for r in m.MailingListMember.select()
                            .where(m.MailingListMember.mailing_list == obj).order_by(m.MailingListMember.user)]}

    def snapshot(self, obj):
        values = self.initial(obj)
        users = {str(u.id): u.username for u in m.User.select()}
        values["members"] = sorted(users.get(u, u) for u in values["members"])
        values["unit"] = obj.unit.code
        return {k: _text(v) for k, v in values.items()}

    def clean(self, actor, form, data, obj, raw):
        unit = data.get("unit")
        if unit and m.MailingList.select().where((m.MailingList.unit == int(unit))
                                                 & (m.MailingList.id != (obj.id if obj else 0))).exists():
            form.add_error("unit", "This unit already has a mailing list: change that one.")

    def save(self, actor, obj, data):
        if obj is None:
            obj = m.MailingList.create(unit=int(data["unit"]), name=data["name"])
        else:
            obj.unit = int(data["unit"])
            obj.name = data["name"]
            obj.save()
        _set_links(m.MailingListMember, "mailing_list", obj, "user", _ids(data["members"]))
        return m.MailingList.get_by_id(obj.id)


class AlarmMessageAdmin(ModelAdmin):
    name = "alarmmessage"
    verbose = "alarm message"
    plural = "alarm messages"
    model = m.AlarmMessage
    description = "Subject and text of a unit's alarm emails, per alarm level (Django-style templates)."
    columns = [Column("Unit", lambda a: str(a.unit)), Column("Level", lambda a: a.level),
               Column("Subject", lambda a: a.subject)]
    search_fields = ("subject",)

    def query(self, search=""):
        q = m.AlarmMessage.select(m.AlarmMessage, m.Unit).join(m.Unit)
        if search:
            q = q.where(m.AlarmMessage.subject.contains(search) | m.Unit.code.contains(search))
        return q.order_by(m.Unit.code, m.AlarmMessage.level)

    def repr(self, obj):
        return f"{obj.unit.code} level {obj.level}"

    def fields(self, actor, obj, raw=None):
        return [
            Field("unit", "Unit", "select", required=True, choices=unit_choices()),
            Field("level", "Alarm level", "int", required=True, minimum=-(2 ** 31), maximum=2 ** 31 - 1,
                  help="The level the meter sends: TTP /al/CODE/LEVEL;DATA..."),
            Field("subject", "Subject", required=True, max_length=500,
                  help="A template: {{ unit.name }} alarm {{ level }}"),
            Field("body", "Message", "textarea", required=True,
                  help="A template: {{ level }}, {{ unit.code }}, {{ unit.name }}, {{ data }}, {{ data.0 }}, "
                       "{% if data.0 %}...{% endif %}"),
        ]

    def initial(self, obj):
        if obj is None:
            return {}
        return {"unit": str(obj.unit_id), "level": str(obj.level), "subject": obj.subject, "body": obj.body}

    def snapshot(self, obj):
        values = self.initial(obj)
        values["unit"] = obj.unit.code
        return {k: _text(v) for k, v in values.items()}

    def clean(self, actor, form, data, obj, raw):
        unit, level = data.get("unit"), data.get("level")
        if unit and level is not None and m.AlarmMessage.select().where(
                (m.AlarmMessage.unit == int(unit)) & (m.AlarmMessage.level == level)
                & (m.AlarmMessage.id != (obj.id if obj else 0))).exists():
            form.add_error("level", "This unit already has a message for this level.")
        for name in ("subject", "body"):
            if data.get(name):
                try:
                    alarms.check_template(data[name])
                except InvalidValue as exc:
                    form.add_error(name, f"The template does not work: {exc}")

    def save(self, actor, obj, data):
        values = {"unit": int(data["unit"]), "level": data["level"], "subject": data["subject"], "body": data["body"]}
        if obj is None:
            obj = m.AlarmMessage.create(**values)
        else:
            for k, v in values.items():
                setattr(obj, k, v)
            obj.save()
        return m.AlarmMessage.get_by_id(obj.id)


SAMPLE_ALARM_DATA = ["2026-01-01 12:00:00", "42.5", "17"]


def preview_alarm_message(unit: m.Unit, level: int, subject: str, body: str,
                          data: Sequence[str] | None = None) -> tuple[str, str]:
    """A subject and body template (as typed, saved or not) rendered with sample data."""
    return alarms.render_message(subject, body, unit, level, list(data if data is not None else SAMPLE_ALARM_DATA))


def send_test_alarm_email(actor: Actor, message: m.AlarmMessage, recipients: Sequence[str],
                          data: Sequence[str] | None = None) -> None:
    """Send the saved message with sample data to ``recipients``; raise TxmError with the SMTP reason."""
    actor.require("change", "alarmmessage")
    addresses = [r.strip() for r in recipients if r.strip()]
    if not addresses:
        raise InvalidValue("give at least one address to send the test email to")
    for address in addresses:
        if not re.fullmatch(r"[^@\s,;<>]+@[^@\s,;<>]+", address):
            raise InvalidValue(f"{address!r} is not an email address")
    alarms.send_test_email(actor.settings, message.unit, message.level,
                          list(data if data is not None else SAMPLE_ALARM_DATA), addresses)


def mailing_list_addresses(unit: m.Unit) -> list[str]:
    """Email addresses on the unit's mailing list (users without one left out)."""
    q = (m.User.select(m.User.email).join(m.MailingListMember).join(m.MailingList)
         .where((m.MailingList.unit == unit) & (m.User.email != "")).order_by(m.User.email))
    return [u.email for u in q]


# --- multiple-meter views ----------------------------------------------------------------------

#: Empty rows offered under a view's units for adding more.
VIEW_SPARE_ROWS = 3
#: Most units in one view.
MAX_VIEW_ROWS = 200


class ViewAdmin(ModelAdmin):
    name = "view"
    verbose = "multiple-meter view"
    plural = "multiple-meter views"
    model = m.View
    description = "Multiple-meter displays: a name, a refresh rate, and the units and channels to show."
    columns = [Column("Name", lambda v: v.name), Column("Refresh (seconds)", lambda v: v.refresh_seconds),
               Column("Units", lambda v: m.ViewEntry.select().where(m.ViewEntry.view == v).count())]
    search_fields = ("name",)
    ordering = (m.View.name,)

    def _rows(self, obj, raw):
        if raw is not None and raw.get("rows"):
            try:
                return max(1, min(MAX_VIEW_ROWS, int(raw.get("rows"))))
            except ValueError:
                pass
        existing = 0 if obj is None else m.ViewEntry.select().where(m.ViewEntry.view == obj).count()
        return min(MAX_VIEW_ROWS, existing + VIEW_SPARE_ROWS)

    def fields(self, actor, obj, raw=None):
        fields = [
            Field("name", "Name", required=True, max_length=200, group="View"),
            Field("refresh_seconds", "Refresh rate (seconds)", "int", required=True, minimum=1, maximum=86400,
                  group="View", help="How often the display fetches the latest values."),
        ]
        units = [("", "---")] + unit_choices()
        for i in range(1, self._rows(obj, raw) + 1):
            fields.append(Field(f"entry{i}_unit", f"Unit {i}", "select", choices=units, group="Units and channels"))
            fields.append(Field(f"entry{i}_channels", f"Unit {i} channels", max_length=200,
                                group="Units and channels",
                                help="Channel numbers to show, e.g. 1, 3; empty: every channel."))
        return fields

    def initial(self, obj):
        if obj is None:
            return {"refresh_seconds": "10"}
        values: dict[str, Any] = {"name": obj.name, "refresh_seconds": str(obj.refresh_seconds)}
        for i, entry in enumerate(self.entries(obj), start=1):
            values[f"entry{i}_unit"] = str(entry.unit_id)
            values[f"entry{i}_channels"] = channel_list_text(entry.channels or [])
        return values

    @staticmethod
    def entries(obj) -> list[m.ViewEntry]:
        return list(m.ViewEntry.select(m.ViewEntry, m.Unit).join(m.Unit).where(m.ViewEntry.view == obj)
                    .order_by(m.ViewEntry.position, m.ViewEntry.id))

    def snapshot(self, obj):
        values = {"name": obj.name, "refresh_seconds": str(obj.refresh_seconds)}
        values["units"] = "; ".join(f"{e.unit.code}: {channel_list_text(e.channels) or 'all channels'}"
                                    for e in self.entries(obj))
        return values

    def labels(self, actor, obj):
        return {"name": "name", "refresh_seconds": "refresh rate", "units": "units and channels"}

    def clean(self, actor, form, data, obj, raw):
        entries = []
        units = {u.id: u for u in m.Unit.select()}
        for i in range(1, self._rows(obj, raw) + 1):
            unit_id = data.get(f"entry{i}_unit")
            text = data.get(f"entry{i}_channels") or ""
            if not unit_id:
                if text:
                    form.add_error(f"entry{i}_unit", "Choose the unit these channels belong to.")
                continue
            unit = units.get(int(unit_id))
            if unit is None:
                form.add_error(f"entry{i}_unit", "This unit no longer exists.")
                continue
            try:
                numbers = parse_channel_list(text, unit.channels, f"unit {unit.code}")
            except InvalidValue as exc:
                form.add_error(f"entry{i}_channels", str(exc)[0].upper() + str(exc)[1:] + ".")
                continue
            entries.append((unit.id, numbers))
        data["entries"] = entries

    def save(self, actor, obj, data):
        if obj is None:
            obj = m.View.create(name=data["name"], refresh_seconds=data["refresh_seconds"])
        else:
            obj.name = data["name"]
            obj.refresh_seconds = data["refresh_seconds"]
            obj.save()
        m.ViewEntry.delete().where(m.ViewEntry.view == obj).execute()
        if data["entries"]:
            m.ViewEntry.insert_many([{"view": obj, "unit": unit, "channels": channels, "position": pos}
                                     for pos, (unit, channels) in enumerate(data["entries"])]).execute()
        return obj


# --- samples and alarms: viewed and deleted, never changed -------------------------------------


def parse_when(text: str, what: str) -> Optional[dt.datetime]:
    """A date or date and time typed in a filter: ``2026-11-20`` or ``2026-11-20 13:05[:09]``."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("T", " ", 1) if len(text) > 10 else text)
    except ValueError:
        raise InvalidValue(f"{what}: {text!r} is not a date; write e.g. 2026-11-20 or 2026-11-20 13:05") from None


@dataclass
class Page:
    """One page of a long list, with cursors for the neighbouring pages (None at either end)."""

    rows: list
    newer: Optional[str] = None
    older: Optional[str] = None


def _keyset_page(base: pw.ModelSelect, key: pw.Field, parse: Callable[[str], Any], before: str, after: str,
                 size: int, show: Callable[[Any], str] = str) -> Page:
    """One page of ``base``, newest ``key`` first; ``before``/``after`` are cursors (``show`` of a
    key, read back by ``parse``) from an earlier page. Every query starts at a known key through
    its index, so a page costs the same however long the list."""
    def cursor(row) -> str:
        return show(getattr(row, key.name))

    if after:
        rows = list(base.where(key > parse(after)).order_by(key.asc()).limit(size + 1))
        more_newer = len(rows) > size
        rows = rows[:size][::-1]
        return Page(rows, cursor(rows[0]) if rows and more_newer else None, cursor(rows[-1]) if rows else None)
    q = base.where(key < parse(before)) if before else base
    rows = list(q.order_by(key.desc()).limit(size + 1))
    more_older = len(rows) > size
    rows = rows[:size]
    newer = None
    if before:
        newer = (cursor(rows[0]) if rows and base.where(key > getattr(rows[0], key.name)).exists()
                 else None if rows else before)
    return Page(rows, newer, cursor(rows[-1]) if rows and more_older else None)


def _id_cursor(noun: str) -> Callable[[str], int]:
    """Reads a page cursor that is a record id."""
    def parse(text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise InvalidValue(f"page: {text!r} is not {noun}") from None
    return parse


def sample_page(unit: m.Unit, start: Optional[dt.datetime] = None, end: Optional[dt.datetime] = None,
                before: str = "", after: str = "", size: int = PAGE_SIZE) -> Page:
    """The unit's samples, newest first, ``start <= timestamp < end``; keyset paging on the timestamp.

    ``before``/``after`` are cursors from an earlier page. Every query walks the ``(unit, timestamp)``
    index from a known point, so a page costs the same with a thousand samples or a billion.
    """
    cond = m.Sample.unit == unit
    if start is not None:
        cond &= m.Sample.timestamp >= start
    if end is not None:
        cond &= m.Sample.timestamp < end
    base = m.Sample.select().where(cond)
    return _keyset_page(base, m.Sample.timestamp, lambda text: parse_when(text, "page"), before, after, size,
                        show=format_timestamp)


def alarm_page(unit: Optional[m.Unit], start: Optional[dt.datetime] = None, end: Optional[dt.datetime] = None,
               before: str = "", after: str = "", size: int = PAGE_SIZE) -> Page:
    """Alarms (of one unit, or all), newest first, ``start <= received < end``; keyset paging on the id."""
    cond = pw.SQL("1 = 1")
    if unit is not None:
        cond = m.Alarm.unit == unit
    if start is not None:
        cond &= m.Alarm.received >= start
    if end is not None:
        cond &= m.Alarm.received < end
    base = m.Alarm.select(m.Alarm, m.Unit).join(m.Unit).where(cond)
    return _keyset_page(base, m.Alarm.id, _id_cursor("an alarm number"), before, after, size)


def sample_repr(sample: m.Sample, unit: Optional[m.Unit] = None) -> str:
    unit = unit or sample.unit
    return f"{unit.code} sample at {format_timestamp(sample.timestamp)}"


def alarm_repr(alarm: m.Alarm) -> str:
    return f"{alarm.unit.code} alarm level {alarm.level} received {format_timestamp(alarm.received)}"


def require_deletion(actor: Actor, model: str) -> None:
    setting = "ALLOW_SAMPLE_DELETION" if model == "sample" else "ALLOW_ALARM_DELETION"
    if not actor.settings[setting]:
        raise Forbidden(f"{model} deletion is switched off on this server ({setting} is no)")
    actor.require("delete", model)


def deletion_allowed(actor: Actor, model: str) -> bool:
    try:
        require_deletion(actor, model)
    except Forbidden:
        return False
    return True


def delete_sample(actor: Actor, sample: m.Sample) -> None:
    delete_samples_selected(actor, [sample.id])


def delete_samples_selected(actor: Actor, ids: Sequence[Any]) -> int:
    """The "Delete selected Samples" action: every sample gets its own log entry, as the manual says."""
    return _delete_selected(actor, ids, m.Sample, "sample", lambda sample: sample_repr(sample, sample.unit))


def _delete_selected(actor: Actor, ids: Sequence[Any], model: type[m.BaseModel], name: str,
                     describe: Callable[[Any], str]) -> int:
    """Delete the chosen samples or alarms in one transaction, writing one log entry each."""
    require_deletion(actor, name)
    numbers = selected_ids(ids)
    deleted = 0
    with m.write_transaction():
        for record in model.select(model, m.Unit).join(m.Unit).where(model.id.in_(numbers)):
            record.delete_instance()
            log_action(actor, "delete", name, record.id, describe(record), "Deleted (selected).")
            deleted += 1
    return deleted


def delete_alarm(actor: Actor, alarm: m.Alarm) -> None:
    delete_alarms_selected(actor, [alarm.id])


def delete_alarms_selected(actor: Actor, ids: Sequence[Any]) -> int:
    """Delete the chosen alarms, one log entry each."""
    return _delete_selected(actor, ids, m.Alarm, "alarm", alarm_repr)


def selected_ids(ids: Sequence[Any]) -> list[int]:
    try:
        numbers = sorted({int(i) for i in ids})
    except (TypeError, ValueError):
        raise InvalidValue("the selection names something that is not a record number") from None
    if not numbers:
        raise InvalidValue("nothing was selected")
    if len(numbers) > MAX_SELECTED:
        raise InvalidValue(f"at most {MAX_SELECTED} records at once; use the bulk deletion for more")
    return numbers


@dataclass
class BulkResult:
    deleted: int
    latest: str  # what the latest deleted record was, for people ("" when none)
    message: str


def _delete_batches_samples(unit: m.Unit, older_than: Optional[dt.datetime]) -> tuple[int, Optional[m.Sample]]:
    """Delete a unit's samples (older than a time, or all) in index-range batches of BATCH_SIZE.

    Each batch is its own short transaction: find the timestamp of the batch's last row on the
    ``(unit, timestamp)`` index, then delete that range. No long lock, no huge list of ids.
    """
    cond = m.Sample.unit == unit
    if older_than is not None:
        cond &= m.Sample.timestamp < older_than
    latest = m.Sample.select().where(cond).order_by(m.Sample.timestamp.desc()).first()
    deleted = 0
    while True:
        with m.write_transaction():
            locked_at = time.monotonic()  # the write lock is ours from here
            boundary = (m.Sample.select(m.Sample.timestamp).where(cond).order_by(m.Sample.timestamp)
                        .offset(m.BATCH_SIZE - 1).limit(1).scalar())
            if boundary is None:
                deleted += m.Sample.delete().where(cond).execute()
                break
            deleted += m.Sample.delete().where(cond & (m.Sample.timestamp <= boundary)).execute()
        m.between_batches(locked_at)
    return deleted, latest


def _delete_batches_alarms(unit: m.Unit, older_than: Optional[dt.datetime]) -> tuple[int, Optional[m.Alarm]]:
    cond = m.Alarm.unit == unit
    if older_than is not None:
        cond &= m.Alarm.received < older_than
    latest = m.Alarm.select().where(cond).order_by(m.Alarm.id.desc()).first()
    deleted = 0
    while True:
        with m.write_transaction():
            locked_at = time.monotonic()  # the write lock is ours from here
            boundary = (m.Alarm.select(m.Alarm.id).where(cond).order_by(m.Alarm.id)
                        .offset(m.BATCH_SIZE - 1).limit(1).scalar())
            if boundary is None:
                deleted += m.Alarm.delete().where(cond).execute()
                break
            deleted += m.Alarm.delete().where(cond & (m.Alarm.id <= boundary)).execute()
        m.between_batches(locked_at)
    return deleted, latest


def _units(unit: Optional[m.Unit]) -> list[m.Unit]:
    return [unit] if unit is not None else list(m.Unit.select().order_by(m.Unit.code))


def delete_samples_bulk(actor: Actor, unit: Optional[m.Unit] = None,
                        older_than: Optional[dt.datetime] = None) -> BulkResult:
    """ "Delete ALL Samples" (``older_than`` None) or "Delete old Samples..." of a unit or of every unit.

    Deletes in batches and writes ONE log entry naming the latest deleted sample.
    """
    require_deletion(actor, "sample")
    total, latest, latest_unit = 0, None, None
    for u in _units(unit):
        count, newest = _delete_batches_samples(u, older_than)
        total += count
        if newest is not None and (latest is None or newest.timestamp > latest.timestamp):
            latest, latest_unit = newest, u
    scope = f"of unit {unit.code}" if unit is not None else "of every unit"
    which = f"older than {format_timestamp(older_than)}" if older_than is not None else "(all)"
    latest_text = sample_repr(latest, latest_unit) if latest is not None else ""
    message = f"Bulk deletion: {total} sample(s) {scope} {which}."
    if latest is not None:
        message += f" The latest deleted: {latest_text} (id {latest.id})."
    log_action(actor, "delete", "sample", latest.id if latest is not None else "",
               latest_text or f"samples {scope}", message)
    return BulkResult(total, latest_text, message)


def delete_alarms_bulk(actor: Actor, unit: Optional[m.Unit] = None,
                       older_than: Optional[dt.datetime] = None) -> BulkResult:
    """ "Delete All Alarms" / "Delete Old Alarms..." (by time received, UTC); ONE log entry."""
    require_deletion(actor, "alarm")
    total, latest = 0, None
    for u in _units(unit):
        count, newest = _delete_batches_alarms(u, older_than)
        total += count
        if newest is not None and (latest is None or newest.id > latest.id):
            latest = newest
    scope = f"of unit {unit.code}" if unit is not None else "of every unit"
    which = f"received before {format_timestamp(older_than)} UTC" if older_than is not None else "(all)"
    latest_text = alarm_repr(latest) if latest is not None else ""
    message = f"Bulk deletion: {total} alarm(s) {scope} {which}."
    if latest is not None:
        message += f" The latest deleted: {latest_text} (id {latest.id})."
    log_action(actor, "delete", "alarm", latest.id if latest is not None else "",
               latest_text or f"alarms {scope}", message)
    return BulkResult(total, latest_text, message)


# --- the action log: browsed, never edited ---------------------------------------------------


def log_page(model: str = "", action: str = "", username: str = "", search: str = "",
             start: Optional[dt.datetime] = None, end: Optional[dt.datetime] = None,
             before: str = "", after: str = "", size: int = PAGE_SIZE, object_id: str = "") -> Page:
    """Log entries, newest first, filtered; keyset paging on the id."""
    cond = pw.SQL("1 = 1")
    if model:
        cond &= m.LogEntry.model == model
    if object_id:
        cond &= m.LogEntry.object_id == object_id
    if action:
        cond &= m.LogEntry.action == action
    if username:
        cond &= m.LogEntry.username == username
    if search:
        cond &= (m.LogEntry.object_repr.contains(search) | m.LogEntry.change_message.contains(search))
    if start is not None:
        cond &= m.LogEntry.action_time >= start
    if end is not None:
        cond &= m.LogEntry.action_time < end
    base = m.LogEntry.select().where(cond)
    return _keyset_page(base, m.LogEntry.id, _id_cursor("a log entry number"), before, after, size)


# --- the registry ----------------------------------------------------------------------------


@dataclass
class ReadOnlyAdmin:
    """Samples, alarms and the log: listed and viewed by their own pages, never edited."""

    name: str
    verbose: str
    plural: str
    description: str
    deletable: bool
    editable: bool = False

    def permission_name(self) -> str:
        return self.name


def registry() -> dict[str, Any]:
    """Every model the panel manages, by URL name, in the order the index page shows them."""
    admins: list[Any] = [
        UserAdmin(), GroupAdmin(), UnitAdmin(),
        ReadOnlyAdmin("sample", "sample", "samples",
                      "Data the units uploaded, per unit: viewed and deleted, never changed.", True),
        ReadOnlyAdmin("alarm", "alarm", "alarms",
                      "Alarms the units raised, and what became of their emails: viewed and deleted, never changed.",
                      True),
        MailingListAdmin(), AlarmMessageAdmin(), ViewAdmin(),
        ReadOnlyAdmin("logentry", "log entry", "action log",
                      "Every add, change and delete made in this panel: who, when, what.", False),
    ]
    return {a.name: a for a in admins}


SECTIONS = (("Users and permissions", ("user", "group")), ("Units and data", ("unit", "sample", "alarm")),
            ("Email and alarms", ("mailinglist", "alarmmessage")), ("Displays", ("view",)),
            ("Records", ("logentry",)))


def visible_sections(actor: Actor) -> list[tuple[str, list[Any]]]:
    """The index page: each section with the models the actor may see."""
    reg = registry()
    out = []
    for title, names in SECTIONS:
        admins = [reg[n] for n in names if actor.may("view", n)]
        if admins:
            out.append((title, admins))
    return out

