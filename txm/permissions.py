"""Who may do what: admin-panel permissions and which units a user may see.

Permissions are codenames ``<action>_<model>`` (``view_unit``, ``delete_sample`` ...) given to a
user directly or through their groups. A superuser has every permission. Admin-panel access needs
an active staff user; the permissions then decide per model and action.

Which units a user sees in the web interface: a superuser sees all; anyone else sees the units
given to them or to one of their groups, and every unit if they may ``view_unit`` in the panel.
With ``LOGIN_REQUIRED`` off, anonymous visitors see every unit.
"""

from __future__ import annotations

from typing import Optional

import peewee as pw

from txm.db import schema
from txm.errors import NotFound

ACTIONS = ("view", "add", "change", "delete")
#: The models the admin panel manages, by the name used in permission codenames.
PERMISSION_MODELS = ("user", "group", "unit", "sample", "alarm", "quarantinedrecord", "mailinglist", "alarmmessage",
                     "view", "logentry")
ALL_PERMISSIONS = tuple(f"{action}_{model}" for model in PERMISSION_MODELS for action in ACTIONS)


def permissions_of(user: Optional[schema.User]) -> set[str]:
    """Every permission codename the user holds (all of them for an active superuser)."""
    if user is None or not user.is_active:
        return set()
    if user.is_superuser:
        return set(ALL_PERMISSIONS)
    own = schema.UserPermission.select(schema.UserPermission.codename).where(schema.UserPermission.user == user)
    via_groups = (schema.GroupPermission.select(schema.GroupPermission.codename)
                  .join(schema.UserGroup, on=(schema.UserGroup.group == schema.GroupPermission.group))
                  .where(schema.UserGroup.user == user))
    return {row[0] for row in own.tuples()} | {row[0] for row in via_groups.tuples()}


def has_perm(user: Optional[schema.User], codename: str) -> bool:
    return codename in permissions_of(user)


def may_enter_admin(user: Optional[schema.User]) -> bool:
    return user is not None and user.is_active and user.is_staff


def visible_units(user: Optional[schema.User], login_required: bool = True) -> pw.ModelSelect:
    """The units the user may see in the web interface, ordered by code."""
    units = schema.Unit.select().order_by(schema.Unit.code)
    if user is None:
        return units if not login_required else units.where(pw.SQL("1 = 0"))
    if not user.is_active:
        return units.where(pw.SQL("1 = 0"))
    if not login_required or user.is_superuser or has_perm(user, "view_unit"):
        return units
    direct = schema.UserUnit.select(schema.UserUnit.unit).where(schema.UserUnit.user == user)
    via_groups = (schema.GroupUnit.select(schema.GroupUnit.unit)
                  .join(schema.UserGroup, on=(schema.UserGroup.group == schema.GroupUnit.group))
                  .where(schema.UserGroup.user == user))
    return units.where(schema.Unit.id.in_(direct) | schema.Unit.id.in_(via_groups))


def can_see_unit(user: Optional[schema.User], unit: schema.Unit, login_required: bool = True) -> bool:
    return visible_units(user, login_required).where(schema.Unit.id == unit.id).exists()


def visible_unit(user: Optional[schema.User], code: str, login_required: bool = True) -> Optional[schema.Unit]:
    """The unit with this code if the user may see it; None both when there is none and when they
    may not see it, so that pages answer the two alike and tell nobody which codes exist."""
    try:
        unit = schema.Unit.by_code(code)
    except NotFound:
        return None
    return unit if can_see_unit(user, unit, login_required) else None
