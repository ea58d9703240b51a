"""Reptile (Nichol, Achiam & Schulman, 2018): the pure function and its shell.

For each task, run ``k`` steps of SGD or Adam from ``theta`` on the task's support data to get
``phi``; the batched Reptile update is ``theta <- theta + eps * (mean_t phi_t - theta)``. We
return the *direction* ``theta - mean_t phi_t``, which written into ``.grad`` makes any
``torch.optim`` optimiser take the Reptile step (plain SGD with ``lr=eps`` gives the paper's).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metagrad.algorithms.autotune import DEFAULT_BUDGET
from metagrad.algorithms.learner import MetaLearner, accumulate_grad
from metagrad.algorithms.maml import MetaOutput
from metagrad.algorithms.paths import TaskExecutor, autocast_dtype, check_batch, probe
from metagrad.algorithms.selection import InnerParams
from metagrad.checks import count_problem, finite_or_raise, require
from metagrad.errors import UsageError
from metagrad.functional.inner import InnerLoop
from metagrad.functional.optim import make_inner_optimizer
from metagrad.functional.params import detached
from metagrad.types import Loss, Params, TaskBatch


def minibatch_schedule(
    examples: int, batch_size: int | None, generator: torch.Generator | None
) -> Callable[[int], Tensor] | None:
    """Indices of the support examples each inner step uses, as Reptile's mini-batches.

    The support set is shuffled and cut into consecutive mini-batches, reshuffled whenever it
    is used up. ``batch_size=None`` (or >= ``examples``) uses the whole support set every step.
    All tasks of a meta-batch share the schedule, so they can be adapted together.
    """
    if batch_size is None or batch_size >= examples:
        return None
    if batch_size < 1:
        raise ValueError(f"inner_batch_size must be >= 1, got {batch_size}")
    order: list[Tensor] = []

    def indices(step: int) -> Tensor:
        start = step * batch_size
        while len(order) * examples < start + batch_size:
            order.append(torch.randperm(examples, generator=generator))
        return torch.cat(order)[start : start + batch_size]

    return indices


def reptile_direction(
    executor: TaskExecutor,
    loss: Loss,
    params: Params,
    batch: TaskBatch,
    inner: InnerLoop,
    inner_batch_size: int | None = None,
    generator: torch.Generator | None = None,
    meta_batch_size: int | None = None,
) -> tuple[Params, MetaOutput, dict]:
    """``theta - mean_t phi_t`` for a meta-batch, the adapted query losses, and the inner
    optimiser's state after the batch.

    Args:
        executor: the model and its execution path.
        loss: per-task loss ``loss(output, target) -> scalar``.
        params: ``theta`` (not modified; no graph is kept to it).
        batch: the tasks; ``phi`` is trained on the support sets only.
        inner: inner learning rate(s), steps and update rule (always first order); every task
            starts from ``inner.state`` (a fresh state when None).
        inner_batch_size: support examples per inner step (None: all).
        generator: random source of the mini-batch order.
        meta_batch_size: ``batch`` is part of a meta-batch of that many tasks (a process's
            share): the direction is its share, ``-sum_t delta_t / meta_batch_size``.

    Returns:
        ``(direction, output, state)``. ``state`` is where the optimiser would be had the tasks
        run one after the other from ``inner.state`` (:meth:`Adam.sequential`): pass it on as
        the next batch's ``inner.state`` to keep Adam's moments across tasks, as Reptile's code
        does. The tasks themselves run in parallel, each from ``inner.state``.
    """
    theta = detached(params)
    pick = minibatch_schedule(batch.support_x.shape[1], inner_batch_size, generator)
    start = inner.state if inner.state is not None else inner.optimizer.init(inner.split(theta)[0])
    inner = replace(inner, first_order=True, state=start)
    # The inner loop runs on the displacement itself (phi = theta + delta, delta from 0), so
    # the small Reptile direction is accumulated directly instead of recovered as the
    # difference of two nearly equal tensors, which would lose float32 precision.
    zero = {k: torch.zeros_like(v) for k, v in theta.items()}
    x, y = batch.support_x, batch.support_y
    delta, ends = executor.adapt_all(loss, zero, x, y, inner, pick, offset=theta)
    delta = detached(delta)  # [tasks, ...]
    state = inner.optimizer.sequential(start, ends, inner.inner_steps, batch.num_tasks)
    if batch.query_x.shape[1] > 0:  # Reptile needs no query set; report it when there is one
        with torch.no_grad():
            phi = {k: theta[k] + delta[k] for k in theta}
            out = executor.predict_all(phi, batch.query_x)
            losses = executor.task_losses(loss, out, batch.query_y)
    else:  # report NaN losses and an empty output rather than fail
        losses = batch.support_x.new_full((batch.num_tasks,), float("nan"))
        out = batch.support_x.new_empty(batch.num_tasks, 0)
    if meta_batch_size is None:
        direction = {k: -v.mean(0) for k, v in delta.items()}
    else:
        direction = {k: -v.sum(0) / meta_batch_size for k, v in delta.items()}
    return direction, MetaOutput(losses.mean(), losses, out), state


class Reptile(MetaLearner):
    """Reptile: ``.grad = theta - mean(phi)``; step it with ``torch.optim.SGD(lr=epsilon)``.

    Args:
        inner_optimizer: ``"sgd"`` or ``"adam"`` (the paper's Omniglot runs: Adam, beta1=0).
        inner_batch_size: support examples per inner step (None: the whole support set).
        adam_betas: betas of the inner Adam.
        inner_state: ``"reset"`` starts every task's inner optimiser afresh; ``"carry"`` keeps
            its state (Adam's moments and step count) from one meta-batch to the next, as the
            Reptile paper's code did, and starts meta-test tasks from it too. The state is part
            of :meth:`state_dict`, so checkpoints keep it.
        generator: random source of the mini-batch order (seed it for reproducibility).
        inner_params: which parameters adapt (see :class:`MetaLearner`); the others get no
            Reptile direction.
    """

    def __init__(
        self,
        model: nn.Module,
        loss: Loss = F.cross_entropy,
        *,
        inner_lr,
        inner_steps: int = 5,
        inner_optimizer: str = "sgd",
        inner_batch_size: int | None = None,
        adam_betas: tuple[float, float] = (0.0, 0.999),
        inner_state: str = "reset",
        path: str = "auto",
        generator: torch.Generator | None = None,
        inner_params: InnerParams = None,
        memory_budget: float = DEFAULT_BUDGET,
    ) -> None:
        super().__init__(
            model,
            loss,
            inner_lr=inner_lr,
            inner_steps=inner_steps,
            path=path,
            inner_params=inner_params,
            memory_budget=memory_budget,
        )
        require("inner_batch_size", count_problem(inner_batch_size, 1, optional=True))
        if inner_state not in ("reset", "carry"):
            raise ValueError(f"inner_state must be 'reset' or 'carry', got {inner_state!r}")
        self.optimizer = make_inner_optimizer(inner_optimizer, adam_betas)
        self.inner_batch_size, self.generator = inner_batch_size, generator
        self.inner_state = inner_state
        self.carried: dict | None = None  # the inner optimiser's state when carried
        self._used: dict[tuple, set[str]] = {}  # parameters the loss uses, per batch shape

    def used_params(self, executor: TaskExecutor, params: Params, batch: TaskBatch) -> set[str]:
        """The parameters the loss uses (:func:`~metagrad.algorithms.paths.probe` on the first
        task), probed once per batch shape. Reptile's direction cannot tell an unused
        parameter (no gradient) from a used one that did not move."""
        key = (tuple(batch.support_x.shape[1:]), tuple(batch.support_y.shape[1:]))
        key += (batch.support_x.dtype, batch.support_y.dtype)
        if key not in self._used:
            x, y = batch.support_x[0], batch.support_y[0]
            self._used[key] = probe(executor, self.loss, params, x, y)
        return self._used[key]

    def inner_loop(self, inner_steps: int | None = None, inner_lr=None) -> InnerLoop:
        base = super().inner_loop(inner_steps, inner_lr)
        return InnerLoop(
            base.inner_lr,
            base.inner_steps,
            True,
            self.optimizer,
            state=self.carried,
            adapted=base.adapted,
        )

    def backward(self, batch: TaskBatch, *, meta_batch_size: int | None = None) -> MetaOutput:
        """Write (accumulate) the Reptile direction of ``batch`` into ``.grad`` (its share of
        a meta-batch of ``meta_batch_size`` tasks, if given: see :meth:`MetaLearner.backward`)."""
        params = self.params
        batch = autocast_dtype(check_batch(batch), params)
        executor, _ = self.plan_for(batch, meta_batch_size)  # Reptile does not chunk
        used = self.used_params(executor, params, batch)
        direction, out, state = reptile_direction(
            executor,
            self.loss,
            params,
            batch,
            self.inner_loop(),
            self.inner_batch_size,
            self.generator,
            meta_batch_size,
        )
        finite_or_raise(torch.stack([d.abs().max() for d in direction.values()]), "Reptile step")
        # A parameter the loss never uses stays where it is and gets no gradient (as on MAML's
        # path), so an optimiser's weight decay does not move it.
        moved = self.adapted_params
        accumulate_grad(params, {k: v for k, v in direction.items() if k in used and k in moved})
        if self.inner_state == "carry":
            self.carried = {g: detached(sub) for g, sub in state.items()}
        return out

    chunked = False  # one pass over the meta-batch: no chunk sizes to try

    def _side_state(self) -> object:
        return (None if self.generator is None else self.generator.get_state(), self.carried)

    def _set_side_state(self, state: object) -> None:
        generator, self.carried = state
        if generator is not None:
            self.generator.set_state(generator)

    def _draws(self) -> object:
        if self.inner_state == "carry":
            raise UsageError(
                "Reptile's carried inner state (inner_state = 'carry') runs the tasks of a "
                "meta-batch in sequence, so it cannot take them one at a time or over several "
                "processes; use inner_state = 'reset', or train.reduce = 'all_reduce' on one "
                "process"
            )
        return (self.generator or torch.default_generator).get_state()  # mini-batch order

    def _rewind(self, draws: object) -> None:
        (self.generator or torch.default_generator).set_state(draws)

    def state_dict(self) -> dict:
        state = super().state_dict()
        return state if self.carried is None else {**state, "inner_state": self.carried}

    def load_state_dict(self, state: dict) -> None:
        state = dict(state)
        if "inner_state" in state and self.inner_state != "carry":
            raise ValueError(
                f"this Reptile (inner_state={self.inner_state!r}) cannot load a learner state "
                f"with {sorted(state)}: it was saved with algorithm.inner_state = 'carry'; test "
                "it with its own run's config.toml"
            )
        self.carried = state.pop("inner_state", None)
        super().load_state_dict(state)
