"""Forms of the admin panel: field specs, what the browser sent, and the generic checks on it.

A form is a list of :class:`Field` specs; :func:`read_form` reads a :class:`FormInput` field by
field into typed values, what to show again, and an error per wrong field. The checks of one
model (unique names, channel lists ...) live with its admin. :func:`sentence` turns the library's
messages into the sentences the pages show.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

KINDS = ("text", "password", "int", "bool", "textarea", "select", "multi")


@dataclass
class Field:
    """One form field: how it is shown, and the generic checks on what was typed."""

    name: str
    label: str
    kind: str = "text"
    help: str = ""
    required: bool = False
    minimum: Optional[int] = None
    maximum: Optional[int] = None
    max_length: Optional[int] = None
    choices: Sequence[tuple[str, str]] = ()  # (value, label) for select and multi
    secret: bool = False  # not written to the log (keys, passwords)
    readonly: bool = False  # shown, not changeable by this user
    group: str = ""  # a heading the field is shown under

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown field kind {self.kind!r}")


class FormInput:
    """What the browser sent: every name with all its values (checkboxes, multi-selects)."""

    def __init__(self, data: Mapping[str, Sequence[str] | str] | None = None):
        self._data: dict[str, list[str]] = {}
        for key, value in (data or {}).items():
            self._data[key] = [value] if isinstance(value, str) else [str(v) for v in value]

    def get(self, name: str, default: str = "") -> str:
        values = self._data.get(name)
        return values[-1] if values else default

    def getall(self, name: str) -> list[str]:
        return list(self._data.get(name, []))

    def __contains__(self, name: str) -> bool:
        return name in self._data


@dataclass
class Form:
    """A form being shown: its fields, the values to show, errors by field, warnings."""

    fields: list[Field]
    values: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    saved: Any = None  # the object, once saved
    message: str = ""  # the log message of the save

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    def add_error(self, name: str, text: str) -> None:
        if name not in self.errors:
            self.errors[name] = text

    @property
    def groups(self) -> list[tuple[str, list[Field]]]:
        """Fields in runs sharing a heading, in order."""
        out: list[tuple[str, list[Field]]] = []
        for f in self.fields:
            if not out or out[-1][0] != f.group:
                out.append((f.group, []))
            out[-1][1].append(f)
        return out


def read_form(fields: list[Field], raw: FormInput,
              current: Mapping[str, Any] | None = None) -> tuple[Form, dict[str, Any]]:
    """The form as it was sent (the values to show again, an error per wrong field) and the typed values.

    A read-only field keeps its ``current`` value whatever was sent. Passwords are never shown again.
    """
    current = current or {}
    cleaned: dict[str, Any] = {}
    shown: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for f in fields:
        if f.readonly:
            shown[f.name] = current.get(f.name, "")
            cleaned[f.name] = _typed(f, shown[f.name])
            continue
        if f.kind == "bool":
            value = raw.get(f.name) not in ("", "0", "off", "no")
            shown[f.name] = cleaned[f.name] = value
            continue
        if f.kind == "multi":
            values = [v for v in raw.getall(f.name) if v != ""]
            shown[f.name] = values
            allowed = {c[0] for c in f.choices}
            bad = [v for v in values if v not in allowed]
            if bad:
                errors[f.name] = f"not a choice: {', '.join(bad[:3])}"
            cleaned[f.name] = list(dict.fromkeys(values))
            continue
        text = raw.get(f.name)
        if f.kind not in ("password", "textarea"):
            text = text.strip()
        shown[f.name] = "" if f.kind == "password" else text
        if text == "":
            if f.required:
                errors[f.name] = "This field is required."
            cleaned[f.name] = None if f.kind in ("int", "select") else ""
            continue
        if f.max_length is not None and len(text) > f.max_length:
            errors[f.name] = f"At most {f.max_length} characters (this has {len(text)})."
            continue
        if f.kind == "int":
            try:
                number = int(text)
            except ValueError:
                errors[f.name] = "Enter a whole number."
                continue
            if f.minimum is not None and number < f.minimum or f.maximum is not None and number > f.maximum:
                errors[f.name] = _range_text(f)
                continue
            cleaned[f.name] = number
        elif f.kind == "select":
            if text not in {c[0] for c in f.choices}:
                errors[f.name] = "Choose one of the offered values."
                continue
            cleaned[f.name] = text
        else:
            cleaned[f.name] = text
    return Form(fields, shown, errors), cleaned


def _range_text(f: Field) -> str:
    if f.minimum is not None and f.maximum is not None:
        return f"Enter a number from {f.minimum} to {f.maximum}."
    if f.minimum is not None:
        return f"Enter a number of at least {f.minimum}."
    return f"Enter a number of at most {f.maximum}."


def _typed(f: Field, value: Any) -> Any:
    if f.kind == "int":
        try:
            return int(value)
        except (TypeError, ValueError):
            return None
    return value


def sentence(text: str) -> str:
    """A library message (``the unit has 3 channels``) as a sentence for a page: capital, full stop."""
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."
