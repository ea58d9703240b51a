"""The regression-to-the-mean baseline: predict the task distribution's mean function.

``E[y | x]`` over tasks is what plain regression on all tasks' data converges to; it ignores
the task at hand, so adaptation has nothing to start from. The MAML paper's sinusoid table
reports it next to the pretrained network.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from metagrad.algorithms.maml import Loss
from metagrad.evaluate.protocol import EvalResult
from metagrad.types import TaskBatch


class MeanPredictor:
    """Predicts ``mean_fn(x)`` for every query input, whatever the task.

    Args:
        loss: per-task loss.
        mean_fn: the task distribution's mean function ``E[y | x]``.
    """

    def __init__(self, loss: Loss, mean_fn: Callable[[Tensor], Tensor]) -> None:
        self.loss, self.mean_fn = loss, mean_fn

    def evaluate(self, batches: Iterable[TaskBatch], steps: int) -> EvalResult:
        """Scores as the protocol reports them; identical after every "step"."""
        losses = []
        for b in batches:
            pred = self.mean_fn(b.query_x)
            losses.append(torch.stack([self.loss(p, y) for p, y in zip(pred, b.query_y)]))
        row = torch.cat(losses).cpu().numpy()
        return EvalResult(row[None].repeat(steps + 1, axis=0), None)
