"""Who acts in the admin panel, what they may do, and the action log they write.

* :class:`Actor` is the staff user acting, with their permissions and the server's settings;
  :class:`Forbidden` is what a refused action raises (the routes answer it with 403).
* :func:`log_action` writes one :class:`txm.db.LogEntry`, the one way the panel writes the log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from txm.config import Settings
from txm.db import schema
from txm.errors import TxmError
from txm.permissions import permissions_of

#: Longest change message kept in the log.
MAX_MESSAGE = 4000


class Forbidden(TxmError):
    """The acting user may not do this (HTTP 403)."""


# --- who acts ------------------------------------------------------------------------------


@dataclass
class Actor:
    """The staff user acting in the panel, with their permissions, and the server's settings."""

    user: schema.User
    settings: Settings
    perms: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, user: schema.User, settings: Settings) -> "Actor":
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


# --- the action log ------------------------------------------------------------------------


def log_action(actor: Actor, action: str, model: str, obj_id: Any, obj_repr: str, message: str = "") -> schema.LogEntry:
    """Record one add / change / delete in the action log."""
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE - 1] + "…"
    return schema.LogEntry.create(user=actor.user.id, username=actor.user.username, action=action, model=model,
                                  object_id=str(obj_id if obj_id is not None else "")[:64],
                                  object_repr=str(obj_repr)[:200], change_message=message)
