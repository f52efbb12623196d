"""The shared machinery of the models edited through forms: :class:`ModelAdmin`.

A ModelAdmin lists its model (search, pages), builds its add and change forms, checks and saves
what was typed (:func:`submit`) and deletes (:func:`delete`), writing one log entry for each
change. Subclasses for users and groups live in :mod:`txm.admin.people`, for units, mailing
lists, alarm messages and views in :mod:`txm.admin.meters`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

import peewee as pw

from txm import db as m
from txm.admin.actor import Actor, Forbidden, describe_changes, log_action
from txm.admin.forms import Field, Form, FormInput, read_input
from txm.errors import InvalidValue, NotFound

#: Rows on one page of a list.
PAGE_SIZE = 50


def by_id(model: type[m.BaseModel], obj_id: Any, what: str, gone: str = "") -> Any:
    """The row whose id is ``obj_id`` (text from a URL), or :class:`NotFound` (the routes' 404)."""
    try:
        number = int(obj_id)
    except (TypeError, ValueError):
        raise NotFound(f"there is no {what} {obj_id!r}") from None
    row = model.get_or_none(model._meta.primary_key == number)
    if row is None:
        raise NotFound(f"there is no {what} with id {number}{gone}")
    return row


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
        return by_id(self.model, obj_id, self.verbose)

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
        return {k: as_text(v) for k, v in values.items()}

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


def as_text(value: Any) -> str:
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



def unit_choices() -> list[tuple[str, str]]:
    return [(str(u.id), str(u)) for u in m.Unit.select().order_by(m.Unit.code)]



def as_ids(values: Iterable[str]) -> list[int]:
    return [int(v) for v in values]


def set_links(link_model, owner_field: str, owner, other_field: str, wanted: Iterable[Any]) -> None:
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
