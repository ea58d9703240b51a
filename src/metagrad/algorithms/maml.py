"""MAML and first-order MAML as pure functions (Finn, Abbeel & Levine, 2017).

The meta-objective is the mean over tasks of the query loss after adapting to the support set:
``L(theta) = mean_t loss(f(query_x_t; phi_t(theta)), query_y_t)``. Second-order MAML
differentiates through the inner gradients; FOMAML (``first_order=True``) treats them as
constants, so its meta-gradient is the query gradient at the adapted parameters. The inner step
itself, ``phi = theta - alpha * grad L(theta)``, is :func:`metagrad.functional.inner_step`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from metagrad.algorithms.paths import TaskExecutor
from metagrad.functional.inner import InnerLoop, gradients
from metagrad.types import Loss, Params, TaskBatch


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


def maml_objective(
    executor: TaskExecutor, loss: Loss, params: Params, batch: TaskBatch, inner: InnerLoop
) -> MetaOutput:
    """The MAML meta-loss of a meta-batch, differentiable w.r.t. ``params`` (``theta``).

    Algorithm 1 of the paper, lines 3-8 (line 8's step is taken by the caller's optimiser on
    the gradient of the returned loss):
    """
    # 3: a batch of tasks T_i ~ p(T)                      # batch: [tasks, ...] support / query
    # 4-7: for all T_i, phi_i = theta - alpha grad_theta L_Ti(f_theta) on the support set
    phi, _ = executor.adapt_all(loss, params, batch.support_x, batch.support_y, inner)
    # 8: sum_i L_Ti(f_phi_i) on the query sets (the mean: the gradient's scale is outer_lr's)
    out = executor.predict_all(phi, batch.query_x)  # [tasks, n_query, ...]
    losses = executor.task_losses(loss, out, batch.query_y)  # [tasks]
    return MetaOutput(losses.mean(), losses.detach(), out.detach())


def multi_step_objective(
    executor: TaskExecutor,
    loss: Loss,
    params: Params,
    batch: TaskBatch,
    inner: InnerLoop,
    weights: Sequence[float],
) -> MetaOutput:
    """MAML++'s multi-step loss (MSL): ``sum_s weights[s] * (query loss after step s + 1)``,
    the mean over tasks; differentiable w.r.t. ``params``.

    With weights ``[0, ..., 0, 1]`` it is :func:`maml_objective`. ``task_losses`` are the
    weighted sums per task; ``query_out`` the predictions after the last step.
    """
    x, y = batch.support_x, batch.support_y
    total, out = None, None
    for phi, w in zip(executor.trajectory_all(loss, params, x, y, inner), weights, strict=True):
        out = executor.predict_all(phi, batch.query_x)  # [tasks, n_query, ...]
        step = w * executor.task_losses(loss, out, batch.query_y)  # [tasks]
        total = step if total is None else total + step
    return MetaOutput(total.mean(), total.detach(), out.detach())


def meta_gradient(
    objective: Callable[[TaskBatch], MetaOutput],
    params: Params,
    batch: TaskBatch,
    chunk_size: int | None = None,
    meta_batch_size: int | None = None,
) -> tuple[Params, MetaOutput]:
    """Gradient of the mean meta-loss, accumulated over chunks of tasks.

    Each chunk's graph is freed before the next is built, so memory grows with
    ``chunk_size``, not with the meta-batch. ``chunk_size=1`` is the per-task loop's memory.
    ``meta_batch_size``: ``batch`` is part of a meta-batch of that many tasks (a process's
    share), whose mean the gradient is a share of: ``sum over batch of grad L_t / size``.
    """
    tasks = meta_batch_size or batch.num_tasks
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
