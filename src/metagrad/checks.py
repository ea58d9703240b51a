"""One input check per concept, shared by the config's ``problems()`` and the Python API.

Each ``*_problem`` function returns what is wrong with a value as the tail of a sentence
(``"must be a finite number > 0, got inf"``), or ``None``. The config prefixes the dotted key
(``algorithm.inner_lr: must be ...``); the API raises :class:`~metagrad.errors.UsageError`
prefixed with the argument's name (``inner_lr must be ...``) through :func:`require`. So the
same mistake reads the same on the command line and in Python, and a rule changes in one place.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from metagrad.errors import UsageError

LR_EXPECTED = "must be a finite number > 0 (e.g. 0.01)"
# A loss without a graph to the parameters (autograd's own words: "element 0 of tensors does
# not require grad and does not have a grad_fn").
UNUSED = (
    "depends on none of the model's parameters (no gradient reaches them); compute it from "
    "the model's output, without .detach(), .item() or torch.no_grad()"
)


def require(name: str, problem: str | None) -> None:
    """Raise ``UsageError("<name> <problem>")`` when there is a problem."""
    if problem is not None:
        raise UsageError(f"{name} {problem}")


def _number_problem(value: object, zero_ok: bool = False) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, Tensor)):
        shown = f"{type(value).__name__} {value!r}"
        return f"{LR_EXPECTED}, a tensor, or one per step; got {shown}"
    if isinstance(value, Tensor):
        # A learnable rate may learn any sign (Meta-SGD does); only NaN/inf are always wrong.
        if not value.is_floating_point():
            return f"{LR_EXPECTED} as a floating tensor, got dtype {value.dtype}"
        finite = torch.isfinite(value.detach())
        if not bool(finite.all()):
            return f"{LR_EXPECTED}, got a tensor holding {value.detach()[~finite][0].item()}"
        return None
    if not (math.isfinite(value) and (value > 0 or (zero_ok and value == 0))):
        return f"{LR_EXPECTED}, got {value!r}"
    return None


def lr_problem(value: object) -> str | None:
    """A learning rate: a finite number > 0, a finite floating tensor (a learnable rate), one
    per parameter (a dict ``{name: rate}``), or one per step (a list or tuple of those, where a
    step may have rate 0 but not every step)."""
    if isinstance(value, str):
        return f"{LR_EXPECTED}, got str {value!r}; write it without quotes"
    if isinstance(value, Mapping):
        if not value:
            return f"{LR_EXPECTED} per parameter, got an empty dict"
        return next(filter(None, (_number_problem(r) for r in value.values())), None)
    if isinstance(value, Sequence):
        if not value:
            return f"{LR_EXPECTED}, or one per step; got an empty list"
        for r in value:
            problem = lr_problem(r) if isinstance(r, Mapping) else _number_problem(r, True)
            if problem is not None:
                return problem
        if all(isinstance(r, (int, float)) and r == 0 for r in value):
            return f"{LR_EXPECTED} for at least one step, got {list(value)!r}"
        return None
    return _number_problem(value)


def count_problem(value: object, low: int, optional: bool = False) -> str | None:
    """A count (steps, chunk sizes, batch sizes): an integer ``>= low`` (or ``None`` when
    ``optional``)."""
    if value is None and optional:
        return None
    ok_type = isinstance(value, numbers.Integral) and not isinstance(value, bool)  # numpy ints
    if not ok_type or value < low:
        shown = repr(value) if ok_type else f"{type(value).__name__} {value!r}"
        none = " or None" if optional else ""
        return f"must be an integer >= {low}{none}, got {shown}"
    return None


def budget_problem(value: object) -> str | None:
    """A memory budget: a fraction (0, 1] of the available memory, or bytes (> 1)."""
    ok_type = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not ok_type or not math.isfinite(value) or value <= 0:
        shown = repr(value) if ok_type else f"{type(value).__name__} {value!r}"
        return (
            "must be a fraction of the available memory in (0, 1] (e.g. 0.5) or a number of "
            f"bytes (e.g. 4e9), got {shown}"
        )
    return None


def loss_shape_problem(shape: Sequence[int], what: str = "loss") -> str | None:
    """A task's loss must be a scalar (every execution path asks the same)."""
    if len(shape) != 0:
        return (
            f"the {what} must be a scalar per task, got shape {tuple(shape)}; reduce it (e.g. "
            ".mean()) in the loss function"
        )
    return None


def check_loss_value(loss: Tensor, what: str = "loss") -> None:
    """Raise ``UsageError`` for a non-scalar loss (no other check: the value may be a graph)."""
    if not isinstance(loss, Tensor):
        raise UsageError(
            f"the {what} must be a scalar tensor, got {type(loss).__name__}; return a torch "
            "tensor from the loss function"
        )
    if (problem := loss_shape_problem(loss.shape, what)) is not None:
        raise UsageError(problem)


def finite_or_raise(value: Tensor, what: str) -> None:
    """Raise ``FloatingPointError`` naming the usual causes when ``value`` holds NaN or inf."""
    if not bool(torch.isfinite(value.detach()).all()):
        shown = value.detach().flatten()[~torch.isfinite(value.detach().flatten())][0].item()
        raise FloatingPointError(
            f"the {what} is {shown}: the learning rate may be too high, or the inputs "
            "contain NaN/inf. Lower inner_lr / outer_lr or check the data."
        )
