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
from metagrad.algorithms.runner import autocast_dtype, check_batch, task_losses
from metagrad.functional.inner import gradients
from metagrad.functional.params import expand_tasks
from metagrad.tasks.batch import TaskBatch


class Pretrained(MetaLearner):
    """Multi-task pretraining: minimise the loss on every task's support and query data."""

    def __init__(
        self,
        model: nn.Module,
        loss: Loss = F.mse_loss,
        *,
        inner_lr,
        inner_steps=1,
        path: str = "auto",
    ):
        super().__init__(model, loss, inner_lr=inner_lr, inner_steps=inner_steps, path=path)

    def backward(self, batch: TaskBatch) -> MetaOutput:
        """Accumulate the gradient of the mean loss over all tasks' examples into ``.grad``."""
        params, runner = self.params, self.runner
        batch = autocast_dtype(check_batch(batch), params)
        x = torch.cat([batch.support_x, batch.query_x], dim=1)  # [tasks, n, ...]
        y = torch.cat([batch.support_y, batch.query_y], dim=1)
        if runner.vectorized:
            out = runner.batched(expand_tasks(params, batch.num_tasks), x)
            per_task = task_losses(self.loss, out, y)
        else:
            out = torch.stack([runner.forward(params, xi) for xi in x])
            per_task = torch.stack([self.loss(o, yi) for o, yi in zip(out, y)])
        grads = gradients(per_task.mean(), params, create_graph=False, what="training loss")
        accumulate_grad(params, grads)
        n = batch.support_x.shape[1]  # report the query part, as the meta-learners do
        q_out = out[:, n:].detach()
        q_losses = task_losses(self.loss, q_out, batch.query_y)
        return MetaOutput(q_losses.mean(), q_losses, q_out)
