"""Alarm email templates: Django's syntax, rendered by a Jinja2 sandbox as plain text.

An alarm email's subject and body are templates in the Django template syntax the Data Server
manual shows (``{{ level }}``, ``{{ unit.name }}``, ``{{ data.0 }}``,
``{% if data.0 %}...{% endif %}``), rendered by Jinja2's immutable sandbox narrowed further
(:class:`AlarmTemplates`). A template sees only ``level`` (int), ``data`` (list of text),
``received`` (text) and ``unit``, a :class:`UnitView` holding plain values: never the database
model and never the unit's key. No template can reach Python internals, files or the database,
nor exhaust the server's memory or time: :func:`render_message` renders in a separate process
with its own memory and time limits (:mod:`txm.alarms.renderer`), where the sandbox runs
(:func:`render_in_sandbox`). docs/alarms.md is the reference for administrators.

Nothing here touches the database; :func:`txm.alarms.render_alarm_email` picks the unit's saved
message (or the default) and renders it with :func:`render_message`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import re
import sys
import time
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import jinja2
import jinja2.compiler
import jinja2.filters
import jinja2.sandbox
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment

from txm.alarms import renderer
from txm.errors import InvalidValue

#: Longest rendered subject; a longer one is cut (a subject is one line).
MAX_SUBJECT_CHARS = 300
#: Longest rendered body; the rest is cut with a note.
MAX_BODY_CHARS = 100_000

DEFAULT_SUBJECT = "Alarm level {{ level }} from unit {{ unit }}"
DEFAULT_BODY = """\
Unit {{ unit.code }}{% if unit.name %} ({{ unit.name }}){% endif %} raised an alarm of level {{ level }}.
{% if received %}
Received by txm at {{ received }} UTC.
{% endif %}{% if data %}
Data sent with the alarm:
{% for item in data %}  data.{{ loop.index0 }}: {{ item }}
{% endfor %}{% endif %}"""


# --- what a template sees ------------------------------------------------------------------------


@dataclass(frozen=True)
class UnitView:
    """The unit as templates see it: plain values only (no key, no database access).

    ``{{ unit }}`` prints ``CODE (name)`` like the unit's own text; ``{{ unit.labels }}`` is the
    label of every channel (``ch<N>`` where none is set).
    """

    id: int
    code: str
    name: str
    channels: int
    labels: tuple[str, ...]
    show_labels: bool
    has_reports: bool
    created: str

    @classmethod
    def of(cls, unit: Any) -> "UnitView":
        """The view of a :class:`txm.db.Unit` (or anything with the same fields)."""
        created = getattr(unit, "created", None)
        return cls(id=int(unit.id), code=str(unit.code), name=str(getattr(unit, "name", "") or ""),
                   channels=int(unit.channels), labels=tuple(unit.channel_labels()),
                   show_labels=bool(getattr(unit, "show_labels", False)),
                   has_reports=bool(getattr(unit, "has_reports", True)),
                   created=created.strftime("%Y-%m-%d %H:%M:%S") if isinstance(created, dt.datetime) else "")

    def __str__(self) -> str:
        return f"{self.code} ({self.name})" if self.name else self.code


_UNIT_FIELDS = frozenset(UnitView.__dataclass_fields__)

# Django's filter arguments ``{{ x|default:"none" }}`` become Jinja's ``{{ x|default("none") }}``.
# Quoted strings are matched first and kept whole, so text inside them is never touched.
_TAG_RE = re.compile(r"(\{\{|\{%)(.*?)(\}\}|%\})", re.S)
_DJANGO_ARG_RE = re.compile(
    r"""("[^"]*"|'[^']*')|(\|\s*[A-Za-z_]\w*)\s*:\s*("[^"]*"|'[^']*'|[-+]?\d+(?:\.\d+)?|[A-Za-z_][\w.]*)""")


def _django_arguments(tag: re.Match) -> str:
    def one(match: re.Match) -> str:
        if match.group(1):
            return match.group(1)
        return f"{match.group(2)}({match.group(3)})"

    return tag.group(1) + _DJANGO_ARG_RE.sub(one, tag.group(2)) + tag.group(3)


class _DjangoFilterArguments(Extension):
    """Accept Django's ``|filter:arg`` form (the one bridge between the two syntaxes)."""

    def preprocess(self, source: str, name: str | None, filename: str | None = None) -> str:
        return _TAG_RE.sub(_django_arguments, source)


