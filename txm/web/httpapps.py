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

from typing import Any

import bottle

from txm.appfinder import AppKind
from txm.config import Settings
from txm.errors import ConfigError

#: First path segments the web interface itself uses; an app may not be mounted there.
RESERVED = ("", "admin", "api", "static", "units", "views", "login", "logout", "password")
KIND = AppKind("HTTP App", "HTTPApps", "txm.httpapps", "make_app(settings)")


def mount_point(name: str, url: str) -> str:
    """``iphone/`` -> ``/iphone/``; :class:`ConfigError` for a url the web interface uses itself."""
    path = "/" + url.strip().strip("/") + "/"
    first = path.strip("/").split("/", 1)[0]
    if first.lower() in RESERVED or "<" in path or "//" in path:
        taken = ", ".join(r + "/" for r in RESERVED if r)
        raise ConfigError(f"HTTP App {name!r}: url {url!r} is not free; the web interface uses / and {taken}")
    return path


def _switched_on(settings: Settings):
    """``(name, mount point or None, factory, where found)`` of every app switched on in
    ``[httpapps]``; :class:`ConfigError` for a url taken twice or an app that cannot be loaded."""
    seen: dict[str, str] = {}
    for name, entry in settings.httpapps.items():
        if not entry.enabled:
            continue
        prefix = mount_point(name, entry.url) if entry.url else None
        if prefix is not None and prefix in seen:
            raise ConfigError(f"HTTP Apps {seen[prefix]!r} and {name!r} both want the url {prefix}")
        if prefix is not None:
            seen[prefix] = name
        factory, where = KIND.find(settings, name)
        yield name, prefix, factory, where


def find_apps(settings: Settings) -> list[tuple[str, str | None, str]]:
    """``(name, mount point or None, where found)`` of every app switched on: each is imported,
    not built, so that ``txm serve`` stops on a missing or broken one before it touches the
    database (the web process builds them)."""
    return [(name, prefix, where) for name, prefix, _, where in _switched_on(settings)]


def load_apps(settings: Settings) -> list[tuple[str, str | None, Any]]:
    """``(name, mount point or None, app)`` of every app switched on in ``[httpapps]``."""
    loaded = []
    for name, prefix, factory, where in _switched_on(settings):
        try:
            app = factory(settings)
        except Exception as exc:
            raise ConfigError(f"HTTP App {name!r} ({where}): make_app failed: {type(exc).__name__}: {exc}") from None
        if not callable(app):
            raise ConfigError(f"HTTP App {name!r} ({where}): make_app returned {type(app).__name__}, "
                              f"not a Bottle app or WSGI callable")
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
