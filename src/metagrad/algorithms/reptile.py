"""Reptile as a pure function (Nichol, Achiam & Schulman, 2018).

For each task, run ``k`` steps of SGD or Adam from ``theta`` on the task's support data to get
``phi``; the batched Reptile update is ``theta <- theta + eps * (mean_t phi_t - theta)``. We
return the *direction* ``theta - mean_t phi_t``, which written into ``.grad`` makes any
``torch.optim`` optimiser take the Reptile step (plain SGD with ``lr=eps`` gives the paper's).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
from torch import Tensor

from metagrad.algorithms.maml import MetaOutput
from metagrad.algorithms.paths import TaskExecutor
from metagrad.functional.inner import InnerLoop
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

    Returns:
        ``(direction, output, state)``. ``state`` is where the optimiser would be had the tasks
        run one after the other from ``inner.state`` (:meth:`Adam.sequential`): pass it on as
        the next batch's ``inner.state`` to keep Adam's moments across tasks, as Reptile's code
        does. The tasks themselves run in parallel, each from ``inner.state``.
    """
    theta = detached(params)
    pick = minibatch_schedule(batch.support_x.shape[1], inner_batch_size, generator)
    start = inner.state if inner.state is not None else inner.optimizer.init(theta)
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
    direction = {k: -v.mean(0) for k, v in delta.items()}
    return direction, MetaOutput(losses.mean(), losses, out), state
