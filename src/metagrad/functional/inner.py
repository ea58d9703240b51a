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

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from metagrad.functional.optim import SGD, Adam, LearningRate, lr_schedule
from metagrad.functional.params import Params

LossFn = Callable[[Params, Any], Tensor]
Step = Callable[..., tuple[Params, dict]]  # (params, state, lr, record) -> (params, state)


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


def _plan(
    inner_lr: LearningRate | Sequence[LearningRate], inner_steps: int, optimizer: SGD | Adam | None
) -> tuple[SGD | Adam, list[LearningRate]]:
    """The update rule (plain SGD when omitted) and the learning rate of each step."""
    if inner_steps < 0:
        raise ValueError(f"inner_steps must be >= 0, got {inner_steps}")
    return optimizer or SGD(), lr_schedule(inner_lr, inner_steps)


def _step_functions(
    loss_fn: LossFn,
    batch: Any,
    lrs: list[LearningRate],
    first_order: bool,
    optimizer: SGD | Adam,
    batches: Callable[[int], Any] | None,
) -> Iterator[Step]:
    """One ``step(params, state, lr, record) -> (params, state)`` per inner step, in order.

    ``record=False`` computes values only (the forward pass of a checkpointed step).
    """
    for step in range(len(lrs)):
        data = batches(step) if batches is not None else batch

        def one_step(p, st, lr, record=True, data=data):
            create_graph = record and not first_order
            grads = gradients(loss_fn(p, data), p, create_graph=create_graph)
            return optimizer.step(p, grads, st, lr)

        yield one_step


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
    state: dict | None = None,
) -> Iterator[Params]:
    """The parameters after each of ``inner_steps`` steps, as :func:`adapt` takes them.

    Meta-testing scores the query set after every step from this one stream (optimiser state,
    e.g. Adam's moments, carries over between steps as it must). ``checkpoint`` recomputes
    each step in the backward pass (memory: one copy of the parameters per step; :func:`adapt`
    does better, as it needs only the last step's parameters).
    """
    plan = _plan(inner_lr, inner_steps, optimizer)
    trajectory = _trajectory(loss_fn, params, batch, plan, first_order, batches, checkpoint, state)
    for stepped, _ in trajectory:
        yield stepped


def _trajectory(
    loss_fn: LossFn,
    params: Params,
    batch: Any,
    plan: tuple[SGD | Adam, list[LearningRate]],
    first_order: bool,
    batches: Callable[[int], Any] | None,
    checkpoint: bool,
    state: dict | None,
) -> Iterator[tuple[Params, dict]]:
    """``(params, optimiser state)`` after each step, each step kept or checkpointed."""
    optimizer, lrs = plan
    with torch.enable_grad():  # adaptation needs gradients even when evaluating under no_grad
        params = prepare(params)
        state = optimizer.init(params) if state is None else state
        steps = _step_functions(loss_fn, batch, lrs, first_order, optimizer, batches)
        for one_step, lr in zip(steps, lrs):
            if checkpoint:
                params, state = _checkpointed_step(one_step, params, state, lr)
            else:
                params, state = one_step(params, state, lr)
            yield params, state


def _adapt_segmented(
    steps: list[Step], lrs: list[LearningRate], params: Params, state: dict
) -> tuple[Params, dict]:
    """All steps in ``ceil(sqrt(K))``-step segments that keep only their inputs.

    The backward pass recomputes a segment with each of its steps checkpointed in turn, so at
    most about ``2 sqrt(K)`` copies of the parameters are alive at once, for one more forward
    step per step than per-step checkpointing.
    """
    size = math.ceil(math.sqrt(len(steps)))
    for start in range(0, len(steps), size):
        segment = list(zip(steps[start : start + size], lrs[start : start + size]))

        def run(p, st, extras, record, segment=segment):
            learnable = iter(extras)  # tensor learning rates are the segment's extra inputs
            for one_step, lr in segment:
                lr = next(learnable) if isinstance(lr, Tensor) else lr
                if record:
                    p, st = _checkpointed_step(one_step, p, st, lr)
                else:
                    p, st = one_step(p, st, lr, record=False)
            return p, st

        extras = [lr for _, lr in segment if isinstance(lr, Tensor)]
        params, state = _recomputed(run, params, state, extras)
    return params, state


