"""Mailing lists: who gets the alarm emails of a unit (``txm mailing-list``, the admin panel)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from txm.db import schema
from txm.db.sqlite import write_transaction
from txm.errors import InvalidValue, NotFound


@dataclass
class MailingListChange:
    unit: schema.Unit
    changed: list[str]  # user names added or removed
    unchanged: list[str]  # already on the list (add), or not on it (remove)


def _users(usernames: Iterable[str]) -> list[schema.User]:
    names = list(dict.fromkeys(n.strip() for n in usernames if n and n.strip()))
    if not names:
        raise InvalidValue("name at least one user")
    found = {u.username: u for u in schema.User.select().where(schema.User.username.in_(names))}
    missing = [n for n in names if n not in found]
    if missing:
        raise NotFound(f"there is no user named {', '.join(repr(n) for n in missing)}; see txm user list")
    return [found[n] for n in names]


def mailing_list_add(code: str, usernames: Iterable[str]) -> MailingListChange:
    """Put users on the unit's mailing list (created when the unit has none). Nothing changes
    when a unit or user is unknown."""
    unit = schema.Unit.by_code(code)
    users = _users(usernames)
    with write_transaction():
        mailing_list, _ = schema.MailingList.get_or_create(unit=unit, defaults={"name": unit.code})
        present = {row[0] for row in schema.MailingListMember.select(schema.MailingListMember.user)
                   .where(schema.MailingListMember.mailing_list == mailing_list).tuples()}
        added = [u for u in users if u.id not in present]
        for user in added:
            schema.MailingListMember.create(mailing_list=mailing_list, user=user)
    return MailingListChange(unit, [u.username for u in added], [u.username for u in users if u.id in present])


def mailing_list_remove(code: str, usernames: Iterable[str]) -> MailingListChange:
    """Take users off the unit's mailing list. Nothing changes when a unit or user is unknown."""
    unit = schema.Unit.by_code(code)
    users = _users(usernames)
    mailing_list = schema.MailingList.get_or_none(schema.MailingList.unit == unit)
    removed: list[str] = []
    if mailing_list is not None:
        with write_transaction():
            for user in users:
                if schema.MailingListMember.delete().where((schema.MailingListMember.mailing_list == mailing_list)
                                                           & (schema.MailingListMember.user == user)).execute():
                    removed.append(user.username)
    return MailingListChange(unit, removed, [u.username for u in users if u.username not in removed])


def mailing_list_members(code: str) -> tuple[schema.Unit, list[schema.User]]:
    """The unit and the users on its mailing list, by name."""
    unit = schema.Unit.by_code(code)
    users = list(schema.User.select().join(schema.MailingListMember).join(schema.MailingList)
                 .where(schema.MailingList.unit == unit).order_by(schema.User.username))
    return unit, users
