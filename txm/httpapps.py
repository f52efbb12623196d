"""HTTP Apps: Bottle apps that add pages to the web interface, switched on in ``[httpapps]``.

An app named ``iphone`` is found, in this order, as:

1. ``HTTPApps/iphone.py`` (or the package ``HTTPApps/iphone/``) in the configuration file's folder;
2. an entry point named ``iphone`` in the ``txm.httpapps`` group of an installed package,
   pointing to a module or straight to the factory function.

The module defines ``make_app(settings)`` returning a :class:`bottle.Bottle` (build it on
:class:`txm.webcore.WebCore` for logins, sessions and CSRF) or any WSGI callable. With
``iphone.url: iphone/`` it is mounted at ``/iphone/``; without a url it is loaded (so its
mistakes show at start) but not routed. docs/apps.md describes it for app writers.
"""

from __future__ import annotations

import importlib.util
import sys
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import bottle

from txm.config import Settings
from txm.errors import ConfigError

ENTRY_POINT_GROUP = "txm.httpapps"
FOLDER = "HTTPApps"
#: First path segments the web interface itself uses; an app may not be mounted there.
RESERVED = ("", "admin", "api", "static", "units", "views", "login", "logout", "password")


def app_folder(settings: Settings) -> Path:
    return settings.base_dir / FOLDER


def _load_file(name: str, path: Path) -> ModuleType:
    module_name = f"txm_httpapps_{name}"
    spec = importlib.util.spec_from_file_location(
        module_name, path, submodule_search_locations=[str(path.parent)] if path.name == "__init__.py" else None)
    if spec is None or spec.loader is None:
        raise ConfigError(f"HTTP App {name!r}: cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise ConfigError(f"HTTP App {name!r} ({path}) failed to load: {type(exc).__name__}: {exc}") from None
    return module


def find_factory(settings: Settings, name: str) -> tuple[Callable[[Settings], Any], str]:
    """The app's ``make_app`` and where it was found; :class:`ConfigError` when there is none."""
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
                    raise ConfigError(f"HTTP App {name!r} (entry point {ep.value}) failed to load: "
                                      f"{type(exc).__name__}: {exc}") from None
                where = f"entry point {ep.value}"
                break
    if target is None:
        raise ConfigError(f"HTTP App {name!r} is switched on but there is no {folder / (name + '.py')} "
                          f"and no installed '{ENTRY_POINT_GROUP}' entry point named {name!r}")
    factory = getattr(target, "make_app", None) if isinstance(target, ModuleType) else target
    if not callable(factory):
        raise ConfigError(f"HTTP App {name!r} ({where}) has no make_app(settings) function")
    return factory, where


def mount_point(name: str, url: str) -> str:
    """``iphone/`` -> ``/iphone/``; :class:`ConfigError` for a url the web interface uses itself."""
    path = "/" + url.strip().strip("/") + "/"
    first = path.strip("/").split("/", 1)[0]
    if first.lower() in RESERVED or "<" in path or "//" in path:
        taken = ", ".join(r + "/" for r in RESERVED if r)
        raise ConfigError(f"HTTP App {name!r}: url {url!r} is not free; the web interface uses / and {taken}")
    return path


def load_apps(settings: Settings) -> list[tuple[str, str | None, Any]]:
    """``(name, mount point or None, app)`` of every app switched on in ``[httpapps]``."""
    loaded = []
    seen: dict[str, str] = {}
    for name, entry in settings.httpapps.items():
        if not entry.enabled:
            continue
        prefix = mount_point(name, entry.url) if entry.url else None
        if prefix is not None and prefix in seen:
            raise ConfigError(f"HTTP Apps {seen[prefix]!r} and {name!r} both want the url {prefix}")
        factory, where = find_factory(settings, name)
        try:
            app = factory(settings)
        except Exception as exc:
            raise ConfigError(f"HTTP App {name!r} ({where}): make_app failed: {type(exc).__name__}: {exc}") from None
        if not callable(app):
            raise ConfigError(f"HTTP App {name!r} ({where}): make_app returned {type(app).__name__}, "
                              f"not a Bottle app or WSGI callable")
        if prefix is not None:
            seen[prefix] = name
        loaded.append((name, prefix, app))
    return loaded


def mount_apps(parent: bottle.Bottle, settings: Settings) -> list[str]:
    """Load every app switched on and mount those with a url; return the mount points."""
    mounted = []
    for name, prefix, app in load_apps(settings):
        if prefix is None:
            continue
        parent.mount(prefix, app)
        mounted.append(prefix)
    return mounted
