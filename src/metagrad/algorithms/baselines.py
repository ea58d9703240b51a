"""The "pretrained" baseline of the MAML paper's regression experiment.

Ordinary supervised training on the pooled data of all tasks (it learns to regress to the mean
function), fine-tuned on each test task with the same inner steps as MAML at meta-test time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from metagrad.algorithms.learner import MetaLearner, accumulate_grad
from metagrad.algorithms.maml import Loss, MetaOutput
from metagrad.algorithms.runner import autocast_dtype, check_batch
from metagrad.functional.inner import gradients
from metagrad.tasks.batch import TaskBatch


class Pretrained(MetaLearner):
    """Multi-task pretraining: minimise the loss on every task's support and query data."""

    def __init__(self, model: nn.Module, loss: Loss = F.mse_loss, *, inner_lr, inner_steps=1):
        super().__init__(model, loss, inner_lr=inner_lr, inner_steps=inner_steps, path="loop")

    def backward(self, batch: TaskBatch) -> MetaOutput:
        """Accumulate the gradient of the mean loss over all tasks' examples into ``.grad``."""
        params = self.params
        batch = autocast_dtype(check_batch(batch), params)
        runner = self.runner
        x = torch.cat([batch.support_x, batch.query_x], dim=1)  # [tasks, n, ...]
        y = torch.cat([batch.support_y, batch.query_y], dim=1)
        per_task = torch.stack([self.loss(runner.forward(params, xi), yi) for xi, yi in zip(x, y)])
        accumulate_grad(params, gradients(per_task.mean(), params, create_graph=False,
                                          what="training loss"))
        with torch.no_grad():
            out = torch.stack([runner.forward(params, q) for q in batch.query_x])
        n = batch.support_x.shape[1]
        q_losses = torch.stack([self.loss(o, yq) for o, yq in zip(out, y[:, n:])])
        return MetaOutput(q_losses.mean(), q_losses.detach(), out)