#: Longest text or list one template operation may build; longer is refused.
MAX_TEMPLATE_VALUE = 100_000
#: Largest whole number a template may build, in bits.
MAX_TEMPLATE_INT_BITS = 4096
#: Widest a % format field (width or precision) or a ``tojson`` indent may be.
MAX_TEMPLATE_WIDTH = 1000
#: Seconds a template (its subject and body together) may take to render, counted inside the
#: sandbox; the rendering process is killed a little later (renderer.RENDER_KILL_SECONDS).
RENDER_SECONDS = 2.0

#: Attributes of plain values (text, numbers, lists, dicts) a template may use: none builds a
#: value much larger than its inputs (``center``, ``ljust``, ``zfill``, ``format`` and the like are
#: left out), none changes anything.
_SAFE_VALUE_ATTRIBUTES = frozenset({
    "upper", "lower", "title", "capitalize", "casefold", "swapcase", "strip", "lstrip", "rstrip",
    "startswith", "endswith", "split", "rsplit", "splitlines", "partition", "rpartition", "find", "rfind",
    "index", "rindex", "count", "isdigit", "isalpha", "isalnum", "isnumeric", "isdecimal", "isspace",
    "isupper", "islower", "istitle", "removeprefix", "removesuffix", "real", "imag", "is_integer",
    "items", "keys", "values", "get",
})
_PLAIN_TYPES = (str, int, float, bool, list, tuple, dict, type(None))
#: What follows a ``%`` and its ``(mapping key)``: flags, width, precision.
_PERCENT_SPEC_RE = re.compile(r"[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


class TemplateTooBig(jinja2.sandbox.SecurityError):
    """A template tried to build a value beyond the limits, or ran too long."""


def _size(value: Any) -> int:
    return len(value) if isinstance(value, (str, list, tuple)) else 0


def _check_size(size: int) -> None:
    if size > MAX_TEMPLATE_VALUE:
        raise TemplateTooBig(f"the template builds a value of more than {MAX_TEMPLATE_VALUE} characters or items")


def _check_percent(template: Any) -> None:
    """``"%1000000000s" % x`` would build a huge text: widths and precisions are kept small.

    Each field is read as Python reads it: ``%``, then a ``(mapping key)`` (whose parentheses
    may nest), then flags, width and precision, so ``"%(a)1000000000s"`` is seen too.
    """
    if not isinstance(template, str):
        return
    start = template.find("%")
    while start != -1:
        at = start + 1
        if template.startswith("(", at):
            depth, at = 1, at + 1
            while at < len(template) and depth:
                depth += {"(": 1, ")": -1}.get(template[at], 0)
                at += 1
        spec = _PERCENT_SPEC_RE.match(template, at)
        for number in spec.groups():
            if number == "*" or (number and int(number) > MAX_TEMPLATE_WIDTH):
                raise TemplateTooBig(f"a % format width or precision over {MAX_TEMPLATE_WIDTH}")
        start = template.find("%", spec.end() + 1)  # past the conversion character (``%%`` too)


def _bounded_center(value: Any, width: int = 80) -> str:
    _check_size(int(width))
    return jinja2.filters.do_center(value, width)


def _bounded_indent(s: str, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    _check_size((len(width) if isinstance(width, str) else int(width)) * (str(s).count("\n") + 1) + len(str(s)))
    return jinja2.filters.do_indent(s, width, first, blank)


def _bounded_format(value: str, *args: Any, **kwargs: Any) -> str:
    _check_percent(value)
    return jinja2.filters.do_format(value, *args, **kwargs)


@jinja2.pass_eval_context
def _bounded_replace(eval_ctx, s: str, old: str, new: str, count: int | None = None) -> str:
    text, old, new = str(s), str(old), str(new)
    times = text.count(old) if old else len(text) + 1
    if count is not None and count >= 0:
        times = min(times, count)
    _check_size(len(text) + times * max(0, len(new) - len(old)))
    return jinja2.filters.do_replace(eval_ctx, s, old, new, count)


def _bounded_batch(value: Any, linecount: int, fill_with: Any = None):
    if fill_with is not None:
        _check_size(int(linecount))  # the last batch is filled up to linecount items
    return jinja2.filters.do_batch(value, linecount, fill_with)


def _bounded_slice(value: Any, slices: int, fill_with: Any = None):
    _check_size(int(slices))
    return jinja2.filters.sync_do_slice(value, slices, fill_with)


@jinja2.pass_eval_context
def _bounded_tojson(eval_ctx, value: Any, indent: int | str | None = None) -> str:
    if indent is not None and (len(indent) if isinstance(indent, str) else int(indent)) > MAX_TEMPLATE_WIDTH:
        raise TemplateTooBig(f"a tojson indent over {MAX_TEMPLATE_WIDTH}")
    return jinja2.filters.do_tojson(eval_ctx, value, indent)


@jinja2.pass_environment
def _bounded_wordwrap(environment, s: str, width: int = 79, break_long_words: bool = True,
                      wrapstring: str | None = None, break_on_hyphens: bool = True) -> str:
    text = str(s)
    joint = len(environment.newline_sequence if wrapstring is None else str(wrapstring))
    # Two neighbouring lines hold at least ``width`` characters between them, so a paragraph
    # wraps into at most 2 * len / width + 1 lines, each followed by the wrap string.
    lines = 2 * len(text) // max(1, int(width)) + text.count("\n") + 2
    _check_size(len(text) + lines * joint)
    return jinja2.filters.do_wordwrap(environment, s, width, break_long_words, wrapstring, break_on_hyphens)


@jinja2.pass_eval_context
def _bounded_join(eval_ctx, value: Any, d: str = "", attribute: str | int | None = None) -> str:
    items = list(value)
    if attribute is None:
        _check_size(sum(len(str(item)) for item in items) + max(0, len(items) - 1) * len(str(d)))
    return jinja2.filters.do_join(eval_ctx, items, d, attribute)


class _BoundedCodeGenerator(jinja2.compiler.CodeGenerator):
    """Compiles ``a ~ b`` to a join that refuses values beyond the limit."""

    def visit_Concat(self, node, frame) -> None:
        self.write("environment.bounded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class AlarmTemplates(ImmutableSandboxedEnvironment):
    """The sandbox alarm templates run in: plain text, nothing but the context's values.

    On top of Jinja2's immutable sandbox (no ``_`` attributes, no Python internals, no changing
    lists or dicts): no globals but ``range``; of a :class:`UnitView` only its fields; of text,
    numbers and lists only the methods in :data:`_SAFE_VALUE_ATTRIBUTES`; no operation that
    builds a value beyond :data:`MAX_TEMPLATE_VALUE`; :func:`_render` adds a time limit.
    """

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self) -> None:
        super().__init__(autoescape=False, undefined=jinja2.ChainableUndefined, keep_trailing_newline=True,
                         extensions=[_DjangoFilterArguments])
        self.globals = {"range": self.globals["range"]}
        self.filters.update(center=_bounded_center, indent=_bounded_indent, format=_bounded_format,
                            replace=_bounded_replace, join=_bounded_join, batch=_bounded_batch,
                            slice=_bounded_slice, tojson=_bounded_tojson, wordwrap=_bounded_wordwrap)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if isinstance(obj, UnitView):
            return attr in _UNIT_FIELDS
        if isinstance(obj, _PLAIN_TYPES) and attr not in _SAFE_VALUE_ATTRIBUTES:
            return False
        return super().is_safe_attribute(obj, attr, value)

    def wrap_str_format(self, value: Any) -> None:
        return None  # str.format and format_map are not offered at all (see is_safe_attribute)

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        numbers = isinstance(left, int) and isinstance(right, int)
        if operator == "*":
            if numbers:
                if left.bit_length() + right.bit_length() > MAX_TEMPLATE_INT_BITS:
                    raise TemplateTooBig("the template builds too large a number")
            elif isinstance(right, int) and _size(left):
                _check_size(_size(left) * right)
            elif isinstance(left, int) and _size(right):
                _check_size(_size(right) * left)
        elif operator == "**" and numbers and right > 0:
            if max(1, left.bit_length()) * right > MAX_TEMPLATE_INT_BITS:
                raise TemplateTooBig("the template builds too large a number")
        elif operator == "%":
            _check_percent(left)
        elif operator == "+":
            _check_size(_size(left) + _size(right))
        return super().call_binop(context, operator, left, right)

    @staticmethod
    def bounded_concat(values: Iterable[Any]) -> str:
        parts = [str(v) for v in values]
        _check_size(sum(map(len, parts)))
        return "".join(parts)


@functools.lru_cache(maxsize=1)
def _environment() -> AlarmTemplates:
    """One environment for the process: nothing a template does can change it."""
    return AlarmTemplates()


@functools.lru_cache(maxsize=128)
def _compiled(text: str) -> jinja2.Template:
    """The template compiled once for the rendering process's life (compiling costs more than
    rendering), and shared by its renders: they cannot change it."""
    return _environment().from_string(text)


def check_template(text: str) -> None:
    """Raise :class:`InvalidValue` naming the line and the problem when ``text`` does not compile.

    Compiled in the rendering process, like every template text a person typed.
    """
    renderer.default_process().check(text or "")


def compile_problem(text: str) -> str:
    """``line N: problem`` when ``text`` does not compile, else ""; what the rendering process
    answers for :func:`check_template`."""
    try:
        _environment().from_string(text)
    except jinja2.TemplateSyntaxError as exc:
        return f"line {exc.lineno}: {exc.message}"
    except (RecursionError, SyntaxError, ValueError) as exc:  # too deeply nested for Python
        return f"the template cannot be compiled: {type(exc).__name__}: {exc}"
    return ""


def _render(text: str, context: dict[str, Any], limit: int, deadline: float) -> str:
    """Render, stopping at ``limit`` characters and at ``deadline`` (``time.monotonic()``)."""
    template = _compiled(text)

    def timer(frame, event, arg):
        # A trace function sees every line the template's compiled code runs: a loop that goes
        # on too long is stopped at its next step, wherever it is. (Not a single C call: the
        # rendering process's kill is for those.)
        if time.monotonic() > deadline:
            raise TemplateTooBig(f"the template took longer than {RENDER_SECONDS:g} s")
        return timer

    out: list[str] = []
    size = 0
    previous = sys.gettrace()
    sys.settrace(timer)
    try:
        for chunk in template.generate(context):
            out.append(chunk)
            size += len(chunk)
            if size > limit:
                break
    finally:
        sys.settrace(previous)
    return "".join(out)


def _context(unit: Any, level: int, data: Sequence[str], received: dt.datetime | None) -> dict[str, Any]:
    """What a template sees, as plain JSON values (it travels to the rendering process)."""
    view = unit if isinstance(unit, UnitView) else UnitView.of(unit)
    return {"unit": dataclasses.asdict(view), "level": int(level), "data": [str(item) for item in data],
            "received": received.strftime("%Y-%m-%d %H:%M:%S") if received else ""}


def _subject_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= MAX_SUBJECT_CHARS else line[:MAX_SUBJECT_CHARS - 3] + "..."


def _body_text(text: str) -> str:
    if len(text) > MAX_BODY_CHARS:
        text = text[:MAX_BODY_CHARS] + "\n[message cut at %d characters]\n" % MAX_BODY_CHARS
    return text


def render_in_sandbox(subject: str, body: str, context: dict[str, Any]) -> tuple[str, str]:
    """Render a subject and body template here, in the sandbox alone, with a context made by
    :func:`_context`. The rendering process runs this; so does the built-in default message,
    which no person wrote. ``MemoryError`` passes through (the process answers it).
    """
    unit = dict(context["unit"])
    values = {**context, "unit": UnitView(**{**unit, "labels": tuple(unit["labels"])})}
    deadline = time.monotonic() + RENDER_SECONDS
    rendered = []
    for part, text, limit in (("subject", subject, MAX_SUBJECT_CHARS * 4), ("body", body, MAX_BODY_CHARS)):
        try:
            rendered.append(_render(text or "", values, limit, deadline))
        except jinja2.TemplateSyntaxError as exc:
            raise InvalidValue(f"{part}: line {exc.lineno}: {exc.message}") from None
        except MemoryError:
            raise
        except Exception as exc:  # any failure inside the sandbox is the template's
            raise InvalidValue(f"{part}: {type(exc).__name__}: {exc}") from None
    return _subject_line(rendered[0]), _body_text(rendered[1])


def render_message(subject: str, body: str, unit: Any, level: int, data: Sequence[str],
                   received: dt.datetime | None = None) -> tuple[str, str]:
    """Render a subject and body template (saved or not, e.g. for a preview) in the rendering
    process, within its memory and time limits.

    Raises :class:`InvalidValue` for a template that does not compile or fails while rendering
    (such as ``{{ unit.__class__() }}``), needs more memory or takes longer than allowed.
    """
    return renderer.default_process().render(subject or "", body or "", _context(unit, level, data, received))


def render_default_message(unit: Any, level: int, data: Sequence[str],
                           received: dt.datetime | None = None) -> tuple[str, str]:
    """The built-in default message, rendered here: it is txm's own template, so an email can
    always be made, even when the rendering process cannot start."""
    return render_in_sandbox(DEFAULT_SUBJECT, DEFAULT_BODY, _context(unit, level, data, received))
