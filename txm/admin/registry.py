"""Every model the admin panel manages, by the name in its URLs, and the index page's sections."""

from __future__ import annotations

from typing import Any

from txm.admin.actor import Actor
from txm.admin.meters import AlarmMessageAdmin, MailingListAdmin, UnitAdmin, ViewAdmin
from txm.admin.people import GroupAdmin, UserAdmin
from txm.admin.records import ALARMS, LOG, SAMPLES

#: Models edited through forms (the others are only listed, viewed and perhaps deleted).
FORM_MODELS = ("user", "group", "unit", "mailinglist", "alarmmessage", "view")


def registry() -> dict[str, Any]:
    """Every model the panel manages, by URL name, in the order the index page shows them."""
    admins: list[Any] = [
        UserAdmin(), GroupAdmin(), UnitAdmin(),
        SAMPLES, ALARMS, MailingListAdmin(), AlarmMessageAdmin(), ViewAdmin(), LOG,
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
