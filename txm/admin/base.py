"""The shared machinery of the models edited through forms: :class:`ModelAdmin`.

A ModelAdmin lists its model (search, pages), builds its add and change forms, checks and saves
what was typed (:meth:`ModelAdmin.submit`) and deletes (:meth:`ModelAdmin.delete`), writing one
log entry for each change (:func:`describe_changes` words it). Subclasses for users and groups
live in :mod:`txm.admin.people`, for units, mailing lists, alarm messages and views in
:mod:`txm.admin.meters`. :func:`by_id` is the one "record by the id in the URL, or not found".
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import peewee as pw

from txm.admin.actor import Actor, Forbidden, log_action
from txm.admin.forms import Field, Form, FormInput, read_form, sentence
from txm.db import schema
from txm.db.sqlite import write_transaction
from txm.errors import InvalidValue, NotFound

#: Rows on one page of a list.
PAGE_SIZE = 50
#: The largest number an id or a page cursor may be: every engine's BIGINT (a signed 64-bit
#: integer). A larger one names no record, and the database drivers refuse to send it.
MAX_ID = 2 ** 63 - 1


def by_id(model: type[schema.BaseModel], obj_id: Any, what: str, gone: str = "") -> Any:
    """The row whose id is ``obj_id`` (text from a URL), or :class:`NotFound` (the routes' 404)."""
    try:
        number = int(obj_id)
    except (TypeError, ValueError):
        raise NotFound(f"there is no {what} {obj_id!r}") from None
    if abs(number) > MAX_ID:
        raise NotFound(f"there is no {what} with id {number}")
    row = model.get_or_none(model._meta.primary_key == number)
    if row is None:
        raise NotFound(f"there is no {what} with id {number}{gone}")
    return row


@dataclass
class Column:
    """One column of a model's list page: its heading, and how a row's value is found."""

    title: str
    value: Callable[[Any], Any]


class ModelAdmin:
    """How the panel manages one model edited through forms: its list, its add and change forms
    (checked, saved and logged by :meth:`submit`) and its deletion (:meth:`delete`).

    Subclasses name the model and fill in the hooks: :meth:`fields`, :meth:`initial`,
    :meth:`clean`, :meth:`save`, and where needed what the log shows of a change and what a
    deletion must check first.
    """

    name = ""  # the model's name in permission codenames and URLs
    verbose = ""
    plural = ""
    model: type[schema.BaseModel]
    description = ""
    editable = True  # has add and change forms
    deletable = True
    columns: list[Column] = []
    #: Read with its unit (a list naming each row's unit, searched by unit code too).
    with_unit = False
    search_fields: tuple[pw.Field, ...] = ()
    ordering: tuple = ()
    #: Linked ids the log names instead, by form field: ``{"units": schema.Unit.code}`` logs unit codes.
    logged_names: Mapping[str, pw.Field] = {}

    # --- reading ----------------------------------------------------------------------------

    def get(self, obj_id: Any) -> Any:
        return by_id(self.model, obj_id, self.verbose)

    def query(self, search: str = "") -> pw.ModelSelect:
        q = self.model.select(self.model, schema.Unit).join(schema.Unit) if self.with_unit else self.model.select()
        if search and self.search_fields:
            q = q.where(functools.reduce(operator.or_, (f.contains(search) for f in self.search_fields)))
        return q.order_by(*self.ordering) if self.ordering else q

    def page(self, search: str = "", page: int = 1) -> tuple[list, bool]:
        """One page of a small table (users, units, views ...): rows and whether more follow."""
        page = max(1, page)
        rows = list(self.query(search).limit(PAGE_SIZE + 1).offset((page - 1) * PAGE_SIZE))
        return rows[:PAGE_SIZE], len(rows) > PAGE_SIZE

    def repr(self, obj: Any) -> str:
        return str(obj)

    def page_context(self, obj: Any) -> dict[str, Any]:
        """What an object's change page shows besides the form (its unit's mailing list ...)."""
        return {}

    def refusal(self, actor: Actor, obj: Any) -> str:
        """Why the actor may not change or delete this object although they hold the permission
        to change its model ("" when they may): a user or group that holds more than the actor."""
        return ""

    def require_allowed(self, actor: Actor, obj: Any) -> None:
        """:class:`Forbidden` (the routes' 403) when :meth:`refusal` gives a reason."""
        reason = self.refusal(actor, obj)
        if reason:
            raise Forbidden(reason)

    # --- forms: the hooks -------------------------------------------------------------------

    def fields(self, actor: Actor, obj: Any, raw: FormInput | None = None) -> list[Field]:
        raise NotImplementedError

    def initial(self, obj: Any) -> dict[str, Any]:
        """Form values of an existing object (or of a new one when ``obj`` is None)."""
        raise NotImplementedError

    def clean(self, actor: Actor, form: Form, data: dict[str, Any], obj: Any, raw: FormInput) -> None:
        """Model checks on typed values; add errors to the form. ``data`` may be adjusted."""

    def save(self, actor: Actor, obj: Any, data: dict[str, Any]) -> Any:
        raise NotImplementedError

    def logged_values(self, obj: Any) -> dict[str, Any]:
        """The values the log compares to tell what a change did (names rather than ids)."""
        values = self.initial(obj)
        for key, name in self.logged_names.items():
            values[key] = names_of(values[key], name)
        return values

    def labels(self, actor: Actor, obj: Any) -> dict[str, str]:
        return {f.name: f.label for f in self.fields(actor, obj)}

    # --- forms: helpers for the hooks -------------------------------------------------------

    def clashes(self, obj: Any, condition: Any) -> bool:
        """Does a row other than ``obj`` already match (a unique name or code taken)?"""
        return self.model.select().where(condition & (self.model.id != (obj.id if obj else 0))).exists()

    def store(self, obj: Any, values: dict[str, Any]) -> Any:
        """Create the object from ``values`` (``obj`` None), or change it to them."""
        if obj is None:
            return self.model.create(**values)
        for key, value in values.items():
            setattr(obj, key, value)
        obj.save()
        return obj

    # --- forms: the work --------------------------------------------------------------------

    def new_form(self, actor: Actor, obj: Any = None) -> Form:
        """An empty add form, or a change form filled from the object."""
        fields = self.fields(actor, obj)
        values = self.initial(obj)
        return Form(fields, {f.name: values.get(f.name, "" if f.kind != "multi" else []) for f in fields})

    def submit(self, actor: Actor, raw: FormInput, obj: Any = None) -> Form:
        """Validate what was typed and, when it is all right, save it and log what changed.

        Returns the form: with ``errors`` (nothing saved; ``values`` hold what was typed) or with
        ``saved`` set to the object. Permission to add or change is checked here too.
        """
        if not self.editable:
            raise Forbidden(f"{self.plural} cannot be added or changed")
        actor.require("add" if obj is None else "change", self.name)
        if obj is not None:
            self.require_allowed(actor, obj)
        form, data = read_form(self.fields(actor, obj, raw), raw, self.initial(obj))
        self.clean(actor, form, data, obj, raw)
        if form.errors:
            return form
        before = self.snapshot(obj) if obj is not None else {}
        try:
            with write_transaction():
                saved = self.save(actor, obj, data)
                if obj is None:
                    message = "Added."
                    action = "add"
                else:
                    message = describe_changes(before, self.snapshot(saved), self.labels(actor, saved),
                                               secret={f.name for f in form.fields if f.secret})
                    action = "change"
                log_action(actor, action, self.name, saved.id, self.repr(saved), message)
        except pw.IntegrityError:
            # Two people saved the same code/name at once: the database's unique index decided.
            form.errors["__all__"] = ("Not saved: another record already uses one of these unique values "
                                      "(perhaps saved a moment ago). Check and try again.")
            return form
        form.saved = saved
        form.message = message
        return form

    def snapshot(self, obj: Any) -> dict[str, str]:
        """The logged values as text, to tell in the log what changed."""
        return {key: as_text(value) for key, value in self.logged_values(obj).items()}

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

    def delete(self, actor: Actor, obj: Any) -> str:
        """Delete one object after the confirmation page, with what depends on it; log it.
        Returns the log message."""
        if not self.deletable:
            raise Forbidden(f"{self.plural} cannot be deleted")
        actor.require("delete", self.name)
        self.require_allowed(actor, obj)
        problems = self.delete_problems(actor, obj)
        if problems:
            raise InvalidValue(" ".join(problems))
        obj_id, obj_repr = obj.id, self.repr(obj)
        message = self.prepare_delete(actor, obj)
        own = isinstance(obj, schema.User) and obj.id == actor.user.id
        with write_transaction():
            problems = self.delete_problems(actor, obj)  # again, now inside the transaction
            if problems:
                raise InvalidValue(" ".join(problems))
            obj.delete_instance(recursive=True)
            if own:  # the log keeps the name; the row it would point to is gone
                actor = Actor(schema.User(id=None, username=actor.user.username), actor.settings, actor.perms)
            log_action(actor, "delete", self.name, obj_id, obj_repr, message or "Deleted.")
        return message or "Deleted."


def as_text(value: Any) -> str:
    """A form value as the log writes it: ``yes``/``no``, lists joined by commas."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return "" if value is None else str(value)


def describe_changes(before: Mapping[str, str], after: Mapping[str, str], labels: Mapping[str, str],
                     secret: Iterable[str] = ()) -> str:
    """``Changed name from 'A' to 'B'; changed key.`` -- secret values are never written out."""
    secret = set(secret)
    parts = []
    for name, new in after.items():
        old = before.get(name, "")
        if old == new:
            continue
        label = labels.get(name, name)
        if name in secret:
            parts.append(f"changed {label}")
        else:
            parts.append(f"changed {label} from {_quote(old)} to {_quote(new)}")
    return sentence("; ".join(parts)) if parts else "No fields changed."


def _quote(value: str) -> str:
    return "(empty)" if value == "" else repr(value)


def unit_choices() -> list[tuple[str, str]]:
    """Every unit, as the choices of a select or multi field."""
    return [(str(u.id), str(u)) for u in schema.Unit.select().order_by(schema.Unit.code)]


def as_ids(values: Iterable[str]) -> list[int]:
    return [int(v) for v in values]


def linked(link_model: type[schema.BaseModel], owner_field: str, owner: Any, other_field: str) -> list[str]:
    """The owner's link rows (user-group, group-unit, user-permission ...) as form values, in order."""
    other_col = getattr(link_model, other_field)
    query = link_model.select(other_col).where(getattr(link_model, owner_field) == owner).order_by(other_col)
    return [str(other) for (other,) in query.tuples()]


def names_of(ids: Iterable[str], name: pw.Field) -> list[str]:
    """Linked rows' ids as the log names them (unit codes, user names), sorted; a gone row keeps its id."""
    names = {str(row.id): getattr(row, name.name) for row in name.model.select()}
    return sorted(names.get(i, i) for i in ids)


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
