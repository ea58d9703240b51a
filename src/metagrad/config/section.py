"""The base of every config class: a frozen, keyword-only dataclass that lists its problems."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from metagrad.config.rules import Problem

config_class = dataclass(frozen=True, kw_only=True)  # the decorator of every config class


@config_class
class Section:
    """Base of all config classes: ``problems()`` lists semantic errors (none by default)."""

    def problems(self) -> Iterator[Problem]:
        """Yield ``(field, message)`` for each value that type-checks but makes no sense."""
        yield from ()
