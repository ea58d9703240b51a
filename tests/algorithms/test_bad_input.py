"""Bad input raises errors that name the problem and the fix."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import regression_batch
from metagrad import MAML, TaskBatch
from metagrad.models import MLP


def test_mismatched_task_dimensions():
    with pytest.raises(ValueError, match="mismatched task dimensions.*same leading number"):
        TaskBatch(
            torch.zeros(3, 5, 1), torch.zeros(3, 5, 1), torch.zeros(4, 5, 1), torch.zeros(4, 5, 1)
        )


def test_missing_task_dimension():
    with pytest.raises(ValueError, match=r"expected \[tasks, examples, ...\].*unsqueeze\(0\)"):
        TaskBatch(torch.zeros(5), torch.zeros(5), torch.zeros(5), torch.zeros(5))


def test_non_floating_inputs():
    with pytest.raises(ValueError, match="dtype torch.uint8.*floating.*float()"):
        TaskBatch(
            torch.zeros(2, 5, 1, dtype=torch.uint8),
            torch.zeros(2, 5, 1),
            torch.zeros(2, 5, 1),
            torch.zeros(2, 5, 1),
        )


def test_empty_support_set():
    with pytest.raises(ValueError, match="support set is empty.*shots >= 1"):
        TaskBatch(
            torch.zeros(2, 0, 1), torch.zeros(2, 0, 1), torch.zeros(2, 5, 1), torch.zeros(2, 5, 1)
        )


def test_inputs_and_targets_must_pair_up():
    with pytest.raises(ValueError, match="query_x has 5 examples per task but query_y has 4"):
        TaskBatch(
            torch.zeros(2, 5, 1), torch.zeros(2, 5, 1), torch.zeros(2, 5, 1), torch.zeros(2, 4, 1)
        )


def test_not_a_task_batch():
    with pytest.raises(TypeError, match="expected a metagrad TaskBatch"):
        MAML(MLP(1, 1), F.mse_loss, inner_lr=0.1).backward((torch.zeros(2, 5, 1),))


@pytest.mark.parametrize("path", ["loop", "vectorized"])
def test_non_finite_loss_names_the_cause(path):
    batch = regression_batch(features=1, dtype=torch.float32)
    bad = TaskBatch(
        batch.support_x, batch.support_y.clone().fill_(float("nan")), batch.query_x, batch.query_y
    )
    with pytest.raises(FloatingPointError, match="inner loss is nan.*learning rate"):
        MAML(MLP(1, 1), F.mse_loss, inner_lr=0.1, path=path).backward(bad)


def test_per_step_learning_rates_must_cover_the_steps():
    with pytest.raises(ValueError, match="2 per-step values .* for 3 inner steps"):
        MAML(MLP(1, 1), F.mse_loss, inner_lr=[0.1, 0.05], inner_steps=3).backward(
            regression_batch(features=1, dtype=torch.float32)
        )


def test_zero_training_steps_are_refused():
    with pytest.raises(ValueError, match="inner_steps must be an integer >= 1"):
        MAML(MLP(1, 1), F.mse_loss, inner_lr=0.1, inner_steps=0)
