"""The "pretrained" baseline of the MAML paper's regression experiment.

Ordinary supervised training on the pooled data of all tasks (it learns to regress to the mean
function), fine-tuned on each test task with the same inner steps as MAML at meta-test time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from metagrad.algorithms.learner import MetaLearner, accumulate_grad
from metagrad.algorithms.maml import MetaOutput
from metagrad.algorithms.paths import autocast_dtype, check_batch
from metagrad.functional.inner import gradients
from metagrad.functional.params import expand_tasks
from metagrad.types import Loss, TaskBatch


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

    def backward(self, batch: TaskBatch, *, meta_batch_size: int | None = None) -> MetaOutput:
        """Accumulate the gradient of the mean loss over all tasks' examples into ``.grad``
        (its share of a meta-batch of ``meta_batch_size`` tasks, if given)."""
        params, executor = self.params, self.executor
        batch = autocast_dtype(check_batch(batch), params)
        x = torch.cat([batch.support_x, batch.query_x], dim=1)  # [tasks, n, ...]
        y = torch.cat([batch.support_y, batch.query_y], dim=1)
        out = executor.predict_all(expand_tasks(params, batch.num_tasks), x)  # [tasks, n, ...]
        per_task = executor.task_losses(self.loss, out, y)
        mean = per_task.mean() if meta_batch_size is None else per_task.sum() / meta_batch_size
        grads = gradients(mean, params, create_graph=False, what="training loss")
        accumulate_grad(params, grads)
        n = batch.support_x.shape[1]  # report the query part, as the meta-learners do
        q_out = out[:, n:].detach()
        q_losses = executor.task_losses(self.loss, q_out, batch.query_y)
        return MetaOutput(q_losses.mean(), q_losses, q_out)