class _Recomputed(torch.autograd.Function):
    """A step or a segment of steps, ``outputs = run(*inputs)``, that saves only its inputs and
    recomputes itself (with its graph) in the backward pass."""

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


def _recomputed(run, params: Params, state: dict, extras: list[Tensor]) -> tuple[Params, dict]:
    """``run(params, state, extras, record) -> (params, state)`` as one :class:`_Recomputed`
    node: only its inputs (parameters, optimiser state, ``extras`` such as a learnable learning
    rate) are kept for the backward pass, which reruns it with ``record=True``."""
    p_keys, s_keys = list(params), [(g, k) for g, sub in state.items() for k in sub]
    n, m = len(p_keys), len(s_keys)

    def flat_run(tensors: list[Tensor], record: bool) -> tuple[Tensor, ...]:
        p = dict(zip(p_keys, tensors[:n]))
        st: dict = {g: {} for g in state}
        for (g, k), t in zip(s_keys, tensors[n : n + m]):
            st[g][k] = t
        new_p, new_st = run(p, st, tensors[n + m :], record)
        return (*(new_p[k] for k in p_keys), *(new_st[g][k] for g, k in s_keys))

    flat = [*(params[k] for k in p_keys), *(state[g][k] for g, k in s_keys), *extras]
    out = _Recomputed.apply(flat_run, *flat)
    new_state: dict = {g: {} for g in state}
    for (g, k), t in zip(s_keys, out[n:]):
        new_state[g][k] = t
    return dict(zip(p_keys, out[:n])), new_state


def _checkpointed_step(one_step: Step, params: Params, state: dict, lr) -> tuple[Params, dict]:
    """One step that keeps only its inputs; the backward pass recomputes it with its graph."""
    if isinstance(lr, Tensor):  # a learnable learning rate is an input of the step
        return _recomputed(lambda p, st, ex, rec: one_step(p, st, ex[0], rec), params, state, [lr])
    return _recomputed(lambda p, st, ex, rec: one_step(p, st, lr, rec), params, state, [])


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
    state: dict | None = None,
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
        checkpoint: keep only the inputs of ``sqrt(inner_steps)``-step segments for the backward
            pass and recompute the steps then: memory grows with ``sqrt(inner_steps)`` copies of
            the parameters instead of ``inner_steps`` steps' activations, for about two more
            forward steps per step.
        state: the optimiser state to start from (default: a fresh ``optimizer.init``).

    Returns:
        New parameters, a function of ``params`` through the autograd graph.
    """
    return adapt_with_state(
        loss_fn,
        params,
        batch,
        inner_lr=inner_lr,
        inner_steps=inner_steps,
        first_order=first_order,
        optimizer=optimizer,
        batches=batches,
        checkpoint=checkpoint,
        state=state,
    )[0]


def adapt_with_state(
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
    state: dict | None = None,
) -> tuple[Params, dict]:
    """:func:`adapt`, also returning the optimiser's final state (to carry it to later tasks,
    as Reptile's code does with its Adam moments)."""
    plan = _plan(inner_lr, inner_steps, optimizer)
    if not checkpoint:
        result = None
        for result in _trajectory(loss_fn, params, batch, plan, first_order, batches, False, state):  # noqa: B007
            pass
        if result is None:  # zero steps: the parameters and the state as given
            result = (params, plan[0].init(params) if state is None else state)
        return result
    optimizer, lrs = plan
    with torch.enable_grad():
        params = prepare(params)
        state = optimizer.init(params) if state is None else state
        steps = list(_step_functions(loss_fn, batch, lrs, first_order, optimizer, batches))
        return _adapt_segmented(steps, lrs, params, state) if steps else (params, state)
