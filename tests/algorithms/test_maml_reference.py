"""MAML meta-gradients against a hand-unrolled float64 reference and finite differences.

The reference writes the networks out by hand (no functional_call, no metagrad) and chains
``torch.autograd.grad(..., create_graph=True)`` explicitly, one inner step at a time.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import assert_rel_close, global_norm, image_batch, regression_batch, rel_err
from metagrad import MAML
from metagrad.algorithms import InnerLoop, TaskExecutor, maml_objective
from metagrad.models import MLP, Conv4


def mlp_by_hand(w: dict, x: torch.Tensor) -> torch.Tensor:
    h = torch.relu(x @ w["net.0.weight"].T + w["net.0.bias"])
    h = torch.relu(h @ w["net.2.weight"].T + w["net.2.bias"])
    return h @ w["net.4.weight"].T + w["net.4.bias"]


def bn_by_hand(h, weight, bias, eps=1e-5):
    mean = h.mean(dim=(0, 2, 3), keepdim=True)
    var = ((h - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)
    return (h - mean) / torch.sqrt(var + eps) * weight[:, None, None] + bias[:, None, None]


def conv4_by_hand(w: dict, x: torch.Tensor) -> torch.Tensor:
    h = x
    for i in range(4):
        conv, bn = f"features.{i}.conv", f"features.{i}.norm"
        h = F.conv2d(h, w[f"{conv}.weight"], w[f"{conv}.bias"], stride=2, padding=1)
        h = torch.relu(bn_by_hand(h, w[f"{bn}.weight"], w[f"{bn}.bias"]))
    return h.mean(dim=(2, 3)) @ w["head.weight"].T + w["head.bias"]


def reference_meta_grad(forward, loss, model, batch, lr, steps, first_order=False):
    theta = dict(model.named_parameters())
    total = 0
    for t in range(batch.num_tasks):
        w = dict(theta)
        for _ in range(steps):
            inner = loss(forward(w, batch.support_x[t]), batch.support_y[t])
            grads = torch.autograd.grad(inner, list(w.values()), create_graph=not first_order)
            w = {k: v - lr * g for (k, v), g in zip(w.items(), grads)}
        total = total + loss(forward(w, batch.query_x[t]), batch.query_y[t])
    meta = total / batch.num_tasks
    return dict(zip(theta, torch.autograd.grad(meta, list(theta.values()))))


CASES = {
    "mlp": (lambda: MLP(2, 1, (5, 4)).double(), mlp_by_hand, F.mse_loss, regression_batch, 0.1),
    "cnn+bn": (
        lambda: Conv4(3, filters=4, image_size=8).double(),
        conv4_by_hand,
        F.cross_entropy,
        image_batch,
        0.3,
    ),
}


@pytest.mark.parametrize("steps", [1, 2, 3])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("path", ["loop", "vectorized"])
def test_second_order_matches_hand_unrolled_reference(case, steps, path):
    make, by_hand, loss, make_batch, lr = CASES[case]
    model, batch = make(), make_batch()
    expected = reference_meta_grad(by_hand, loss, model, batch, lr, steps)
    MAML(model, loss, inner_lr=lr, inner_steps=steps, path=path).backward(batch)
    for name, p in model.named_parameters():
        assert_rel_close(p.grad, expected[name], 1e-10, name, global_norm(expected))


@pytest.mark.parametrize("case", CASES)
def test_first_order_is_query_gradient_at_adapted_params(case):
    make, by_hand, loss, make_batch, lr = CASES[case]
    model, batch = make(), make_batch()
    expected = reference_meta_grad(by_hand, loss, model, batch, lr, 2, first_order=True)
    # The same thing computed the FOMAML way: adapt without graph, gradient at phi.
    theta = {k: v.detach() for k, v in model.named_parameters()}
    at_phi = {k: torch.zeros_like(v) for k, v in theta.items()}
    for t in range(batch.num_tasks):
        w = {k: v.clone().requires_grad_() for k, v in theta.items()}
        for _ in range(2):
            g = torch.autograd.grad(
                loss(by_hand(w, batch.support_x[t]), batch.support_y[t]), list(w.values())
            )
            w = {k: (v - lr * gi).detach().requires_grad_() for (k, v), gi in zip(w.items(), g)}
        q = loss(by_hand(w, batch.query_x[t]), batch.query_y[t]) / batch.num_tasks
        for k, gi in zip(w, torch.autograd.grad(q, list(w.values()))):
            at_phi[k] += gi
    MAML(model, loss, inner_lr=lr, inner_steps=2, first_order=True, path="loop").backward(batch)
    for name, p in model.named_parameters():
        assert_rel_close(expected[name], at_phi[name], 1e-12, name, global_norm(at_phi))
        assert_rel_close(p.grad, at_phi[name], 1e-10, name, global_norm(at_phi))


def test_second_order_differs_from_first_order():
    # Guards the reference itself: if create_graph were ignored the two would coincide.
    model, batch = MLP(2, 1, (5, 4)).double(), regression_batch()
    so = reference_meta_grad(mlp_by_hand, F.mse_loss, model, batch, 0.1, 2)
    fo = reference_meta_grad(mlp_by_hand, F.mse_loss, model, batch, 0.1, 2, first_order=True)
    assert rel_err(fo["net.0.weight"], so["net.0.weight"]) > 1e-3


def test_meta_gradient_matches_central_finite_differences():
    model = MLP(2, 1, (3,), activation="tanh").double()
    batch = regression_batch(tasks=2, support=4, query=3)
    executor = TaskExecutor.create(model, "loop")
    inner = InnerLoop(0.2, 2)
    theta = {k: v.detach().clone() for k, v in model.named_parameters()}

    def meta_loss(params):
        return maml_objective(executor, F.mse_loss, params, batch, inner).loss

    learner = MAML(model, F.mse_loss, inner_lr=0.2, inner_steps=2, path="loop")
    learner.backward(batch)
    eps = 1e-6
    for name, p in model.named_parameters():
        fd = torch.zeros_like(p)
        for i in range(p.numel()):
            plus, minus = dict(theta), dict(theta)
            delta = torch.zeros_like(p).view(-1)
            delta[i] = eps
            plus[name] = theta[name] + delta.view_as(p)
            minus[name] = theta[name] - delta.view_as(p)
            fd.view(-1)[i] = (meta_loss(plus) - meta_loss(minus)) / (2 * eps)
        assert rel_err(p.grad, fd) < 1e-6, name


@pytest.mark.parametrize("path", ["loop", "vectorized"])
@pytest.mark.parametrize("first_order", [False, True])
def test_checkpointed_inner_loop_gives_the_same_meta_gradient(path, first_order):
    make, by_hand, loss, make_batch, lr = CASES["cnn+bn"]
    model, batch = make(), make_batch()
    expected = reference_meta_grad(by_hand, loss, model, batch, lr, 3, first_order=first_order)
    MAML(
        model,
        loss,
        inner_lr=lr,
        inner_steps=3,
        first_order=first_order,
        path=path,
        recompute_inner=True,
    ).backward(batch)
    for name, p in model.named_parameters():
        assert_rel_close(p.grad, expected[name], 1e-10, name, global_norm(expected))


def test_checkpointed_inner_loop_with_adam_state():
    from metagrad.functional import Adam, adapt

    model, batch = MLP(2, 1, (5, 4)).double(), regression_batch()
    params = dict(model.named_parameters())

    def loss_fn(p, d):
        return F.mse_loss(mlp_by_hand(p, d[0]), d[1])

    data = (batch.support_x[0], batch.support_y[0])
    grads, phis = [], []
    for ck in (False, True):  # first order: Adam's sqrt has no derivative at a zero gradient
        phi = adapt(
            loss_fn,
            params,
            data,
            inner_lr=0.01,
            inner_steps=3,
            optimizer=Adam(),
            recompute=ck,
            first_order=True,
        )
        q = loss_fn(phi, (batch.query_x[0], batch.query_y[0]))
        grads.append(torch.autograd.grad(q, list(params.values())))
        phis.append(phi)
    for a, b in zip(*grads):
        assert_rel_close(b, a, 1e-12)
    for k in params:  # the moments carried through the checkpoints: same adapted weights
        assert torch.equal(phis[0][k], phis[1][k]) and not torch.equal(phis[0][k], params[k])
