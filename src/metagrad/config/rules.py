"""The value rules of config sections: each yields ``(field, what is wrong)`` problems.

Learning rates and counts follow the Python API's own rules (:mod:`metagrad.checks`), so a
mistake reads the same on the command line and in Python.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from metagrad.checks import budget_problem, count_problem, lr_problem

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


def memory_budget(obj: object) -> Iterator[Problem]:
    """The problem of ``obj.memory_budget``, by the API's rule
    (:func:`metagrad.checks.budget_problem`)."""
    if (problem := budget_problem(obj.memory_budget)) is not None:
        yield "memory_budget", problem


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


def inner_params_problems(obj: object) -> Iterator[Problem]:
    """``inner_params``: "all", "head", "body" or non-empty glob patterns (whether they match
    a parameter is checked against the model, when it is built)."""
    value = obj.inner_params
    patterns = (value,) if isinstance(value, str) else value
    if not patterns or any(not p.strip() for p in patterns):
        yield (
            "inner_params",
            f'must be "all", "head", "body" or glob patterns of parameter names, got {value!r}',
        )
    if getattr(obj, "learn_inner_lr", "none") == "per_element" and isinstance(obj.inner_lr, tuple):
        yield (
            "inner_lr",
            "per-element learning rates (Meta-SGD) start from one number: each weight element "
            f"learns one rate for every step; got {list(obj.inner_lr)}",
        )
    if obj.multi_step_loss_iterations and obj.recompute_inner:
        yield (
            "multi_step_loss_iterations",
            "needs the parameters after every inner step, which recompute_inner does not keep; "
            "turn one of them off",
        )
    if obj.first_order_iterations and obj.first_order:
        yield (
            "first_order_iterations",
            "switches to second order after N iterations, but first_order = true never does; "
            "set first_order = false, or remove it",
        )
    if obj.per_step_bn_stats and obj.recompute_inner:
        yield (
            "per_step_bn_stats",
            "updates running statistics in every forward pass, and recompute_inner reruns the "
            "steps in the backward pass; turn one of them off",
        )
    if obj.per_step_bn_stats and obj.path == "vectorized":
        yield (
            "per_step_bn_stats",
            'updates running statistics in place, task by task: only path = "loop" (or "auto") '
            "runs it",
        )
