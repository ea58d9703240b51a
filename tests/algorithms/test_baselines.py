"""The pretrained baseline: plain multi-task regression, the same on every path."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import assert_rel_close, regression_batch
from metagrad.algorithms.baselines import Pretrained
from metagrad.evaluate.mean import MeanPredictor
from metagrad.models import MLP


@pytest.mark.parametrize("path", ["loop", "vectorized"])
def test_pretrained_gradient_is_that_of_the_pooled_regression_loss(path):
    model, batch = MLP(2, 1, (6,)).double(), regression_batch()
    Pretrained(model, F.mse_loss, inner_lr=0.01, path=path).backward(batch)
    x = torch.cat([batch.support_x, batch.query_x], 1).flatten(0, 1)
    y = torch.cat([batch.support_y, batch.query_y], 1).flatten(0, 1)
    expected = torch.autograd.grad(F.mse_loss(model(x), y), list(model.parameters()))
    for (name, p), g in zip(model.named_parameters(), expected):
        assert_rel_close(p.grad, g, 1e-12, name)


def test_mean_predictor_predicts_the_support_mean():
    batch = regression_batch(features=1)
    result = MeanPredictor(F.mse_loss).evaluate([batch], steps=2)
    t = batch.task(1)
    expected = F.mse_loss(t.support_y.mean().expand_as(t.query_y), t.query_y).item()
    assert result.losses.shape == (3, 3) and result.losses[2, 1] == pytest.approx(expected)
