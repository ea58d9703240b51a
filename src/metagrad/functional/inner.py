"""The inner loop: the one adaptation primitive behind MAML, FOMAML, Reptile and meta-RL.

``adapt`` takes any loss ``loss_fn(params, batch) -> scalar`` over any batch structure
(supervised pairs, RL trajectories, ...) and returns new parameters; nothing is modified in
place. With ``first_order=False`` the inner gradients are part of the autograd graph, so
differentiating a loss of the adapted parameters w.r.t. the initial ones gives the exact
second-order MAML meta-gradient; with ``first_order=True`` they are constants (FOMAML).

The same call adapts many tasks at once when ``params`` carry a leading task dimension and
``loss_fn`` returns the *sum* of the per-task losses: tasks are independent given their own
parameters, so the gradient of the sum w.r.t. task ``t``'s slice is task ``t``'s gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from metagrad.functional.optim import SGD, Adam, LearningRate, lr_schedule
from metagrad.functional.params import Params

LossFn = Callable[[Params, Any], Tensor]


def gradients(
    loss: Tensor, params: Params, *, create_graph: bool, what: str = "inner loss"
) -> Params:
    """Gradients of a scalar ``loss`` w.r.t. ``params``; unused parameters get no entry.

    Raises:
        FloatingPointError: the loss is NaN or infinite (names the usual causes).
    """
    if loss.dim() != 0:
        raise ValueError(
            f"the {what} must be a scalar, got shape {tuple(loss.shape)}; reduce it (e.g. "
            ".mean()) in the loss function"
        )
    if not torch.isfinite(loss.detach()):
        raise FloatingPointError(
            f"the {what} is {loss.item()}: the learning rate may be too high, or the inputs "
            "contain NaN/inf. Lower inner_lr / outer_lr or check the data."
        )
    names = list(params)
    grads = torch.autograd.grad(
        loss, [params[k] for k in names], create_graph=create_graph, allow_unused=True
    )
    # A parameter the loss does not use (e.g. an unused head) has no gradient: leave it be.
    return {k: g for k, g in zip(names, grads) if g is not None}


def prepare(params: Params) -> Params:
    """Make every parameter differentiable so the inner loop can take gradients.

    Parameters that already require grad are kept as they are (so the graph to the
    meta-parameters stays); detached ones (evaluation, ``torch.no_grad`` callers) get a fresh
    differentiable alias.
    """
    return {k: v if _in_graph(v) else v.detach().requires_grad_() for k, v in params.items()}


def _in_graph(v: Tensor) -> bool:
    """Whether gradients w.r.t. ``v`` reach it: a leaf that requires grad, or a result of
    recorded operations. A view taken under ``torch.no_grad`` of a tensor that requires grad
    reports ``requires_grad=True`` but autograd records its uses on the base, so it needs a
    fresh alias too."""
    return v.requires_grad and (v.grad_fn is not None or v._base is None)


def adapt_steps(
    loss_fn: LossFn,
    params: Params,
    batch: Any,
    *,
    inner_lr: LearningRate | Sequence[LearningRate],
    inner_steps: int,
    first_order: bool = False,
    optimizer: SGD | Adam | None = None,
    batches: Callable[[int], Any] | None = None,
) -> Iterator[Params]:
    """The parameters after each of ``inner_steps`` steps, as :func:`adapt` takes them.

    Meta-testing scores the query set after every step from this one stream (optimiser state,
    e.g. Adam's moments, carries over between steps as it must).
    """
    if inner_steps < 0:
        raise ValueError(f"inner_steps must be >= 0, got {inner_steps}")
    optimizer = optimizer or SGD()
    lrs = lr_schedule(inner_lr, inner_steps)
    with torch.enable_grad():  # adaptation needs gradients even when evaluating under no_grad
        params = prepare(params)
        state = optimizer.init(params)
        for step, lr in enumerate(lrs):
            data = batches(step) if batches is not None else batch
            loss = loss_fn(params, data)
            grads = gradients(loss, params, create_graph=not first_order)
            params, state = optimizer.step(params, grads, state, lr, step)
            yield params


def adapt(
    loss_fn: LossFn,
    params: Params,
    batch: Any,
    *,
    inner_lr: LearningRate | Sequence[LearningRate],
    inner_steps: int,
    first_order: bool = False,
    optimizer: SGD | Adam | None = None,
    batches: Callable[[int], Any] | None = None,
) -> Params:
    """Adapt ``params`` to one task (or a task-batched set) by ``inner_steps`` gradient steps.

    Args:
        loss_fn: ``loss_fn(params, batch) -> scalar`` loss on the adaptation data.
        params: the parameters to adapt (frozen parameters belong in the closure, not here).
        batch: the adaptation data, passed to ``loss_fn`` as it is.
        inner_lr: one learning rate, or one per step (float or differentiable tensor).
        inner_steps: number of gradient steps (0 returns ``params`` unchanged).
        first_order: treat the inner gradients as constants (FOMAML / Reptile) instead of
            differentiating through them (MAML).
        optimizer: the inner update rule; plain SGD when omitted.
        batches: optional ``batches(step) -> batch`` giving each step its own data (mini-batches
            as Reptile uses); overrides ``batch``.

    Returns:
        New parameters, a function of ``params`` through the autograd graph.
    """
    result = params
    for result in adapt_steps(  # noqa: B007 - the last step's parameters are the result
        loss_fn,
        params,
        batch,
        inner_lr=inner_lr,
        inner_steps=inner_steps,
        first_order=first_order,
        optimizer=optimizer,
        batches=batches,
    ):
        pass
    return result
