"""The value rules of config sections: each yields ``(field, what is wrong)`` problems.

Learning rates and counts follow the Python API's own rules (:mod:`metagrad.checks`), so a
mistake reads the same on the command line and in Python.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from metagrad.checks import count_problem, lr_problem

Problem = tuple[str, str]  # (field name, what is wrong with it)


def at_least(obj: object, low: float, *names: str) -> Iterator[Problem]:
    """Problems for each named field of ``obj`` that is set (not ``None``) and below ``low``."""
    for name in names:
        value = getattr(obj, name)
        if value is not None and value < low:
            yield name, f"must be >= {low}, got {value!r}"


def positive(obj: object, *names: str) -> Iterator[Problem]:
    """Problems for each named field (a number or a tuple of numbers) that is not a finite
    number > 0 (inf passed ``> 0`` and then diverged at the first step)."""
    for name in names:
        value = getattr(obj, name)
        values = value if isinstance(value, tuple) else (value,)
        if any(v is not None and not (math.isfinite(v) and v > 0) for v in values):
            yield name, f"must be a finite number > 0, got {value!r}"


def learning_rate(obj: object, *names: str) -> Iterator[Problem]:
    """Problems for each named learning-rate field that is set, by the API's own rule
    (:func:`metagrad.checks.lr_problem`), so both say the same."""
    for name in names:
        value = getattr(obj, name)
        if value is not None and (problem := lr_problem(value)) is not None:
            yield name, problem


def counts(obj: object, low: int, *names: str) -> Iterator[Problem]:
    """Problems for each named count that is set and not an integer >= ``low``, by the API's
    rule (:func:`metagrad.checks.count_problem`)."""
    for name in names:
        value = getattr(obj, name)
        if (problem := count_problem(value, low, optional=True)) is not None:
            yield name, problem


def ordered_range(obj: object, *names: str, strict: bool = False) -> Iterator[Problem]:
    """Problems for each named ``(low, high)`` field with ``low > high`` (or ``>=`` if strict)."""
    for name in names:
        low, high = getattr(obj, name)
        if low > high or (strict and low == high):
            op = "<" if strict else "<="
            yield name, f"must be [low, high] with low {op} high, got [{low!r}, {high!r}]"


def lr_per_step(obj: object, lr_name: str, steps: int | None) -> Iterator[Problem]:
    """A problem if ``obj.<lr_name>`` is a per-step list whose length is not ``steps``."""
    lr = getattr(obj, lr_name)
    if isinstance(lr, tuple) and steps is not None and len(lr) != steps:
        yield (
            lr_name,
            f"lists {len(lr)} per-step rates for {steps} step(s); give one float or {steps} rates",
        )
