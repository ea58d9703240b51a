"""Reptile's direction against its closed forms."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import assert_rel_close, regression_batch
from metagrad import Reptile
from metagrad.algorithms.reptile import minibatch_schedule
from metagrad.models import MLP


def support_grads(model, batch):
    """Per-task gradients of the support loss at theta: list of dicts."""
    out = []
    for t in range(batch.num_tasks):
        loss = F.mse_loss(model(batch.support_x[t]), batch.support_y[t])
        names = [k for k, _ in model.named_parameters()]
        out.append(dict(zip(names, torch.autograd.grad(loss, list(model.parameters())))))
    return out


@pytest.mark.parametrize("path", ["loop", "vectorized"])
def test_one_sgd_step_direction_is_lr_times_mean_gradient(path):
    model, batch = MLP(2, 1, (5, 4)).double(), regression_batch()
    grads = support_grads(model, batch)
    Reptile(model, F.mse_loss, inner_lr=0.3, inner_steps=1, path=path).backward(batch)
    for name, p in model.named_parameters():
        expected = 0.3 * sum(g[name] for g in grads) / batch.num_tasks
        assert_rel_close(p.grad, expected, 1e-12, name)


@pytest.mark.parametrize("path", ["loop", "vectorized"])
def test_one_adam_step_direction_is_lr_times_mean_sign_like_step(path):
    # Adam with beta1 = 0, one step, bias-corrected: phi = theta - lr * g / (|g| + eps).
    model, batch = MLP(2, 1, (5, 4)).double(), regression_batch()
    grads = support_grads(model, batch)
    Reptile(
        model, F.mse_loss, inner_lr=0.01, inner_steps=1, inner_optimizer="adam", path=path
    ).backward(batch)
    for name, p in model.named_parameters():
        expected = sum(0.01 * g[name] / (g[name].abs() + 1e-8) for g in grads) / batch.num_tasks
        assert_rel_close(p.grad, expected, 1e-10, name)


def test_sgd_optimizer_with_lr_epsilon_takes_the_papers_step():
    model, batch = MLP(2, 1, (5, 4)).double(), regression_batch()
    theta = {k: v.detach().clone() for k, v in model.named_parameters()}
    reptile = Reptile(model, F.mse_loss, inner_lr=0.1, inner_steps=3, path="loop")
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    direction = None
    reptile.backward(batch)
    direction = {k: p.grad.clone() for k, p in model.named_parameters()}
    opt.step()
    for k, p in model.named_parameters():
        # theta + eps * (mean phi - theta) with mean phi = theta - direction
        assert torch.allclose(p, theta[k] - 0.5 * direction[k], atol=1e-14)


def test_minibatch_schedule_cycles_through_a_shuffled_support_set():
    g = torch.Generator().manual_seed(0)
    pick = minibatch_schedule(10, 4, g)
    first_epoch = torch.cat([pick(0), pick(1), pick(2)[:2]])
    assert sorted(first_epoch.tolist()) == list(range(10))  # every example once per pass
    assert pick(0).tolist() == pick(0).tolist()  # a step's indices are fixed once drawn
    assert minibatch_schedule(10, None, g) is None and minibatch_schedule(10, 10, g) is None


@pytest.mark.parametrize("path", ["loop", "vectorized"])
def test_minibatched_inner_loop_matches_between_paths(path):
    model, batch = MLP(2, 1, (5, 4)).double(), regression_batch(support=8)
    Reptile(
        model,
        F.mse_loss,
        inner_lr=0.05,
        inner_steps=5,
        inner_batch_size=3,
        generator=torch.Generator().manual_seed(3),
        path=path,
    ).backward(batch)
    got = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad()
    Reptile(
        model,
        F.mse_loss,
        inner_lr=0.05,
        inner_steps=5,
        inner_batch_size=3,
        generator=torch.Generator().manual_seed(3),
        path="loop",
    ).backward(batch)
    for k, p in model.named_parameters():
        assert_rel_close(got[k], p.grad, 1e-12, k)
