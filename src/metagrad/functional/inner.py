"""The inner loop: the one adaptation primitive behind MAML, FOMAML, Reptile and meta-RL.

One step is ``theta' = theta - alpha * grad L(theta)`` (:func:`inner_step`; another update rule
such as Adam through ``optimizer``), and adaptation is a loop over it (:func:`trajectory`,
:func:`adapt`). The objective ``objective(params, data) -> scalar`` may be any loss over any
data structure (supervised pairs, RL trajectories, ...); nothing is modified in place. With
``first_order=False`` the inner gradients are part of the autograd graph, so differentiating a
loss of the adapted parameters w.r.t. the initial ones gives the exact second-order MAML
meta-gradient; with ``first_order=True`` they are constants (FOMAML, Reptile).

The same call adapts many tasks at once when ``params`` carry a leading task dimension and the
objective returns the *sum* of the per-task losses: tasks are independent given their own
parameters, so the gradient of the sum w.r.t. task ``t``'s slice is task ``t``'s gradient.

Two options shape what a step sees, for the MAML family (ANIL, BOIL, MAML++):

- ``InnerLoop.adapted`` names the parameters the steps change; the others are *held*: the
  objective sees them as they are, so a meta-gradient still reaches them through the adapted
  ones (ANIL: only the head adapts; BOIL: only the body).
- ``InnerLoop.per_step`` gives tensors that take another value at each step (MAML++'s per-step
  BatchNorm weights and running statistics): step ``s``'s support loss uses ``per_step[s]``,
  and so does whatever is predicted with the parameters after step ``s + 1``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from metagrad.checks import (
    UNUSED,
    check_loss_value,
    count_problem,
    finite_or_raise,
    lr_problem,
    require,
)
from metagrad.errors import UsageError
from metagrad.functional.optim import SGD, Adam, LearningRate, lr_schedule
from metagrad.functional.recompute import adapt_segmented
from metagrad.types import Objective, Params

Batches = Callable[[int], Any]  # step -> that step's data (e.g. Reptile's mini-batches)


@dataclass(frozen=True)
class InnerLoop:
    """How a task is adapted.

    Attributes:
        inner_lr: the step size, one per parameter (``{name: rate}``), or one per step (floats
            or differentiable tensors); checked by :func:`metagrad.checks.lr_problem`.
        inner_steps: gradient steps (0 leaves the parameters as they are).
        first_order: treat the inner gradients as constants (FOMAML, Reptile) instead of
            differentiating through them (MAML).
        optimizer: the update rule (plain SGD by default; Adam for Reptile's Omniglot runs).
        recompute: keep only the inputs of ``sqrt(inner_steps)``-step segments and recompute
            the steps in the backward pass (:mod:`metagrad.functional.recompute`).
        state: the optimiser state every task starts from (None: a fresh one).
        check_finite: raise ``FloatingPointError`` when the loss becomes NaN or infinite (in
            training, where it means a bad learning rate). Meta-testing turns it off: a task
            whose adaptation diverges is scored as such, not a crash of the whole evaluation.
        adapted: the names of the parameters the steps change (None: all of them); the rest
            are held as they are (see the module docstring).
        per_step: one dict of tensors per step, overriding parameters or buffers of the same
            name at that step (MAML++'s per-step BatchNorm); empty: none.
    """

    inner_lr: LearningRate | Sequence[LearningRate]
    inner_steps: int
    first_order: bool = False
    optimizer: SGD | Adam = field(default_factory=SGD)
    recompute: bool = False
    state: dict | None = None
    check_finite: bool = True
    adapted: frozenset[str] | None = None
    per_step: tuple[Params, ...] = ()

    def __post_init__(self) -> None:
        # The one place every inner loop passes (MAML, Reptile, adapt, evaluate): the same
        # rules and words as the config's (metagrad.checks).
        require("inner_steps", count_problem(self.inner_steps, 0))
        if self.inner_steps > 0:  # no step takes a rate: any placeholder will do
            require("inner_lr", lr_problem(self.inner_lr))
        if self.per_step and len(self.per_step) < self.inner_steps:
            raise UsageError(
                f"{self.inner_steps} inner steps, but the per-step tensors (MAML++'s per-step "
                f"BatchNorm) were learned for {len(self.per_step)}; adapt with at most "
                f"{len(self.per_step)} steps"
            )

    def fixed_at(self, held: Params, step: int) -> Params:
        """What the model sees besides the adapted parameters at inner step ``step``: the held
        parameters, overridden by that step's per-step tensors."""
        if not self.per_step:
            return held
        return {**held, **self.per_step[min(step, len(self.per_step) - 1)]}

    def split(self, params: Params) -> tuple[Params, Params]:
        """``(adapted, held)`` parts of ``params``.

        Raises:
            UsageError: an adapted parameter also takes per-step values (it cannot be both).
        """
        if self.adapted is None:
            adapted, held = dict(params), {}
        else:
            adapted = {k: v for k, v in params.items() if k in self.adapted}
            held = {k: v for k, v in params.items() if k not in self.adapted}
        both = sorted(set(adapted) & set(self.per_step[0])) if self.per_step else []
        if both:
            raise UsageError(
                f"{both} are adapted in the inner loop and also take per-step values; "
                "leave them out of inner_params (per-step BatchNorm weights are never adapted)"
            )
        return adapted, held

    def for_testing(self) -> InnerLoop:
        """This loop with every learnable tensor (learning rates, per-step weights) detached
        and per-step buffers copied: adapting then builds no graph to the meta-parameters and
        never writes a running statistic back (meta-testing, deployment)."""
        per_step = tuple({k: v.detach().clone() for k, v in d.items()} for d in self.per_step)
        return replace(self, inner_lr=_detached_rates(self.inner_lr), per_step=per_step)


def _detached_rates(lr):
    if isinstance(lr, Tensor):
        return lr.detach()
    if isinstance(lr, Mapping):
        return {k: _detached_rates(v) for k, v in lr.items()}
    if isinstance(lr, Sequence) and not isinstance(lr, str):
        return [_detached_rates(v) for v in lr]
    return lr


def holding(objective: Objective, fixed: Params) -> Objective:
    """``objective`` of the adapted parameters alone, with ``fixed`` (held parameters, per-step
    tensors) added to what the model sees."""
    if not fixed:
        return objective
    return lambda params, data: objective({**fixed, **params}, data)


def initial(params: Params, inner: InnerLoop) -> Params:
    """The parameters before any step, as the model sees them (with step 0's per-step
    tensors): what meta-testing scores as step 0."""
    return {**params, **inner.per_step[0]} if inner.per_step else params


def _merged(order: Params, fixed: Params, adapted: Params) -> Params:
    """Held and adapted parameters in the order of ``order``, then any per-step tensors."""
    merged = {**fixed, **adapted}
    return {**{k: merged[k] for k in order if k in merged}, **merged}


def gradients(
    loss: Tensor,
    params: Params,
    *,
    create_graph: bool,
    what: str = "inner loss",
    check_finite: bool = True,
) -> Params:
    """Gradients of a scalar ``loss`` w.r.t. ``params``; unused parameters get no entry.

    Raises:
        UsageError: the loss is not a scalar, or depends on none of ``params``.
        FloatingPointError: the loss is NaN or infinite and ``check_finite`` (names the usual
            causes).
    """
    check_loss_value(loss, what)
    if check_finite:
        finite_or_raise(loss, what)
    if not loss.requires_grad:  # else autograd's "element 0 of tensors does not require grad"
        raise UsageError(f"the {what} {UNUSED}")
    names = list(params)
    grads = torch.autograd.grad(
        loss, [params[k] for k in names], create_graph=create_graph, allow_unused=True
    )
    if names and all(g is None for g in grads):
        raise UsageError(f"the {what} {UNUSED}")
    # A parameter the loss does not use (e.g. an unused head) has no gradient: leave it be.
    return {k: g for k, g in zip(names, grads) if g is not None}


def inner_step(
    objective: Objective,
    params: Params,
    state: dict,
    data: Any,
    lr: LearningRate,
    optimizer: SGD | Adam,
    create_graph: bool,
    check_finite: bool = True,
) -> tuple[Params, dict]:
    """One step of the inner loop: ``theta' = theta - lr * grad objective(theta, data)`` for SGD
    (MAML paper, Algorithm 1, line 6), the optimiser's rule otherwise.

    ``create_graph`` keeps the gradient in the autograd graph (second-order MAML).
    """
    loss = objective(params, data)
    grads = gradients(loss, params, create_graph=create_graph, check_finite=check_finite)
    return optimizer.step(params, grads, state, lr)


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


def trajectory(
    objective: Objective,
    params: Params,
    data: Any,
    inner: InnerLoop,
    batches: Batches | None = None,
) -> Iterator[tuple[Params, dict]]:
    """``(params, optimiser state)`` after each inner step (meta-testing scores every step).

    Args:
        objective: ``objective(params, data) -> scalar``.
        params: the parameters to adapt.
        data: the adaptation data, passed to ``objective`` as it is.
        inner: step sizes, steps, order and update rule (``inner.recompute`` is not used: a
            stream keeps every step anyway).
        batches: optional ``batches(step) -> data`` giving each step its own data.
    """
    lrs = lr_schedule(inner.inner_lr, _checked(inner.inner_steps))
    adapted, held = inner.split(params)
    check_rate_names(lrs, adapted)
    with torch.enable_grad():  # adaptation needs gradients even when evaluating under no_grad
        adapted = prepare(adapted)
        state = inner.optimizer.init(adapted) if inner.state is None else inner.state
        for step, lr in enumerate(lrs):
            step_data = data if batches is None else batches(step)
            create_graph = not inner.first_order
            fixed = inner.fixed_at(held, step)
            adapted, state = inner_step(
                holding(objective, fixed),
                adapted,
                state,
                step_data,
                lr,
                inner.optimizer,
                create_graph,
                inner.check_finite,
            )
            yield _merged(params, fixed, adapted), state


def run_inner(
    objective: Objective,
    params: Params,
    data: Any,
    inner: InnerLoop,
    batches: Batches | None = None,
) -> tuple[Params, dict]:
    """The parameters and the optimiser state after all of ``inner``'s steps (the state carries
    on to later tasks, as Reptile's code does with its Adam moments)."""
    if inner.recompute and inner.inner_steps > 0:
        return _recomputed(objective, params, data, inner, batches)
    last = None
    for last in trajectory(objective, params, data, inner, batches):  # noqa: B007
        pass
    if last is None:  # zero steps: the parameters and the state as given
        adapted = inner.split(params)[0]
        return initial(params, inner), (
            inner.optimizer.init(adapted) if inner.state is None else inner.state
        )
    return last


def _recomputed(
    objective: Objective, params: Params, data: Any, inner: InnerLoop, batches: Batches | None
) -> tuple[Params, dict]:
    lrs = lr_schedule(inner.inner_lr, _checked(inner.inner_steps))
    adapted, held = inner.split(params)
    check_rate_names(lrs, adapted)

    def step_function(step: int):
        step_data = data if batches is None else batches(step)

        # The held parameters and per-step tensors travel with the rate as the step's extra
        # inputs: a recomputed segment passes gradients only to its inputs.
        def one_step(p, st, lr_fixed, record=True):  # record=False: values only (a rerun)
            lr, fixed = lr_fixed
            create_graph = record and not inner.first_order
            step_objective = holding(objective, fixed)
            return inner_step(step_objective, p, st, step_data, lr, inner.optimizer, create_graph)

        return one_step

    with torch.enable_grad():
        adapted = prepare(adapted)
        state = inner.optimizer.init(adapted) if inner.state is None else inner.state
        steps = [step_function(s) for s in range(len(lrs))]
        extras = [(lr, inner.fixed_at(held, s)) for s, lr in enumerate(lrs)]
        adapted, state = adapt_segmented(steps, extras, adapted, state)
        return _merged(params, inner.fixed_at(held, len(lrs) - 1), adapted), state


def _checked(inner_steps: int) -> int:
    require("inner_steps", count_problem(inner_steps, 0))
    return inner_steps


def check_rate_names(lrs: list, params: Params) -> None:
    """Per-parameter learning rates must name exactly the adapted parameters."""
    for lr in lrs:
        if isinstance(lr, Mapping) and set(lr) != set(params):
            missing, unknown = sorted(set(params) - set(lr)), sorted(set(lr) - set(params))
            raise UsageError(
                f"inner_lr gives rates for {sorted(lr)} but the adapted parameters are "
                f"{sorted(params)} (missing {missing}, unknown {unknown}); give one rate per "
                "adapted parameter"
            )


def adapt(
    objective: Objective,
    params: Params,
    data: Any,
    *,
    inner_lr: LearningRate | Sequence[LearningRate],
    inner_steps: int,
    first_order: bool = False,
    optimizer: SGD | Adam | None = None,
    batches: Batches | None = None,
    recompute: bool = False,
    state: dict | None = None,
    adapted: Collection[str] | None = None,
) -> Params:
    """Adapt ``params`` to one task (or a task-batched set) by ``inner_steps`` gradient steps.

    Args:
        objective: ``objective(params, data) -> scalar`` loss on the adaptation data.
        params: the parameters to adapt (frozen parameters belong in the closure, not here).
        data: the adaptation data, passed to ``objective`` as it is.
        inner_lr: one learning rate, one per parameter (``{name: rate}``, naming exactly the
            keys of ``params``), or one per step (float or differentiable tensor).
        inner_steps: number of gradient steps (0 returns ``params`` unchanged).
        first_order: treat the inner gradients as constants (FOMAML / Reptile) instead of
            differentiating through them (MAML).
        optimizer: the inner update rule; plain SGD when omitted.
        batches: optional ``batches(step) -> data`` giving each step its own data (mini-batches
            as Reptile uses); overrides ``data``.
        recompute: keep only the inputs of ``sqrt(inner_steps)``-step segments for the backward
            pass and recompute the steps then: memory grows with ``sqrt(inner_steps)`` copies of
            the parameters instead of ``inner_steps`` steps' activations, for about two more
            forward steps per step.
        state: the optimiser state to start from (default: a fresh ``optimizer.init``).
        adapted: the names of the parameters to change (None: all); the others are used as
            they are and returned unchanged (ANIL adapts the head alone, BOIL the body).

    Returns:
        New parameters, a function of ``params`` through the autograd graph.
    """
    inner = InnerLoop(
        inner_lr,
        inner_steps,
        first_order,
        optimizer or SGD(),
        recompute=recompute,
        state=state,
        adapted=None if adapted is None else frozenset(adapted),
    )
    return run_inner(objective, params, data, inner, batches)[0]
