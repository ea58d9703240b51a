"""Models that trip peers up: unused, frozen and tied parameters, buffers, running BatchNorm."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import assert_rel_close, global_norm, image_batch, regression_batch
from metagrad import MAML, Reptile

PATHS = ["loop", "vectorized"]


class WithUnused(nn.Module):
    def __init__(self):
        super().__init__()
        self.body, self.unused = nn.Linear(2, 1), nn.Linear(2, 1)

    def forward(self, x):
        return self.body(x)


class Tied(nn.Module):
    """Two layers sharing one weight matrix (as tied embeddings)."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(2, 2), nn.Linear(2, 2)
        self.b.weight = self.a.weight
        self.out = nn.Linear(2, 1)

    def forward(self, x):
        return self.out(torch.tanh(self.b(torch.tanh(self.a(x)))))


class WithBuffer(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("scale", torch.tensor([2.0, -1.0]))
        self.lin = nn.Linear(2, 1)

    def forward(self, x):
        return self.lin(x * self.scale)


@pytest.mark.parametrize("path", PATHS)
def test_unused_parameters_do_not_crash_and_get_no_gradient(path):
    model, batch = WithUnused().double(), regression_batch()
    out = MAML(model, F.mse_loss, inner_lr=0.1, inner_steps=2, path=path).backward(batch)
    assert torch.isfinite(out.loss)
    assert model.unused.weight.grad is None and model.body.weight.grad is not None
    Reptile(model, F.mse_loss, inner_lr=0.1, inner_steps=2, path=path).backward(batch)
    assert model.unused.weight.grad is None  # as on MAML's path: weight decay must not move it


@pytest.mark.parametrize("path", PATHS)
def test_frozen_parameters_are_not_adapted_nor_trained(path):
    model, batch = (
        nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)).double(),
        regression_batch(),
    )
    model[0].requires_grad_(False)
    learner = MAML(model, F.mse_loss, inner_lr=0.1, inner_steps=2, path=path)
    learner.backward(batch)
    assert model[0].weight.grad is None and model[2].weight.grad is not None
    phi = learner.adapt(batch.support_x[0], batch.support_y[0])
    assert set(phi) == {"2.weight", "2.bias"}
    # The reference: the frozen layer is a constant feature map, the head is meta-learned.
    feats = lambda x: torch.tanh(x @ model[0].weight.T + model[0].bias)
    head = {
        "w": model[2].weight.detach().clone().requires_grad_(),
        "b": model[2].bias.detach().clone().requires_grad_(),
    }
    total = 0
    for t in range(batch.num_tasks):
        w = dict(head)
        loss = F.mse_loss(feats(batch.support_x[t]) @ w["w"].T + w["b"], batch.support_y[t])
        for _ in range(2):
            g = torch.autograd.grad(loss, list(w.values()), create_graph=True)
            w = {k: v - 0.1 * gi for (k, v), gi in zip(w.items(), g)}
            loss = F.mse_loss(feats(batch.support_x[t]) @ w["w"].T + w["b"], batch.support_y[t])
        total = total + F.mse_loss(feats(batch.query_x[t]) @ w["w"].T + w["b"], batch.query_y[t])
    gw, gb = torch.autograd.grad(total / batch.num_tasks, [head["w"], head["b"]])
    assert_rel_close(model[2].weight.grad, gw, 1e-10)
    assert_rel_close(model[2].bias.grad, gb, 1e-10)


@pytest.mark.parametrize("path", ["loop", "vmap"])
def test_tied_weights_are_one_parameter(path):
    model, batch = Tied().double(), regression_batch()
    assert len(dict(model.named_parameters())) == 5  # a.weight once; b.weight is the same
    MAML(model, F.mse_loss, inner_lr=0.1, inner_steps=2, path=path).backward(batch)
    tied_grad = model.a.weight.grad.clone()
    # Reference: untie, differentiate, and add the two uses' gradients.
    theta = {k: v.detach().clone().requires_grad_() for k, v in model.named_parameters()}

    def fwd(w, x):
        h = torch.tanh(x @ w["a.weight"].T + w["a.bias"])
        h = torch.tanh(h @ w["a.weight"].T + w["b.bias"])
        return h @ w["out.weight"].T + w["out.bias"]

    total = 0
    for t in range(batch.num_tasks):
        w = dict(theta)
        for _ in range(2):
            g = torch.autograd.grad(
                F.mse_loss(fwd(w, batch.support_x[t]), batch.support_y[t]),
                list(w.values()),
                create_graph=True,
            )
            w = {k: v - 0.1 * gi for (k, v), gi in zip(w.items(), g)}
        total = total + F.mse_loss(fwd(w, batch.query_x[t]), batch.query_y[t])
    expected = torch.autograd.grad(total / batch.num_tasks, theta["a.weight"])[0]
    assert_rel_close(tied_grad, expected, 1e-10)


@pytest.mark.parametrize("path", ["loop", "vmap"])
def test_buffers_are_used_and_left_alone(path):
    model, batch = WithBuffer().double(), regression_batch()
    MAML(model, F.mse_loss, inner_lr=0.1, inner_steps=1, path=path).backward(batch)
    got = model.lin.weight.grad.clone()
    model.zero_grad()
    model.scale.fill_(1.0)  # the buffer matters: a different buffer, a different gradient
    MAML(model, F.mse_loss, inner_lr=0.1, inner_steps=1, path=path).backward(batch)
    assert (got - model.lin.weight.grad).norm() > 1e-3


def running_bn_model():
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3)
    ).double()


def test_running_batch_norm_runs_on_the_loop_and_updates_its_statistics():
    model = running_bn_model()
    before = model[1].running_mean.clone()
    MAML(model, inner_lr=0.1, path="auto").backward(image_batch())
    assert not torch.equal(before, model[1].running_mean)
    assert model[1].num_batches_tracked.item() == 3 * 2  # support + query forward per task


@pytest.mark.parametrize("path", ["vectorized", "vmap"])
def test_running_batch_norm_on_a_batched_path_is_refused(path):
    with pytest.raises(ValueError, match="running statistics.*path='loop'"):
        MAML(running_bn_model(), inner_lr=0.1, path=path)


def test_unknown_path_is_refused():
    with pytest.raises(ValueError, match="unknown execution path 'fast'"):
        MAML(nn.Linear(2, 1), inner_lr=0.1, path="fast")


def test_meta_gradient_norms_are_nontrivial():
    # Guards the suite: the models above produce real, non-zero meta-gradients.
    model = Tied().double()
    MAML(model, F.mse_loss, inner_lr=0.1, inner_steps=2).backward(regression_batch())
    assert global_norm({k: p.grad for k, p in model.named_parameters()}) > 1e-3
