"""Every model the admin panel manages, by the name in its URLs, and the index page's sections."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from txm.admin.actor import Actor
from txm.admin.meters import AlarmMessageAdmin, MailingListAdmin, UnitAdmin, ViewAdmin
from txm.admin.people import GroupAdmin, UserAdmin

#: Models edited through forms (the others are only listed, viewed and perhaps deleted).
FORM_MODELS = ("user", "group", "unit", "mailinglist", "alarmmessage", "view")


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
