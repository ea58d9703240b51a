"""Reptile as a pure function (Nichol, Achiam & Schulman, 2018).

For each task, run ``k`` steps of SGD or Adam from ``theta`` on the task's support data to get
``phi``; the batched Reptile update is ``theta <- theta + eps * (mean_t phi_t - theta)``. We
return the *direction* ``theta - mean_t phi_t``, which written into ``.grad`` makes any
``torch.optim`` optimiser take the Reptile step (plain SGD with ``lr=eps`` gives the paper's).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from metagrad.algorithms.maml import InnerLoop, Loss, MetaOutput
from metagrad.algorithms.runner import TaskRunner, task_losses
from metagrad.functional.inner import adapt_with_state
from metagrad.functional.params import Params, detached
from metagrad.tasks.batch import TaskBatch


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
    runner: TaskRunner,
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
        runner: the model and its execution path.
        loss: per-task loss ``loss(output, target) -> scalar``.
        params: ``theta`` (not modified; no graph is kept to it).
        batch: the tasks; ``phi`` is trained on the support sets only.
        inner: inner learning rate(s), steps and update rule (always first order); every task
            starts from ``inner.state`` (a fresh state when None).
        inner_batch_size: support examples per inner step (None: all).
        generator: random source of the mini-batch order.

    Returns:
        ``(direction, output, state)``. ``state`` is where the optimiser would be had the tasks
        run one after the other from ``inner.state`` (:meth:`Adam.chain`): pass it on as the
        next batch's ``inner.state`` to keep Adam's moments across tasks, as Reptile's code
        does. The tasks themselves run in parallel, each from ``inner.state``.
    """
    theta = detached(params)
    pick = minibatch_schedule(batch.support_x.shape[1], inner_batch_size, generator)
    has_query = batch.query_x.shape[1] > 0  # Reptile needs no query set; it may be empty
    start = inner.state if inner.state is not None else inner.optimizer.init(theta)
    if runner.vectorized:
        delta, ends = _displacement(
            runner,
            loss,
            theta,
            batch.support_x,
            batch.support_y,
            inner,
            start,
            pick,
            batch.num_tasks,
        )
        mean_delta = {k: v.mean(0) for k, v in delta.items()}
        out = _query(runner.batched, theta, delta, batch.query_x) if has_query else None
    else:
        mean_delta = {k: torch.zeros_like(v) for k, v in theta.items()}
        outs, task_ends = [], []
        for task in batch:
            delta, end = _displacement(
                runner, loss, theta, task.support_x, task.support_y, inner, start, pick, None
            )
            task_ends.append(end)
            for k, v in delta.items():
                mean_delta[k] += v / batch.num_tasks
            if has_query:
                outs.append(_query(runner.forward, theta, delta, task.query_x))
        out = torch.stack(outs) if has_query else None
        ends = {g: {k: torch.stack([e[g][k] for e in task_ends]) for k in start[g]} for g in start}
    state = inner.optimizer.chain(start, ends, inner.inner_steps, batch.num_tasks)
    if has_query:
        losses = task_losses(loss, out, batch.query_y)
    else:  # report NaN losses and an empty output rather than fail
        losses = batch.support_x.new_full((batch.num_tasks,), float("nan"))
        out = batch.support_x.new_empty(batch.num_tasks, 0)
    direction = {k: -v for k, v in mean_delta.items()}
    return direction, MetaOutput(losses.mean(), losses, out), state


def _displacement(
    runner: TaskRunner,
    loss: Loss,
    theta: Params,
    x: Tensor,
    y: Tensor,
    inner: InnerLoop,
    start: dict,
    pick,
    tasks: int | None,
) -> tuple[Params, dict]:
    """``phi - theta`` after the inner loop, per task when ``tasks`` is given, and the inner
    optimiser's final state (started from ``start``).

    The inner loop runs on the displacement itself (``phi = theta + delta``, ``delta`` from 0),
    so the small Reptile direction is accumulated directly instead of recovered as the
    difference of two nearly equal tensors, which would lose float32 precision.
    """
    shape = () if tasks is None else (tasks,)
    delta0 = {k: v.new_zeros(*shape, *v.shape) for k, v in theta.items()}
    per_task = tasks is not None

    task_loss = runner.support_loss(loss, per_task)

    def support_loss(delta: Params, data: tuple[Tensor, Tensor]) -> Tensor:
        return task_loss({k: theta[k] + delta[k] for k in theta}, data)

    idx = (
        (lambda s: (x[:, pick(s)], y[:, pick(s)]))
        if per_task
        else (lambda s: (x[pick(s)], y[pick(s)]))
    )
    delta, end = adapt_with_state(
        support_loss,
        delta0,
        (x, y),
        inner_lr=inner.inner_lr,
        inner_steps=inner.inner_steps,
        first_order=True,
        optimizer=inner.optimizer,
        batches=None if pick is None else idx,
        state=start,
    )
    return {k: v.detach() for k, v in delta.items()}, end


def _query(forward, theta: Params, delta: Params, x: Tensor) -> Tensor:
    """Adapted predictions on the query inputs, for monitoring (no graph)."""
    with torch.no_grad():
        return forward({k: theta[k] + delta[k] for k in theta}, x)
