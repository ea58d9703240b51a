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
    checkpoint: bool = False,
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

            def one_step(p, st, lr, data=data, step=step, record=True):
                # record=False: values only (the forward pass of a checkpointed step).
                create_graph = record and not first_order
                grads = gradients(loss_fn(p, data), p, create_graph=create_graph)
                return optimizer.step(p, grads, st, lr, step)

            if checkpoint:
                params, state = _checkpointed(one_step, params, state, lr)
            else:
                params, state = one_step(params, state, lr)
            yield params


class _Recomputed(torch.autograd.Function):
    """A step ``outputs = run(*inputs)`` that saves only its inputs and recomputes itself (with
    its graph) in the backward pass, so memory does not grow with the number of steps."""

    @staticmethod
    def forward(ctx, run, *inputs):
        ctx.run = run
        ctx.save_for_backward(*inputs)
        with torch.enable_grad():  # the step takes gradients of the inner loss
            fresh = [x.detach().requires_grad_(x.requires_grad) for x in inputs]
            outputs = run(fresh, False)  # values only: no graph kept
        return tuple(o.detach() for o in outputs)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grad_outputs):
        inputs = [x.detach().requires_grad_(x.requires_grad) for x in ctx.saved_tensors]
        with torch.enable_grad():
            outputs = ctx.run(inputs, True)
        wanted = [x for x in inputs if x.requires_grad]
        pairs = [(o, g) for o, g in zip(outputs, grad_outputs) if o.requires_grad]
        grads = iter(
            torch.autograd.grad(
                [o for o, _ in pairs], wanted, [g for _, g in pairs], allow_unused=True
            )
        )
        return (None, *(next(grads) if x.requires_grad else None for x in inputs))


def _checkpointed(one_step, params: Params, state: dict, lr) -> tuple[Params, dict]:
    """Run ``one_step`` keeping only its inputs (parameters, optimiser state, a learnable
    learning rate) for the backward pass, which recomputes the step with its graph."""
    p_keys, s_keys = list(params), [(g, k) for g, sub in state.items() for k in sub]
    n, m = len(p_keys), len(s_keys)
    lr_is_tensor = isinstance(lr, Tensor)

    def run(tensors: list[Tensor], create_graph: bool) -> tuple[Tensor, ...]:
        p = dict(zip(p_keys, tensors[:n]))
        st: dict = {g: {} for g in state}
        for (g, k), t in zip(s_keys, tensors[n : n + m]):
            st[g][k] = t
        step_lr = tensors[n + m] if lr_is_tensor else lr
        # The backward pass differentiates the step: its inner gradients need their graph then.
        new_p, new_st = one_step(p, st, step_lr, record=create_graph)
        return (*(new_p[k] for k in p_keys), *(new_st[g][k] for g, k in s_keys))

    flat = [*(params[k] for k in p_keys), *(state[g][k] for g, k in s_keys)]
    out = _Recomputed.apply(run, *flat, *([lr] if lr_is_tensor else []))
    new_state: dict = {g: {} for g in state}
    for (g, k), t in zip(s_keys, out[n:]):
        new_state[g][k] = t
    return dict(zip(p_keys, out[:n])), new_state


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
    checkpoint: bool = False,
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
        checkpoint: keep only each step's inputs for the backward pass and recompute its
            activations then: memory stays flat as ``inner_steps`` grows, for about one more
            forward and backward per step.

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
        checkpoint=checkpoint,
    ):
        pass
    return result
