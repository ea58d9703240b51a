"""Gradient recomputation for long inner loops (``InnerLoop(recompute=True)``).

Differentiating through K inner steps normally keeps every step's activations: memory grows
with K. Here the steps run in ``ceil(sqrt(K))``-step segments, each an autograd node that saves
only its inputs (parameters, optimiser state, learnable learning rates) and reruns itself, with
its graph, in the backward pass: memory grows with ``sqrt(K)`` copies of the parameters instead
(tested in ``tests/functional/test_inner.py``), for about two more forward steps per step. The
meta-gradient is the same to rounding (tested to 1e-10 in float64).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping

import torch
from torch import Tensor

from metagrad.functional.optim import LearningRate
from metagrad.types import Params

Step = Callable[..., tuple[Params, dict]]  # (params, state, lr, record) -> (params, state)


def adapt_segmented(
    steps: list[Step], lrs: list[LearningRate], params: Params, state: dict
) -> tuple[Params, dict]:
    """Run ``steps`` (``step(params, state, lr, record) -> (params, state)``, ``record=False``
    computing values only) in ``ceil(sqrt(K))``-step segments that keep only their inputs.

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
                lr = _rebuilt(lr, learnable)
                if record:
                    p, st = _checkpointed_step(one_step, p, st, lr)
                else:
                    p, st = one_step(p, st, lr, record=False)
            return p, st

        extras = [t for _, lr in segment for t in _tensors(lr)]
        params, state = _recomputed(run, params, state, extras)
    return params, state


class _Recomputed(torch.autograd.Function):
    """A step or a segment of steps, ``outputs = run(*inputs)``, that saves only its inputs and
    recomputes itself (with its graph) in the backward pass."""

    @staticmethod
    def forward(ctx, run, *inputs):
        # An output no loss uses (a parameter the model never touches) gets no gradient; zeros
        # would pass through as a zero .grad, which weight decay then moves.
        ctx.set_materialize_grads(False)
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
        pairs = [(o, g) for o, g in zip(outputs, grad_outputs) if o.requires_grad and g is not None]
        if not pairs:
            return (None, *(None for _ in inputs))
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
    # A learnable learning rate (a tensor, or tensors per parameter) is an input of the step.
    return _recomputed(
        lambda p, st, ex, rec: one_step(p, st, _rebuilt(lr, iter(ex)), rec),
        params,
        state,
        _tensors(lr),
    )


def _tensors(lr) -> list[Tensor]:
    """The tensors of a step's extra inputs, in order: a learning rate (a tensor, or tensors per
    parameter), or a tuple of such values (a rate and the held parameters the step uses)."""
    if isinstance(lr, Tensor):
        return [lr]
    if isinstance(lr, Mapping):
        return [t for v in lr.values() for t in _tensors(v)]
    if isinstance(lr, tuple):
        return [t for v in lr for t in _tensors(v)]
    return []


def _rebuilt(lr, tensors: Iterator[Tensor]):
    """``lr`` with its tensors (:func:`_tensors`, in order) taken from ``tensors``."""
    if isinstance(lr, Tensor):
        return next(tensors)
    if isinstance(lr, Mapping):
        return {k: _rebuilt(v, tensors) for k, v in lr.items()}
    if isinstance(lr, tuple):
        return tuple(_rebuilt(v, tensors) for v in lr)
    return lr
