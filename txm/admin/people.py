"""Users, groups and the permissions they hold, as the admin panel edits them.

Permissions are offered as a grid of kinds of record and actions; a staff user who is not a
superuser hands out only the permissions they hold and the units they see
(:func:`grantable_permissions`, :func:`grantable_units`), and what they may not grant stays as
it was (:func:`kept_permissions`, :func:`kept_units`). They change only users who hold nothing
more than they do (:func:`rights_beyond`), and never another staff member's password or staff
status. The last active superuser cannot be demoted or deleted, and taking away one's own
access needs a tick.
"""

from __future__ import annotations

import re
from typing import Optional, Sequence

from txm import manage
from txm.admin.actor import Actor, Forbidden, log_action
from txm.admin.base import Column, ModelAdmin, as_ids, linked, set_links
from txm.admin.forms import Field, Form, FormInput, read_form
from txm.db import schema
from txm.db.sqlite import write_transaction
from txm.passwords import make_password, weakness
from txm.permissions import (
    ACTIONS,
    ALL_PERMISSIONS,
    PERMISSION_MODELS,
    permissions_of,
    visible_units,
)
from txm.timestamps import format_timestamp
from txm.webcore import (
    LOGIN_FAILURE_WINDOW,
    clear_login_failures,
    recent_login_failures,
)

# --- permissions ---------------------------------------------------------------------------------


def permission_label(codename: str) -> str:
    action, _, model = codename.partition("_")
    verbose = {"mailinglist": "mailing list", "alarmmessage": "alarm message", "view": "multiple-meter view",
               "logentry": "log entry", "quarantinedrecord": "quarantined LoggerNet record"}.get(model, model)
    return f"Can {action} {verbose}"


def permission_grid(choices: Sequence[tuple[str, str]]) -> list[tuple[str, list[Optional[str]]]]:
    """Permission choices as rows of a table: (kind of record, [codename or None per action])."""
    offered = {c[0] for c in choices}
    rows = []
    for model in PERMISSION_MODELS:
        cells = [f"{action}_{model}" if f"{action}_{model}" in offered else None for action in ACTIONS]
        if any(cells):
            rows.append((permission_label(f"view_{model}")[len("Can view "):], cells))
    return rows


#: Permissions that mean nothing in the panel: samples, alarms and quarantined records are never
#: added there, samples and quarantined records never changed (``change_alarm`` sends a failed
#: alarm email again), and the log is only read. They are not offered (a user who holds one keeps it).
IDLE_PERMISSIONS = frozenset({"add_sample", "change_sample", "add_alarm", "add_quarantinedrecord",
                              "change_quarantinedrecord", "add_logentry", "change_logentry", "delete_logentry"})


def grantable_permissions(actor: Actor) -> list[tuple[str, str]]:
    """Permissions the actor may hand out: a superuser all, anyone else only their own."""
    return [(p, permission_label(p)) for p in ALL_PERMISSIONS
            if p not in IDLE_PERMISSIONS and (actor.is_superuser or p in actor.perms)]


def kept_permissions(actor: Actor, chosen: list[str], held: list[str]) -> list[str]:
    """What a user or group holds after the actor's change: the chosen permissions, and those held
    that the actor may not grant (they are not offered to them, so they stay as they were)."""
    return _kept(chosen, held, grantable_permissions(actor))


def grantable_units(actor: Actor) -> list[tuple[str, str]]:
    """Units the actor may give a user or group to see: a superuser every unit, anyone else the
    units they see themselves."""
    units = schema.Unit.select().order_by(schema.Unit.code) if actor.is_superuser else visible_units(actor.user)
    return [(str(u.id), str(u)) for u in units]


def kept_units(actor: Actor, chosen: list[str], held: list[str]) -> list[str]:
    """The units a user or group sees after the actor's change (as :func:`kept_permissions`)."""
    return _kept(chosen, held, grantable_units(actor))


def _kept(chosen: list[str], held: list[str], grantable: list[tuple[str, str]]) -> list[str]:
    offered = {value for value, _ in grantable}
    return [v for v in chosen if v in offered] + [v for v in held if v not in offered]


def rights_beyond(actor: Actor, user: schema.User) -> list[str]:
    """What ``user`` holds that the actor does not (empty: the actor holds all of it).

    Counted as if the user were active, since whoever may change them may make them active."""
    if actor.is_superuser:
        return []
    if user.is_superuser:
        return ["superuser status"]
    as_active = schema.User(id=user.id, is_superuser=False, is_active=True)
    beyond = []
    permissions = sorted(permissions_of(as_active) - actor.perms)
    if permissions:
        beyond.append("the permission" + ("s " if len(permissions) > 1 else " ") + ", ".join(permissions)
                      + " that you do not hold")
    units = _unit_ids(as_active) - _unit_ids(actor.user)
    if units:
        beyond.append(f"{len(units)} unit(s) that you do not see")
    return beyond


