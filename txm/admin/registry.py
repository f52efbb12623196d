"""Every model the admin panel manages, by the name in its URLs, and the index page's sections."""

from __future__ import annotations

from txm.admin.actor import Actor
from txm.admin.base import ModelAdmin
from txm.admin.meters import AlarmMessageAdmin, MailingListAdmin, UnitAdmin, ViewAdmin
from txm.admin.people import GroupAdmin, UserAdmin
from txm.admin.records import ALARMS, LOG, QUARANTINE, SAMPLES, RecordAdmin


def registry() -> dict[str, ModelAdmin | RecordAdmin]:
    """Every model the panel manages, by URL name, in the order the index page shows them."""
    admins: list[ModelAdmin | RecordAdmin] = [
        UserAdmin(), GroupAdmin(), UnitAdmin(),
        SAMPLES, ALARMS, QUARANTINE, MailingListAdmin(), AlarmMessageAdmin(), ViewAdmin(), LOG,
    ]
    return {admin.name: admin for admin in admins}


#: Models edited through forms (the others are only listed, viewed and perhaps deleted).
FORM_MODELS = tuple(name for name, admin in registry().items() if admin.editable)


SECTIONS = (("Users and permissions", ("user", "group")), ("Units and data", ("unit", "sample", "alarm", "quarantinedrecord")),
            ("Email and alarms", ("mailinglist", "alarmmessage")), ("Displays", ("view",)),
            ("Records", ("logentry",)))


def visible_sections(actor: Actor) -> list[tuple[str, list[ModelAdmin | RecordAdmin]]]:
    """The index page: each section with the models the actor may see."""
    by_name = registry()
    out = []
    for title, names in SECTIONS:
        admins = [by_name[name] for name in names if actor.may("view", name)]
        if admins:
            out.append((title, admins))
    return out
