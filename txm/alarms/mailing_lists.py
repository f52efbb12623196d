"""Mailing lists: who gets the alarm emails of a unit (``txm mailing-list``, the admin panel)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from txm import db as m
from txm.errors import InvalidValue, NotFound


@dataclass
class MailingListChange:
    unit: m.Unit
    changed: list[str]  # user names added or removed
    unchanged: list[str]  # already on the list (add), or not on it (remove)


def _users(usernames: Iterable[str]) -> list[m.User]:
    names = list(dict.fromkeys(n.strip() for n in usernames if n and n.strip()))
    if not names:
        raise InvalidValue("name at least one user")
    found = {u.username: u for u in m.User.select().where(m.User.username.in_(names))}
    missing = [n for n in names if n not in found]
    if missing:
        raise NotFound(f"there is no user named {', '.join(repr(n) for n in missing)}; see txm user list")
    return [found[n] for n in names]


def mailing_list_add(code: str, usernames: Iterable[str]) -> MailingListChange:
    """Put users on the unit's mailing list (created when the unit has none). Nothing changes
    when a unit or user is unknown."""
    from txm.manage import get_unit

    unit = get_unit(code)
    users = _users(usernames)
    with m.write_transaction():
        mailing_list, _ = m.MailingList.get_or_create(unit=unit, defaults={"name": unit.code})
        present = {row[0] for row in m.MailingListMember.select(m.MailingListMember.user)
                   .where(m.MailingListMember.mailing_list == mailing_list).tuples()}
        added = [u for u in users if u.id not in present]
        for user in added:
            m.MailingListMember.create(mailing_list=mailing_list, user=user)
    return MailingListChange(unit, [u.username for u in added], [u.username for u in users if u.id in present])


def mailing_list_remove(code: str, usernames: Iterable[str]) -> MailingListChange:
    """Take users off the unit's mailing list. Nothing changes when a unit or user is unknown."""
    from txm.manage import get_unit

    unit = get_unit(code)
    users = _users(usernames)
    mailing_list = m.MailingList.get_or_none(m.MailingList.unit == unit)
    removed: list[str] = []
    if mailing_list is not None:
        with m.write_transaction():
            for user in users:
                if m.MailingListMember.delete().where((m.MailingListMember.mailing_list == mailing_list)
                                                      & (m.MailingListMember.user == user)).execute():
                    removed.append(user.username)
    return MailingListChange(unit, removed, [u.username for u in users if u.username not in removed])


def mailing_list_members(code: str) -> tuple[m.Unit, list[m.User]]:
    """The unit and the users on its mailing list, by name."""
    from txm.manage import get_unit

    unit = get_unit(code)
    users = list(m.User.select().join(m.MailingListMember).join(m.MailingList)
                 .where(m.MailingList.unit == unit).order_by(m.User.username))
    return unit, users
