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

from typing import Callable

from txm.appfinder import AppKind
from txm.config import Settings

KIND = AppKind("TTP App", "TTPApps", "txm.ttpapps", "handle(call)")


def load_app(settings: Settings, name: str) -> Callable:
    """The verb function of the app ``name``; :class:`ConfigError` when it cannot be found or used."""
    return KIND.find(settings, name)[0]


def app_verbs(settings: Settings) -> dict[str, Callable]:
    """Verb table entries of every app switched on in ``[ttpapps]``."""
    verbs = {}
    for name, app in settings.ttpapps.items():
        if app.enabled:
            verbs[name.lower()] = load_app(settings, name)
    return verbs
