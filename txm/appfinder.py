"""Finding an App by name: a file or package in a folder beside the configuration file, or an
installed entry point. TTP Apps (:mod:`txm.ttp.apps`) and HTTP Apps (:mod:`txm.httpapps`) are
both found this way; each kind then takes its own function from what was found.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Callable

from txm.config import Settings
from txm.errors import ConfigError


@dataclass(frozen=True)
class AppKind:
    """One kind of App: ``label`` for messages ("TTP App"), the ``folder`` name next to the
    configuration file, the entry point ``group``, and the ``function`` an app module defines
    (its name, then its arguments for messages: ``"handle(call)"``)."""

    label: str
    folder: str
    group: str
    function: str

    def folder_path(self, settings: Settings) -> Path:
        return settings.base_dir / self.folder

    def _load_file(self, name: str, path: Path) -> ModuleType:
        module_name = f"txm_{self.folder.lower()}_{name}"
        spec = importlib.util.spec_from_file_location(
            module_name, path,
            submodule_search_locations=[str(path.parent)] if path.name == "__init__.py" else None)
        if spec is None or spec.loader is None:
            raise ConfigError(f"{self.label} {name!r}: cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(module_name, None)
            raise ConfigError(f"{self.label} {name!r} ({path}) failed to load: {type(exc).__name__}: {exc}") from None
        return module

    def find(self, settings: Settings, name: str) -> tuple[Callable, str]:
        """The app's function (``function`` of its module, or what its entry point names)
        and where it was found; :class:`ConfigError` saying why when there is none."""
        folder = self.folder_path(settings)
        target: object = None
        where = ""
        for path in (folder / f"{name}.py", folder / name / "__init__.py"):
            if path.is_file():
                target, where = self._load_file(name, path), str(path)
                break
        else:
            for ep in entry_points(group=self.group):
                if ep.name == name:
                    try:
                        target = ep.load()
                    except Exception as exc:
                        raise ConfigError(f"{self.label} {name!r} (entry point {ep.value}) failed to load: "
                                          f"{type(exc).__name__}: {exc}") from None
                    where = f"entry point {ep.value}"
                    break
        if target is None:
            raise ConfigError(f"{self.label} {name!r} is switched on but there is no {folder / (name + '.py')} "
                              f"and no installed '{self.group}' entry point named {name!r}")
        attribute = self.function.partition("(")[0]
        function = getattr(target, attribute, None) if isinstance(target, ModuleType) else target
        if not callable(function):
            raise ConfigError(f"{self.label} {name!r} ({where}) has no {self.function} function")
        return function, where
