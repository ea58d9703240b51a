"""MAML and first-order MAML as pure functions (Finn, Abbeel & Levine, 2017).

The meta-objective is the mean over tasks of the query loss after adapting to the support set:
``L(theta) = mean_t loss(f(query_x_t; adapt_t(theta)), query_y_t)``. Second-order MAML
differentiates through the inner gradients; FOMAML (``first_order=True``) treats them as
constants, so its meta-gradient is the query gradient at the adapted parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from metagrad.algorithms.runner import TaskRunner, task_losses
from metagrad.functional.inner import adapt, gradients
from metagrad.functional.optim import SGD, Adam, LearningRate
from metagrad.functional.params import Params, expand_tasks
from metagrad.tasks.batch import TaskBatch

Loss = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class MetaOutput:
    """What one meta-batch gave.

    Attributes:
        loss: mean query loss over tasks (differentiable when returned by an objective).
        task_losses: ``[tasks]`` query loss of each task after adaptation (detached).
        query_out: ``[tasks, n_query, ...]`` adapted predictions on the query sets (detached).
    """

    loss: Tensor
    task_losses: Tensor
    query_out: Tensor


@dataclass(frozen=True)
class InnerLoop:
    """How a task is adapted: learning rate(s), steps, order, update rule."""

    inner_lr: LearningRate | Sequence[LearningRate]
    inner_steps: int
    first_order: bool = False
    optimizer: SGD | Adam = field(default_factory=SGD)
    checkpoint: bool = False  # recompute the steps in the backward pass: sqrt(steps) memory
    state: dict | None = None  # optimiser state every task starts from (None: a fresh one)


def adapt_tasks(
    runner: TaskRunner,
    loss: Loss,
    params: Params,
    x: Tensor,
    y: Tensor,
    inner: InnerLoop,
    batches: Callable[[int], tuple[Tensor, Tensor]] | None = None,
) -> Params:
    """Adapt ``params`` to every task of ``x [tasks, N, ...]`` at once (vectorised path).

    Returns per-task parameters ``[tasks, ...]``.
    """
    return _adapt(
        runner.support_loss(loss, True), expand_tasks(params, x.shape[0]), x, y, inner, batches
    )


def adapt_task(
    runner: TaskRunner,
    loss: Loss,
    params: Params,
    x: Tensor,
    y: Tensor,
    inner: InnerLoop,
    batches: Callable[[int], tuple[Tensor, Tensor]] | None = None,
) -> Params:
    """Adapt ``params`` to one task ``x [N, ...]`` (the plain per-task reference)."""
    return _adapt(runner.support_loss(loss, False), params, x, y, inner, batches)


def _adapt(support_loss, params: Params, x: Tensor, y: Tensor, inner: InnerLoop, batches):
    return adapt(
        support_loss,
        params,
        (x, y),
        inner_lr=inner.inner_lr,
        inner_steps=inner.inner_steps,
        first_order=inner.first_order,
        optimizer=inner.optimizer,
        batches=batches,
        checkpoint=inner.checkpoint,
        state=inner.state,
    )


def maml_objective(
    runner: TaskRunner, loss: Loss, params: Params, batch: TaskBatch, inner: InnerLoop
) -> MetaOutput:
    """The MAML meta-loss of a meta-batch, differentiable w.r.t. ``params``."""
    if runner.vectorized:
        phi = adapt_tasks(runner, loss, params, batch.support_x, batch.support_y, inner)
        out = runner.batched(phi, batch.query_x)  # [tasks, n_query, ...]
        losses = task_losses(loss, out, batch.query_y)
    else:
        outs, per_task = [], []
        for task in batch:
            phi = adapt_task(runner, loss, params, task.support_x, task.support_y, inner)
            outs.append(runner.forward(phi, task.query_x))
            per_task.append(loss(outs[-1], task.query_y))
        out, losses = torch.stack(outs), torch.stack(per_task)
    return MetaOutput(losses.mean(), losses.detach(), out.detach())


def meta_gradient(
    objective: Callable[[TaskBatch], MetaOutput],
    params: Params,
    batch: TaskBatch,
    chunk_size: int | None = None,
) -> tuple[Params, MetaOutput]:
    """Gradient of the mean meta-loss, accumulated over chunks of tasks.

    Each chunk's graph is freed before the next is built, so memory grows with
    ``chunk_size``, not with the meta-batch. ``chunk_size=1`` is the per-task loop's memory.
    """
    tasks = batch.num_tasks
    grads: Params = {}
    task_l, query_out = [], []
    for chunk in batch.chunks(chunk_size or tasks):
        out = objective(chunk)
        weight = chunk.num_tasks / tasks
        for k, g in gradients(
            out.loss * weight, params, create_graph=False, what="meta-loss"
        ).items():
            grads[k] = grads[k] + g if k in grads else g
        # Keep only detached results: a spent graph frees its activations, but its nodes stay
        # allocated while the loss is referenced (about 0.3 MB per task for Conv4 with 5
        # steps), so holding every chunk's loss made the peak grow with the meta-batch.
        task_l.append(out.task_losses)
        query_out.append(out.query_out)
        del out
    losses = torch.cat(task_l)
    return grads, MetaOutput(losses.mean(), losses, torch.cat(query_out))
