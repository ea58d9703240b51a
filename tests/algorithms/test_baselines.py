"""The pretrained baseline: plain multi-task regression, the same on every path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import assert_rel_close, regression_batch
from metagrad.algorithms.baselines import Pretrained
from metagrad.evaluate.mean import MeanPredictor
from metagrad.models import MLP
from metagrad.tasks.sinusoid import SinusoidTasks


@pytest.mark.parametrize("path", ["loop", "vectorized"])
def test_pretrained_gradient_is_that_of_the_pooled_regression_loss(path):
    model, batch = MLP(2, 1, (6,)).double(), regression_batch()
    Pretrained(model, F.mse_loss, inner_lr=0.01, path=path).backward(batch)
    x = torch.cat([batch.support_x, batch.query_x], 1).flatten(0, 1)
    y = torch.cat([batch.support_y, batch.query_y], 1).flatten(0, 1)
    expected = torch.autograd.grad(F.mse_loss(model(x), y), list(model.parameters()))
    for (name, p), g in zip(model.named_parameters(), expected):
        assert_rel_close(p.grad, g, 1e-12, name)


def test_mean_predictor_predicts_the_mean_function():
    family = SinusoidTasks()
    x = torch.linspace(-5, 5, 7)[:, None]
    # E[y | x] by brute force over many tasks agrees with the closed form.
    batch, _ = family.draw(np.random.default_rng(0), 20000, 1, 7)
    amp_phase = family.draw(np.random.default_rng(0), 20000, 7, 0)[1]
    mc = family.curve(amp_phase, x[:, 0].numpy()).mean(0)
    assert np.allclose(family.mean_curve(x)[:, 0].numpy(), mc, atol=0.05)
    result = MeanPredictor(F.mse_loss, family.mean_curve).evaluate([batch], steps=2)
    assert result.losses.shape == (3, 20000)
    assert result.losses[0].mean() == pytest.approx(2.94, abs=0.1)  # the paper's 2.91 row
