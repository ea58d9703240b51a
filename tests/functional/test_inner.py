"""The adaptation primitive: pure, general over loss and batch structure, differentiable."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from metagrad.functional import SGD, Adam, adapt, lr_schedule, split_state
from metagrad.models import MLP


def setup():
    model = MLP(1, 1, (8,)).double()
    x, y = torch.randn(10, 1, dtype=torch.float64), torch.randn(10, 1, dtype=torch.float64)

    def loss_fn(params, batch):  # an arbitrary batch structure: a dict
        return F.mse_loss(functional_call(model, params, (batch["x"],)), batch["y"])

    return model, loss_fn, {"x": x, "y": y}


def test_adapt_returns_new_params_and_leaves_the_module_alone():
    model, loss_fn, batch = setup()
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    params = split_state(model).params
    phi = adapt(loss_fn, params, batch, inner_lr=0.1, inner_steps=3)
    assert phi.keys() == params.keys()
    assert all(not torch.equal(phi[k], params[k]) for k in phi)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert all(p.grad is None for p in model.parameters())
    assert loss_fn(phi, batch) < loss_fn(params, batch)


def test_per_step_learning_rates_apply_in_order():
    model, loss_fn, batch = setup()
    params = split_state(model).params
    two = adapt(loss_fn, params, batch, inner_lr=[0.1, 0.0], inner_steps=2)
    one = adapt(loss_fn, params, batch, inner_lr=0.1, inner_steps=1)
    assert all(torch.allclose(two[k], one[k]) for k in one)
    assert lr_schedule([0.1, 0.05, 0.01], 2) == [0.1, 0.05]
    with pytest.raises(ValueError, match="one value per step"):
        lr_schedule([0.1], 2)


def test_zero_steps_is_identity_and_no_grad_callers_still_adapt():
    model, loss_fn, batch = setup()
    params = split_state(model).params
    assert adapt(loss_fn, params, batch, inner_lr=0.1, inner_steps=0) == params
    with torch.no_grad():
        phi = adapt(loss_fn, params, batch, inner_lr=0.1, inner_steps=1)
    assert loss_fn(phi, batch) < loss_fn(params, batch)


def test_learnable_inner_learning_rate_gets_a_meta_gradient():
    model, loss_fn, batch = setup()
    lr = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    phi = adapt(loss_fn, split_state(model).params, batch, inner_lr=lr, inner_steps=2)
    (g,) = torch.autograd.grad(loss_fn(phi, batch), lr)
    eps = 1e-6
    up = loss_fn(
        adapt(loss_fn, split_state(model).params, batch, inner_lr=0.1 + eps, inner_steps=2), batch
    )
    down = loss_fn(
        adapt(loss_fn, split_state(model).params, batch, inner_lr=0.1 - eps, inner_steps=2), batch
    )
    assert abs(g.item() - ((up - down) / (2 * eps)).item()) < 1e-6 * max(1.0, abs(g.item()))


def test_first_order_cuts_the_graph_through_inner_gradients():
    model, loss_fn, batch = setup()
    params = split_state(model).params
    fo = adapt(loss_fn, params, batch, inner_lr=0.1, inner_steps=1, first_order=True)
    so = adapt(loss_fn, params, batch, inner_lr=0.1, inner_steps=1)
    g_fo = torch.autograd.grad(loss_fn(fo, batch), list(params.values()))
    g_so = torch.autograd.grad(loss_fn(so, batch), list(params.values()))
    grads_at_phi = torch.autograd.grad(loss_fn(fo, batch), list(fo.values()))
    assert all(torch.allclose(a, b) for a, b in zip(g_fo, grads_at_phi))
    assert any(not torch.allclose(a, b) for a, b in zip(g_fo, g_so))


def test_adam_matches_torch_optim_adam():
    model, loss_fn, batch = setup()
    params = {k: v.detach().clone() for k, v in split_state(model).params.items()}
    phi = adapt(
        loss_fn,
        params,
        batch,
        inner_lr=0.01,
        inner_steps=4,
        first_order=True,
        optimizer=Adam(betas=(0.0, 0.999)),
    )
    ref = {k: v.clone().requires_grad_() for k, v in params.items()}
    opt = torch.optim.Adam(ref.values(), lr=0.01, betas=(0.0, 0.999))
    for _ in range(4):
        opt.zero_grad()
        loss_fn(ref, batch).backward()
        opt.step()
    assert all(torch.allclose(phi[k], ref[k], atol=1e-12) for k in ref)


def test_sgd_leaves_parameters_without_gradient_unchanged():
    p = {"a": torch.ones(2), "b": torch.ones(2)}
    new, _ = SGD().step(p, {"a": torch.ones(2)}, {}, 0.5)
    assert torch.equal(new["a"], torch.full((2,), 0.5)) and new["b"] is p["b"]


def test_views_taken_under_no_grad_are_still_adapted():
    model, loss_fn, batch = setup()
    with torch.no_grad():
        params = {k: v.view_as(v) for k, v in split_state(model).params.items()}
        phi = adapt(loss_fn, params, batch, inner_lr=0.1, inner_steps=1)
    assert all(not torch.equal(phi[k], params[k]) for k in phi)


def test_checkpointed_steps_pass_gradients_to_a_learnable_learning_rate():
    model, loss_fn, batch = setup()
    grads = []
    for ck in (False, True):
        lr = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
        params = split_state(model).params
        phi = adapt(loss_fn, params, batch, inner_lr=lr, inner_steps=3, recompute=ck)
        grads.append(torch.autograd.grad(loss_fn(phi, batch), [lr, *params.values()]))
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-14)
    assert grads[1][0].abs() > 0


@pytest.mark.parametrize("steps", [1, 2, 7, 10])
@pytest.mark.parametrize("optimizer,first_order", [(SGD(), False), (Adam(), False), (Adam(), True)])
def test_segment_checkpointing_is_exact_for_any_number_of_steps(steps, optimizer, first_order):
    model, loss_fn, batch = setup()
    lrs = [
        torch.tensor(0.05 + 0.01 * k, dtype=torch.float64, requires_grad=True) for k in range(steps)
    ]
    lrs[1 % steps] = 0.07  # a mix of learnable and plain learning rates
    grads = []
    for ck in (False, True):
        params = split_state(model).params
        phi = adapt(
            loss_fn,
            params,
            batch,
            inner_lr=lrs,
            inner_steps=steps,
            recompute=ck,
            optimizer=optimizer,
            first_order=first_order,
        )
        wanted = [*params.values(), *(lr for lr in lrs if isinstance(lr, torch.Tensor))]
        grads.append(torch.autograd.grad(loss_fn(phi, batch), wanted))
    assert all(torch.isfinite(g).all() for g in grads[0])  # Adam's sqrt at a zero moment
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-13)


def _retained_bytes(steps, checkpoint):
    """Bytes of the tensors saved for backward that the adapted parameters' graph keeps alive."""
    model, loss_fn, batch = setup()
    params = split_state(model).params
    refs = []

    def pack(t):
        refs.append(weakref.ref(t))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        phi = adapt(loss_fn, params, batch, inner_lr=0.01, inner_steps=steps, recompute=checkpoint)
    gc.collect()
    alive = {id(t): t for r in refs if (t := r()) is not None}
    data = {id(t) for t in batch.values()}  # the task's data are alive anyway
    retained = sum(t.numel() * t.element_size() for k, t in alive.items() if k not in data)
    del phi
    return retained


def test_checkpointed_adaptation_keeps_about_sqrt_steps_parameter_copies():
    size = sum(p.numel() * p.element_size() for p in split_state(setup()[0]).params.values())
    for steps, segments in [(4, 2), (36, 6), (100, 10)]:
        assert _retained_bytes(steps, True) == segments * size  # each segment's inputs only
    assert _retained_bytes(36, False) > 36 * size  # plain: every step's activations are kept