def _unit_ids(user: schema.User) -> set[int]:
    return {unit_id for (unit_id,) in visible_units(user).select(schema.Unit.id).tuples()}


# --- users ---------------------------------------------------------------------------------------


def active_superuser_count() -> int:
    return manage.active_superusers().count()


def group_choices() -> list[tuple[str, str]]:
    return [(str(g.id), g.name) for g in schema.Group.select().order_by(schema.Group.name)]


class UserAdmin(ModelAdmin):
    name, verbose, plural = "user", "user", "users"
    model = schema.User
    description = "People who log in: staff and superuser status, groups, permissions, units they see."
    columns = [Column("User name", lambda u: u.username), Column("Email", lambda u: u.email),
               Column("Active", lambda u: u.is_active), Column("Staff", lambda u: u.is_staff),
               Column("Superuser", lambda u: u.is_superuser),
               Column("Last login", lambda u: format_timestamp(u.last_login)[:16] if u.last_login else "never")]
    search_fields = (schema.User.username, schema.User.email, schema.User.first_name, schema.User.last_name)
    ordering = (schema.User.username,)
    logged_names = {"groups": schema.Group.name, "units": schema.Unit.code}

    def fields(self, actor, obj, raw=None):
        limited = not actor.is_superuser
        # Only a superuser gives or takes away another staff member's staff status.
        other_staff = limited and obj is not None and obj.is_staff and obj.id != actor.user.id
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
            Field("is_staff", "Staff status (is_staff)", "bool", group="Status", readonly=other_staff,
                  help="May enter this administration panel."
                       + (" Only a superuser may change another staff member's." if other_staff else "")),
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
            Field("units", "Units", "multi", choices=grantable_units(actor), group="Permissions",
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
            "groups": linked(schema.UserGroup, "user", obj, "group"),
            "permissions": sorted(linked(schema.UserPermission, "user", obj, "codename")),
            "units": linked(schema.UserUnit, "user", obj, "unit"),
        }

    def clean(self, actor, form, data, obj, raw):
        username = data.get("username") or ""
        if username and self.clashes(obj, schema.User.username == username):
            form.add_error("username", f"A user named {username!r} already exists.")
        email = data.get("email") or ""
        if email and not re.fullmatch(r"[^@\s]+@[^@\s]+", email):
            form.add_error("email", "Enter an email address such as name@example.com.")
        if obj is None:
            if data.get("password1") and data.get("password1") != data.get("password2"):
                form.add_error("password2", "The two passwords differ.")
            elif data.get("password1"):
                _warn_if_weak(form, data["password1"])
        if data.get("is_superuser"):
            data["is_staff"] = True
        if obj is not None:
            held = self.initial(obj)
            data["permissions"] = kept_permissions(actor, data["permissions"], held["permissions"])
            data["units"] = kept_units(actor, data["units"], held["units"])
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

    def refusal(self, actor, obj):
        if obj.id == actor.user.id:
            return ""
        beyond = rights_beyond(actor, obj)
        if beyond:
            return (f"only a superuser may change or delete the account of {obj.username!r}, who holds "
                    f"{' and '.join(beyond)}")
        return ""

    def password_refusal(self, actor: Actor, user: schema.User) -> str:
        """Why the actor may not set this user's password ("" when they may)."""
        reason = self.refusal(actor, user)
        if not reason and not actor.is_superuser and user.is_staff and user.id != actor.user.id:
            reason = "only a superuser may set another staff member's password"
        return reason

    def require_password_change(self, actor: Actor, user: schema.User) -> None:
        actor.require("change", "user")
        reason = self.password_refusal(actor, user)
        if reason:
            raise Forbidden(reason)

    def save(self, actor, obj, data):
        values = {k: data[k] for k in ("username", "email", "first_name", "last_name", "is_active", "is_staff",
                                       "is_superuser")}
        if obj is None:
            values["password"] = make_password(data["password1"])
        obj = self.store(obj, values)
        set_links(schema.UserGroup, "user", obj, "group", as_ids(data["groups"]))
        set_links(schema.UserPermission, "user", obj, "codename", data["permissions"])
        set_links(schema.UserUnit, "user", obj, "unit", as_ids(data["units"]))
        return obj

    def page_context(self, obj):
        return {"login_failures": recent_login_failures(obj.username),
                "login_failure_minutes": int(LOGIN_FAILURE_WINDOW.total_seconds() // 60)}

    def unlock(self, actor: Actor, user: schema.User) -> int:
        """Forget the user name's failed logins from every address, so that the user may log in
        again at once; logged. Returns how many were forgotten."""
        actor.require("change", "user")
        self.require_allowed(actor, user)
        with write_transaction():
            count = clear_login_failures(user.username)
            log_action(actor, "change", "user", user.id, user.username, f"Cleared {count} failed login(s).")
        return count

    def delete_problems(self, actor, obj):
        if obj.is_superuser and obj.is_active and active_superuser_count() <= 1:
            return ["This is the last active superuser and cannot be deleted: make another superuser first."]
        return []

    def delete_warnings(self, actor, obj):
        warnings = []
        if obj.id == actor.user.id:
            warnings.append("This is YOUR OWN account: you will be logged out and cannot log in again.")
        warnings.append("Unticking 'Active' on the user's page keeps their history; deleting removes them "
                        "from every group and mailing list.")
        return warnings

    def set_password(self, actor: Actor, user: schema.User, raw: FormInput) -> Form:
        """The "change password form": set another user's (or one's own) password; logged, never shown."""
        self.require_password_change(actor, user)
        form, data = read_form(password_fields(), raw)
        if not form.errors and data["password1"] != data["password2"]:
            form.add_error("password2", "The two passwords differ.")
        if form.errors:
            return form
        _warn_if_weak(form, data["password1"])
        with write_transaction():
            user.password = make_password(data["password1"])
            user.save()
            log_action(actor, "change", "user", user.id, user.username, "Changed password.")
        form.saved = user
        form.message = "Changed password."
        return form


def password_fields() -> list[Field]:
    return [Field("password1", "New password", "password", required=True,
                  help="At least one character; a longer mix of letters, digits and signs is safer."),
            Field("password2", "New password again", "password", required=True)]


def _warn_if_weak(form: Form, password: str) -> None:
    """A weak password is saved all the same, with a warning."""
    warning = weakness(password)
    if warning:
        form.warnings.append(f"The password is weak: {warning}.")


# --- groups --------------------------------------------------------------------------------------


class GroupAdmin(ModelAdmin):
    name, verbose, plural = "group", "group", "groups"
    model = schema.Group
    description = "Groups of users sharing permissions and units."
    columns = [Column("Name", lambda g: g.name),
               Column("Members", lambda g: schema.UserGroup.select().where(schema.UserGroup.group == g).count())]
    search_fields = (schema.Group.name,)
    ordering = (schema.Group.name,)
    logged_names = {"units": schema.Unit.code}

    def fields(self, actor, obj, raw=None):
        return [
            Field("name", "Name", required=True, max_length=150),
            Field("permissions", "Permissions", "multi", choices=grantable_permissions(actor),
                  help="What the group's members may do in the administration panel."),
            Field("units", "Units", "multi", choices=grantable_units(actor),
                  help="Units the group's members see on the home page."),
        ]

    def initial(self, obj):
        if obj is None:
            return {"permissions": [], "units": []}
        return {"name": obj.name,
                "permissions": sorted(linked(schema.GroupPermission, "group", obj, "codename")),
                "units": linked(schema.GroupUnit, "group", obj, "unit")}

    def clean(self, actor, form, data, obj, raw):
        name = data.get("name") or ""
        if name and self.clashes(obj, schema.Group.name == name):
            form.add_error("name", f"A group named {name!r} already exists.")
        if obj is not None:
            held = self.initial(obj)
            data["permissions"] = kept_permissions(actor, data["permissions"], held["permissions"])
            data["units"] = kept_units(actor, data["units"], held["units"])

    def refusal(self, actor, obj):
        """A non-superuser changes or deletes only groups that give no more than they hold: the
        group's own permissions and units, and everything each member holds through any route."""
        if actor.is_superuser:
            return ""
        held = self.initial(obj)
        beyond = []
        permissions = sorted(set(held["permissions"]) - actor.perms)
        if permissions:
            beyond.append("gives the permission" + ("s " if len(permissions) > 1 else " ")
                          + ", ".join(permissions) + " that you do not hold")
        if set(as_ids(held["units"])) - _unit_ids(actor.user):
            beyond.append("lets its members see units that you do not see")
        members = (schema.User.select().join(schema.UserGroup, on=schema.UserGroup.user == schema.User.id)
                   .where(schema.UserGroup.group == obj, schema.User.id != actor.user.id)
                   .order_by(schema.User.username))
        stronger = [m.username for m in members if rights_beyond(actor, m)]
        if stronger:
            beyond.append("has members who hold more than you (" + ", ".join(stronger[:5])
                          + (", ..." if len(stronger) > 5 else "") + ")")
        if beyond:
            return f"only a superuser may change or delete the group {obj.name!r}, which {' and '.join(beyond)}"
        return ""

    def save(self, actor, obj, data):
        obj = self.store(obj, {"name": data["name"]})
        set_links(schema.GroupPermission, "group", obj, "codename", data["permissions"])
        set_links(schema.GroupUnit, "group", obj, "unit", as_ids(data["units"]))
        return obj
