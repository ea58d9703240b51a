"""A meta-batch split over processes: each adapts its tasks, all take the same step.

Every process draws the whole meta-batch from the same sampler state (cheap for metagrad's
samplers) and keeps its consecutive block of tasks (:meth:`Ranks.block`): the tasks of a
meta-batch are split, never the examples of a task (which would change what transductive
BatchNorm normalises with). So the global meta-batch, and the sampler state a checkpoint
keeps, are the same for any number of processes.

The meta-gradient is the mean over the meta-batch's ``N`` tasks of each task's gradient. Each
process computes its share, ``sum over its tasks of grad L_t / N``
(:meth:`~metagrad.algorithms.MetaLearner.backward` with ``meta_batch_size=N``), and the shares
are summed explicitly, not through DistributedDataParallel, whose hooks do not reduce
gradients of a loss built with ``autograd.grad(create_graph=True)`` correctly (pytorch issue
47562):

- ``train.reduce = "all_reduce"`` (default): one ``all_reduce`` of the flattened shares; equal
  to one process's meta-gradient up to the rounding of the sum's order.
- ``train.reduce = "ordered"``: every task's share is computed alone
  (:meth:`~metagrad.algorithms.MetaLearner.task_gradients`), gathered, and summed in the
  meta-batch's task order on every process, so the result is bit-identical for any number of
  processes (and to one process's task-by-task backward: the ``"loop"`` path, or
  ``algorithm.chunk_size = 1``). It moves ``N`` gradients instead of one.

The per-task query losses and accuracies travel in the same exchange, so logging costs no
extra collective.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import Tensor

from metagrad.algorithms.learner import MetaLearner
from metagrad.algorithms.maml import MetaOutput
from metagrad.train.distributed import Ranks, all_sum, gather_rows
from metagrad.types import TaskBatch


@dataclass(frozen=True)
class StepResult:
    """What a meta-batch gave, over every process.

    Attributes:
        loss: the mean query loss over the meta-batch's tasks (NaN if any task's was).
        accuracy: the mean query accuracy (classification), else None.
    """

    loss: float
    accuracy: float | None


def autocasting(device: torch.device, precision: str):
    """``torch.autocast`` to ``precision`` ("bf16", "fp16") on ``device``; "fp32": no-op."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def part(batch: TaskBatch, tasks: slice) -> TaskBatch:
    """The tasks ``tasks`` of ``batch`` (views)."""
    return TaskBatch(
        *(t[tasks] for t in (batch.support_x, batch.support_y, batch.query_x, batch.query_y))
    )


def sharded_backward(
    learner: MetaLearner,
    batch: TaskBatch,
    ranks: Ranks,
    reduce: str = "all_reduce",
    classification: bool = False,
    device: torch.device | str = "cpu",
) -> StepResult:
    """Write the meta-gradient of the whole meta-batch ``batch`` into ``.grad`` of
    ``learner.parameters()`` on every process, each computing its block of tasks.

    Args:
        learner: the meta-learner (``.grad`` is expected to be None: zero it first).
        batch: the whole meta-batch (the same on every process), on any device.
        ranks: this process's place (one process: ``learner.backward(batch)`` itself).
        reduce: ``"all_reduce"`` or ``"ordered"`` (module docstring).
        classification: also report the query accuracy.
        device: where the tasks run.
    """
    tasks = len(batch)
    if not ranks.many and reduce == "all_reduce":  # one process: exactly the plain step
        batch = batch.to(device)
        out = learner.backward(batch)
        return StepResult(out.loss.item(), _accuracy(out, batch, classification))
    local = part(batch, ranks.block(tasks)).to(device)
    params = list(learner.parameters())
    failure = None
    try:
        if reduce == "ordered":
            shares, out = learner.task_gradients(local, tasks)
        else:
            out = learner.backward(local, meta_batch_size=tasks)
            shares = [[p.grad for p in params]]
    except FloatingPointError as e:  # the others wait for this process: all stop together
        failure, out, shares = e, None, [[None] * len(params)] * len(local)
    scores = _scores(out, local, classification)  # [tasks here, 3]
    has = [any(row[i] is not None for row in shares) for i in range(len(params))]
    if reduce == "ordered":
        rows = torch.stack([_flat(params, row) for row in shares])  # [tasks here, P]
        rows = torch.cat([rows, scores.to(rows)], dim=1)
        every = gather_rows(ranks, rows, ranks.counts(tasks))  # [tasks, P + 3]
        flat = every[0].clone()
        for row in every[1:]:  # in the meta-batch's task order, whatever the processes
            flat += row
    else:
        flat = _flat(params, shares[0])
        flat = all_sum(ranks, torch.cat([flat, scores.sum(0).to(flat)]))  # [P + 3]
    loss, hits, failed = flat[-3:].tolist()
    if failed:
        raise failure or FloatingPointError(
            f"adapting {int(failed)} task(s) of this meta-batch on another process gave a "
            "non-finite value: lower train.outer_lr or algorithm.inner_lr, or set "
            "train.grad_clip"
        )
    _write(params, flat[:-3], has)
    return StepResult(loss / tasks, hits / tasks if classification else None)


def _accuracy(out: MetaOutput, batch: TaskBatch, classification: bool) -> float | None:
    if not classification:
        return None
    return (out.query_out.argmax(-1) == batch.query_y).float().mean().item()


def _scores(out: MetaOutput | None, local: TaskBatch, classification: bool) -> Tensor:
    """``[tasks, 3]``: each task's query loss, its accuracy (0 for regression) and whether its
    process failed (1; then the loss is NaN)."""
    n = len(local)
    if out is None:
        return torch.tensor([[float("nan"), 0.0, 1.0]], dtype=torch.float64).expand(n, 3)
    hits = torch.zeros(n, dtype=torch.float64)
    if classification:
        hits = (out.query_out.argmax(-1) == local.query_y).double().flatten(1).mean(1).cpu()
    losses = out.task_losses.detach().double().cpu()
    return torch.stack([losses, hits, torch.zeros(n, dtype=torch.float64)], dim=1)


def _flat(params: list[Tensor], grads: list[Tensor | None]) -> Tensor:
    """The gradients flattened into one vector, zeros where a parameter has none."""
    return torch.cat(
        [
            (g if g is not None else torch.zeros_like(p)).detach().reshape(-1).to(p.dtype)
            for p, g in zip(params, grads, strict=True)
        ]
    )


def _write(params: list[Tensor], flat: Tensor, has: list[bool]) -> None:
    """``.grad`` of each parameter from its slice of ``flat`` (None where no task gave one)."""
    start = 0
    for p, given in zip(params, has, strict=True):
        n = p.numel()
        p.grad = flat[start : start + n].view_as(p) if given else None  # views of one buffer
        start += n
