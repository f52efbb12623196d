"""Permissions and unit visibility against a real database."""

from __future__ import annotations

from txm import manage
from txm.db import schema
from txm.permissions import (
    ALL_PERMISSIONS,
    has_perm,
    may_enter_admin,
    permissions_of,
    visible_units,
)


def codes(query):
    return [u.code for u in query]


def test_superuser_has_everything_and_sees_every_unit(database):
    admin = schema.User.get_by_id(1)
    manage.add_unit("B", "k", 1)
    manage.add_unit("A", "k", 1)
    assert permissions_of(admin) == set(ALL_PERMISSIONS)
    assert codes(visible_units(admin)) == ["A", "B"]


def test_plain_user_sees_granted_units_only(database):
    a, b, c = (manage.add_unit(code, "k", 1) for code in "ABC")
    user = manage.add_user("u", "pw")
    assert codes(visible_units(user)) == []
    schema.UserUnit.create(user=user, unit=a)
    group = schema.Group.create(name="site")
    schema.GroupUnit.create(group=group, unit=c)
    schema.UserGroup.create(user=user, group=group)
    assert codes(visible_units(user)) == ["A", "C"]
    assert codes(visible_units(user, login_required=False)) == ["A", "B", "C"]
    assert codes(visible_units(None, login_required=False)) == ["A", "B", "C"]
    assert codes(visible_units(None)) == []
    user.is_active = False
    assert codes(visible_units(user)) == []


def test_permissions_come_from_user_and_groups(database):
    user = manage.add_user("staff", "pw", staff=True)
    assert may_enter_admin(user) and not has_perm(user, "change_unit")
    schema.UserPermission.create(user=user, codename="change_unit")
    group = schema.Group.create(name="g")
    schema.GroupPermission.create(group=group, codename="delete_sample")
    schema.UserGroup.create(user=user, group=group)
    assert permissions_of(user) == {"change_unit", "delete_sample"}
    manage.add_unit("A", "k", 1)
    assert codes(visible_units(user)) == []
    schema.UserPermission.create(user=user, codename="view_unit")
    assert codes(visible_units(user)) == ["A"]
    assert not may_enter_admin(manage.add_user("plain", "pw"))
