"""TTP Apps: modules that add a verb, switched on or off in ``[ttpapps]``.

An app named ``ok`` is found, in this order, as:

1. ``TTPApps/ok.py`` (or the package ``TTPApps/ok/``) in the configuration file's folder;
2. an entry point named ``ok`` in the ``txm.ttpapps`` group of an installed package, pointing
   to a module or straight to the verb function.

The app's module defines ``handle(call)``, a verb function as :mod:`txm.ttp.handler`
describes; the verb it answers is the app's name (``TTP /ok/...``). An app listed as ``off``
is not loaded, and its verb answers ``501 Not implemented`` like any unknown verb.
"""

from __future__ import annotations

import importlib.util
import sys
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Callable

from txm.config import Settings
from txm.errors import ConfigError

ENTRY_POINT_GROUP = "txm.ttpapps"
FOLDER = "TTPApps"


def app_folder(settings: Settings) -> Path:
    return settings.base_dir / FOLDER


def _load_file(name: str, path: Path) -> ModuleType:
    module_name = f"txm_ttpapps_{name}"
    spec = importlib.util.spec_from_file_location(
        module_name, path, submodule_search_locations=[str(path.parent)] if path.name == "__init__.py" else None)
    if spec is None or spec.loader is None:
        raise ConfigError(f"TTP App {name!r}: cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise ConfigError(f"TTP App {name!r} ({path}) failed to load: {type(exc).__name__}: {exc}") from None
    return module


def load_app(settings: Settings, name: str) -> Callable:
    """The verb function of the app ``name``; :class:`ConfigError` when it cannot be found or used."""
    folder = app_folder(settings)
    target: object = None
    where = ""
    for path in (folder / f"{name}.py", folder / name / "__init__.py"):
        if path.is_file():
            target, where = _load_file(name, path), str(path)
            break
    else:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name == name:
                try:
                    target = ep.load()
                except Exception as exc:
                    raise ConfigError(f"TTP App {name!r} (entry point {ep.value}) failed to load: "
                                      f"{type(exc).__name__}: {exc}") from None
                where = f"entry point {ep.value}"
                break
    if target is None:
        raise ConfigError(f"TTP App {name!r} is switched on but there is no {folder / (name + '.py')} "
                          f"and no installed '{ENTRY_POINT_GROUP}' entry point named {name!r}")
    handle = getattr(target, "handle", None) if isinstance(target, ModuleType) else target
    if not callable(handle):
        raise ConfigError(f"TTP App {name!r} ({where}) has no handle(call) function")
    return handle


def app_verbs(settings: Settings) -> dict[str, Callable]:
    """Verb table entries of every app switched on in ``[ttpapps]``."""
    verbs = {}
    for name, app in settings.ttpapps.items():
        if app.enabled:
            verbs[name.lower()] = load_app(settings, name)
    return verbs
