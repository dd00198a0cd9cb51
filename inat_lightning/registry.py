"""One way to pick an implementation by name: a :class:`Registry`.

A setting that names a choice (``cam.method=GradCAM``, ``open_set.score=energy``, a cue
detector, a macro metric, the bias audit) looks it up in that choice's registry. The project
registers its built-ins; your own package adds more without editing the project's files, in
either of two ways::

    # in code your command imports
    from inat_lightning.analysis.gradcam import CAM_METHODS
    CAM_METHODS.register("MyCAM", MyCAM)

    # or, for an installed package, an entry point (pyproject.toml)
    [project.entry-points."inat_lightning.cam_methods"]
    MyCAM = "my_pkg.cams:MyCAM"

Entry points are listed on the first lookup of a name that is not registered yet, and one is
loaded when its name is picked. A name read from
a checkpoint or a run folder goes through the same lookup, so it can only pick something already
installed: no file ever names a module to import. (Objects a command's own config builds, the
data module or a scrape backend, are Hydra ``_target_`` nodes instead: see ``docs/extending.md``.)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from importlib.metadata import EntryPoint, entry_points
from typing import Generic, TypeVar

T = TypeVar("T")

#: entry point groups are ``inat_lightning.<group>``
GROUP_PREFIX = "inat_lightning."


class Registry(Generic[T]):
    """Names to implementations of one choice, in registration order.

    Args:
        kind: what is chosen, for errors (``"CAM method"``).
        key: the setting that names it, for errors (``"cam.method"``).
        group: the entry point group's suffix (``"cam_methods"`` → ``inat_lightning.cam_methods``).
        builtins: ``"module:attribute"`` of a callable returning the built-in entries, imported on
            first use (a registry of a torch-heavy choice costs nothing to import).
    """

    def __init__(self, kind: str, key: str, group: str, builtins: str | None = None) -> None:
        self.kind, self.key, self.group = kind, key, GROUP_PREFIX + group
        self._builtins = builtins
        self._entries: dict[str, T] = {}
        self._found_plugins: dict[str, EntryPoint] | None = None

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Add ``obj`` under ``name``; without ``obj``, a decorator. A name taken by another
        object is refused (``ValueError``): a plugin cannot silently replace a built-in."""

        def add(found: T) -> T:
            held = self._entries_with_builtins().get(name)
            if held is not None and held is not found:
                raise ValueError(f"{self.kind} {name!r} is already registered ({held!r})")
            self._entries[name] = found
            return found

        return add if obj is None else add(obj)

    def get(self, name: object, key: str | None = None) -> T:
        """The entry named ``name``; else a one-line ``ValueError`` naming the setting (``key``,
        by default the registry's) and the choices. An installed plugin is loaded when first
        picked: a broken one fails only the command that picks it."""
        key = key or self.key
        if not isinstance(name, str):
            raise ValueError(f"{key}={name!r}: {self.choices()}")
        entries = self._entries_with_builtins()
        if name not in entries and name in self._plugins():
            entries[name] = self._load(self._plugins()[name])
        if name not in entries:
            raise ValueError(f"{key}={name!r}: unknown {self.kind}; {self.choices()}")
        return entries[name]

    def check(self, name: object, key: str | None = None) -> None:
        """``ValueError`` unless ``name`` is registered (a setting checked before any work)."""
        self.get(name, key)

    def names(self) -> tuple[str, ...]:
        """Every name: registered ones, then installed plugins' (not loaded by this)."""
        entries = self._entries_with_builtins()
        return (*entries, *(n for n in self._plugins() if n not in entries))

    def choices(self) -> str:
        return "one of " + ", ".join(self.names())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def items(self) -> list[tuple[str, T]]:
        """Every entry, installed plugins loaded."""
        return [(n, self.get(n)) for n in self.names()]

    def _entries_with_builtins(self) -> dict[str, T]:
        if self._builtins is not None:
            module, _, attribute = self._builtins.partition(":")
            found = getattr(importlib.import_module(module), attribute)()
            self._builtins = None
            self._entries = {**found, **self._entries}
        return self._entries

    def _plugins(self) -> dict[str, EntryPoint]:
        """The installed entry points of this registry's group, read once."""
        if self._found_plugins is None:
            self._found_plugins = {p.name: p for p in entry_points(group=self.group)}
        return self._found_plugins

    def _load(self, point: EntryPoint) -> T:
        try:
            return point.load()
        except Exception as e:  # noqa: BLE001 - an installed plugin's failure, named
            raise ValueError(
                f"{self.key}={point.name!r}: the {self.group} entry point {point.value} cannot "
                f"load: {type(e).__name__}: {e}"
            ) from e
