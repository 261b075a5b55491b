"""Name -> "module:attr" plug-in tables, imported lazily and extended by entry points."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from twinloop.errors import TwinloopError

T = TypeVar("T")


class Registry(Generic[T]):
    """One kind of plug-in: built-ins by name, more from an entry-point group.

    Importing lazily keeps optional libraries optional: a missing one becomes a
    single clear error naming the plug-in and what to install.
    """

    def __init__(self, kind: str, group: str, builtins: dict[str, str],
                 error: type[TwinloopError] = TwinloopError) -> None:
        self.kind, self.group, self._table, self._error = kind, group, dict(builtins), error
        self._loaded_entry_points = False

    def _entry_points(self) -> None:
        if not self._loaded_entry_points:
            for ep in entry_points(group=self.group):
                self._table.setdefault(ep.name, ep.value)
            self._loaded_entry_points = True

    def names(self) -> list[str]:
        """Every registered name, built-in or from an installed plug-in."""
        self._entry_points()
        return sorted(self._table)

    def register(self, name: str, target: str) -> None:
        """Add or replace a plug-in at run time (``"package.module:Class"``)."""
        self._table[name] = target

    def get(self, name: str) -> T:
        """Import and return the plug-in called ``name``."""
        self._entry_points()
        target = self._table.get(name)
        if target is None:
            raise self._error(f"unknown {self.kind} '{name}'; known: {', '.join(self.names())}")
        module_name, _, attr = target.partition(":")
        try:
            module: Any = importlib.import_module(module_name)
        except ImportError as err:
            raise self._error(
                f"{self.kind} '{name}' needs a library that is not installed ({err.name}); "
                f"install it, e.g. pip install {err.name}") from err
        try:
            return getattr(module, attr)
        except AttributeError as err:
            raise self._error(f"{self.kind} '{name}': {target} does not exist") from err
