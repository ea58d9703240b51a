"""Name -> constructor registries: how models, algorithms and task families are found by name.

A new model, algorithm or task family is a registry entry, never a new branch::

    MODELS = Registry("model")

    @MODELS.register("conv4")
    class Conv4(nn.Module): ...

    MODELS["conv4"](ways=5)     # an unknown name is a KeyError that lists the names and, for
                                # a typo, says which one was probably meant

This module imports nothing of metagrad, so every layer may keep a registry.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownName(KeyError, ValueError):
    """A name no entry of a registry has; the message lists the names and the closest one.

    A ``KeyError`` (a failed lookup) and a ``ValueError`` (a bad argument), so either catches it.
    """

    def __str__(self) -> str:  # KeyError's own str() would quote the message
        return str(self.args[0])


class Registry(Mapping[str, T], Generic[T]):
    """An ordered ``name -> entry`` mapping whose unknown names get a helpful error.

    Args:
        kind: what the entries are ("model", "algorithm", "task family"), for messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """A decorator that adds its target under ``name`` (names are unique)."""

        def add(entry: T) -> T:
            self.add(name, entry)
            return entry

        return add

    def add(self, name: str, entry: T) -> None:
        """Add ``entry`` under ``name``; a name already taken by another entry is an error."""
        if name in self._entries and self._entries[name] is not entry:
            raise ValueError(f"{self.kind} {name!r} is registered already")
        self._entries[name] = entry

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownName(self.unknown(name)) from None

    def unknown(self, name: object) -> str:
        """The message for an unknown ``name``: the names there are, and the closest one."""
        close = difflib.get_close_matches(str(name), self._entries, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown {self.kind} {name!r}: expected one of {sorted(self._entries)}{hint}"

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {sorted(self._entries)})"
