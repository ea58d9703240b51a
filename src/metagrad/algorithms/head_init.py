"""A classifier's head for a new task of any number of classes, initialised per task.

The head is the final linear layer, ``logits = h W^T + b`` over the body's features ``h``
(:func:`metagrad.models.head_of` finds it). A task with another number of classes than the
model was meta-trained with gets a head of its own shape, passed with the other parameters to
``functional_call`` (the module is never changed). How it starts (:data:`HEADS`):

- ``"trained"``: the meta-learned head as it is; only when the task has as many classes as the
  head has units (the MAML papers' protocol).
- ``"zero"``: ``W = 0, b = 0``: every class starts equal (uniform outputs) and the inner steps
  alone shape the head (as the zero-initialised heads of Triantafillou et al., 2020).
- ``"prototypes"``: Proto-MAML (Triantafillou et al., 2020): ``w_c = 2 mu_c`` and
  ``b_c = -||mu_c||^2`` with ``mu_c`` the mean feature of class ``c``'s support examples, so
  that before any step the logits are ``-||h - mu_c||^2`` up to a term common to all classes:
  a nearest-prototype classifier that the inner steps refine.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from metagrad.algorithms.paths import TaskExecutor
from metagrad.errors import UsageError
from metagrad.types import Params

HeadInit = Literal["trained", "zero", "prototypes"]
HEADS: tuple[HeadInit, ...] = ("trained", "zero", "prototypes")


def default_head(units: int, ways: int) -> HeadInit:
    """The head a task of ``ways`` classes starts from when none is asked for, for a model
    whose meta-learned head has ``units``: the meta-learned head when it fits, else the
    prototypes. Measured on Omniglot with a MAML 5-way model, support-set BatchNorm, 1 shot,
    3 steps (RESULTS.md, "Heads for new classes"): on 5-way tasks the trained head (87.7%)
    beats the prototypes (83.5%; their confident start barely moves in 3 steps) and zero
    (80.1%); on 20- and 30-way tasks, where it cannot serve, the prototypes beat zero."""
    return "trained" if units == ways else "prototypes"


def features(executor: TaskExecutor, params: Params, head: str, x: Tensor) -> Tensor:
    """The body's features ``[N, d]`` of ``x [N, ...]``: the head's inputs.

    The model runs with the head replaced by the identity (``W = I_d``, ``b = 0``), so its
    output is the head's input; no hook, no second model. Normalised as in adaptation (the
    batch ``x``'s own statistics: the support set's, for a support set).
    """
    weight = _head_tensor(params, head, "weight")
    d = weight.shape[-1]
    identity = {f"{head}.weight": torch.eye(d, dtype=weight.dtype, device=weight.device)}
    if f"{head}.bias" in params:
        identity[f"{head}.bias"] = weight.new_zeros(d)
    return executor.forward({**params, **identity}, x)


def with_head(
    kind: HeadInit,
    executor: TaskExecutor,
    params: Params,
    head: str,
    support_x: Tensor,
    support_y: Tensor,
    ways: int,
) -> Params:
    """``params`` with the head of a ``ways``-class task initialised as ``kind`` says.

    Args:
        kind: one of :data:`HEADS` (see the module docstring).
        executor: the model, its frozen parameters and buffers.
        params: the meta-learned parameters (not modified).
        head: the head's module name (:func:`metagrad.models.head_of`).
        support_x: the support set ``[n_support, ...]``.
        support_y: its labels ``[n_support]``, integers ``0 .. ways - 1``, each at least once.
        ways: the task's number of classes.

    Raises:
        UsageError: an unknown kind, ``"trained"`` for a task whose number of classes differs
            from the head's units, or a head the inner loop cannot adapt.
    """
    if kind not in HEADS:
        raise UsageError(f"unknown head {kind!r}: expected one of {list(HEADS)}")
    weight = _head_tensor(params, head, "weight")
    bias_name = f"{head}.bias"
    if kind == "trained":
        if weight.shape[0] != ways:
            raise UsageError(
                f"head 'trained' keeps the meta-learned head of {weight.shape[0]} classes, but "
                f"the task has {ways}: use head 'prototypes' or 'zero'"
            )
        return dict(params)
    new = {f"{head}.weight": weight.new_zeros(ways, weight.shape[1])}
    if bias_name in params:
        new[bias_name] = weight.new_zeros(ways)
    if kind == "prototypes":
        if bias_name not in params:
            raise UsageError(
                f"head 'prototypes' sets the bias of {head}, which has none: use head 'zero'"
            )
        counts = torch.bincount(support_y, minlength=ways)
        if len(counts) > ways or (counts == 0).any():
            raise UsageError(
                f"head 'prototypes' needs every class 0..{ways - 1} in the support set, which "
                f"has {counts.tolist()} examples of each: give each class an example"
            )
        with torch.no_grad():
            h = features(executor, params, head, support_x)  # [n_support, d]
            onehot = torch.nn.functional.one_hot(support_y, ways).to(h.dtype)  # [n, ways]
            prototypes = onehot.T @ h / onehot.sum(0).unsqueeze(1)  # [ways, d]: mean per class
        new = {f"{head}.weight": 2 * prototypes, bias_name: -(prototypes**2).sum(1)}
    return {**params, **new}


def _head_tensor(params: Params, head: str, which: str) -> Tensor:
    name = f"{head}.{which}"
    if name not in params:
        raise UsageError(
            f"the head {head!r} has no adaptable {which} ({name} is frozen or missing): a new "
            "task's head must be adaptable (requires_grad=True)"
        )
    return params[name]
