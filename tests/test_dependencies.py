"""Every third-party module that txm, its examples, tests and benchmarks import is declared.

A plain ``pip install .`` must be enough for ``txm serve``, and ``pip install '.[test]'`` for the
tests and benchmarks: a module that merely happens to be installed on the developer's machine
(jinja2 once was) is found here, not by the first user of a fresh machine. Imports are read
with ``ast``, so an import inside a function or a ``try`` block counts like any other.
"""

from __future__ import annotations

import ast
import functools
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from txm.db.database import _DRIVERS

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent

#: The folders read, and the requirement lists of pyproject.toml their imports may come from
#: ("dependencies" is [project] dependencies, any other name an extra). Examples are TTP and
#: HTTP Apps that run inside txm, so they get no more than txm itself.
FOLDERS = {
    "txm": ("dependencies",),
    "examples": ("dependencies",),
    "tests": ("dependencies", "test"),
    "bench": ("dependencies", "test"),
}

#: Modules txm imports only for an optional feature, and the one extra that must declare each.
#: These and no others may come from an extra in txm/. The database drivers are loaded by name
#: (txm.db), so they are checked as txm's imports even where no import statement names them.
OPTIONAL_IMPORTS = {"psycopg2": "postgres", "pymysql": "mysql"}

FIRST_PARTY = {"txm", "tests", "bench"}


def imported_modules(path: Path) -> set[str]:
    """The top-level names of the modules that ``path`` imports absolutely, anywhere in it."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.partition(".")[0])
    return names


def local_modules(folder: Path) -> set[str]:
    """Modules that sit beside a file and are imported as top-level names (``ttpload``):
    ``python bench/x.py`` puts the file's own folder on sys.path. In a package (tests/ and its
    folders) nothing is: its modules are imported by their full names (``tests.smtp``)."""
    if (folder / "__init__.py").exists():
        return set()
    return ({p.stem for p in folder.glob("*.py")}
            | {p.parent.name for p in folder.glob("*/__init__.py")})


def third_party_imports(top: str) -> dict[str, set[str]]:
    """Each third-party module imported under the folder ``top``, with the files importing it."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO / top).rglob("*.py")):
        ours = FIRST_PARTY | local_modules(path.parent)
        for module in imported_modules(path) - ours - set(sys.stdlib_module_names):
            found.setdefault(module, set()).add(path.relative_to(REPO).as_posix())
    return found


@functools.cache
def requirement_lists() -> dict[str, tuple[Requirement, ...]]:
    """pyproject.toml's requirement lists by name: "dependencies", then each extra."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    lists = {"dependencies": project["dependencies"], **project.get("optional-dependencies", {})}
    return {name: tuple(Requirement(line) for line in lines) for name, lines in lists.items()}


def problem(module: str, files: set[str], lists: tuple[str, ...]) -> str | None:
    """Why ``module`` is not properly declared in ``lists``, or None when it is."""
    requirements = {canonicalize_name(req.name): req
                    for name in lists for req in requirement_lists()[name]}
    where = ", ".join(sorted(files))
    wanted = " or ".join("[project] dependencies" if name == "dependencies" else f"the {name} extra"
                         for name in lists)
    distributions = packages_distributions().get(module)
    if not distributions:
        # A backport declared only for other Pythons (tomli below 3.11) is rightly absent here.
        req = requirements.get(canonicalize_name(module))
        if req is not None and req.marker is not None and not req.marker.evaluate():
            return None
        return (f"{module} (imported by {where}) is not installed, so no distribution can be "
                f"found for it: declare it in pyproject.toml {wanted}, and install the project "
                f"with its test extra (scripts/test does)")
    if any(canonicalize_name(dist) in requirements for dist in distributions):
        return None
    return (f"{module} (distribution {', '.join(sorted(set(distributions)))}, imported by {where}) "
            f"is not declared in pyproject.toml {wanted}")


@pytest.mark.parametrize("top", sorted(FOLDERS))
def test_every_import_is_declared(top):
    imports = third_party_imports(top)
    if top == "txm":
        for module, _extra in _DRIVERS.values():
            imports.setdefault(module, set()).add("txm/db/database.py (by name)")
    problems = []
    for module, files in sorted(imports.items()):
        lists = FOLDERS[top]
        if top == "txm" and module in OPTIONAL_IMPORTS:
            lists = (*lists, OPTIONAL_IMPORTS[module])
        found = problem(module, files, lists)
        if found:
            problems.append(found)
    if problems:
        pytest.fail(f"{top}/ imports undeclared modules:\n  " + "\n  ".join(problems), pytrace=False)


def test_optional_imports_are_the_database_drivers():
    """The drivers txm.db loads by name, each with the extra its error message tells users to
    install, are exactly the modules this test lets txm take from an extra."""
    assert {module: extra for module, extra in _DRIVERS.values()} == OPTIONAL_IMPORTS


def test_the_checked_folders_exist_and_the_test_extra_is_declared():
    for top in FOLDERS:
        assert (REPO / top).is_dir(), top
    assert "test" in requirement_lists()
