"""The inner loop's two options for the MAML family: held parameters (``adapted``) and per-step
tensors (``per_step``), on the plain and the recomputed loop alike."""

from __future__ import annotations

import pytest
import torch

from functional.test_inner import setup
from metagrad.errors import UsageError
from metagrad.functional import adapt, run_inner, split_state
from metagrad.functional.inner import InnerLoop


def test_held_parameters_stay_as_they_are_and_still_get_a_meta_gradient():
    model, loss_fn, batch = setup()
    params = split_state(model).params
    head = {"net.2.weight", "net.2.bias"}
    phi = adapt(loss_fn, params, batch, inner_lr=0.1, inner_steps=2, adapted=head)
    assert list(phi) == list(params)  # the order of the parameters is kept
    for k in params:
        assert (phi[k] is params[k]) == (k not in head), k
    # The held body still shapes the adapted head: a meta-gradient reaches it.
    grads = torch.autograd.grad(loss_fn(phi, batch), [params["net.0.weight"]])
    assert grads[0].abs().sum() > 0


@pytest.mark.parametrize("steps", [1, 3, 4])
def test_recomputed_steps_with_held_and_per_step_tensors_are_exact(steps):
    model, loss_fn, batch = setup()
    params = split_state(model).params
    # net.0.bias takes another (learnable) value at each step, as per-step BatchNorm weights.
    rows = params["net.0.bias"].detach() + torch.randn(steps, 8, dtype=torch.float64) * 0.1
    rows.requires_grad_()
    per_step = tuple({"net.0.bias": rows[s]} for s in range(steps))
    adapted = frozenset({"net.0.weight", "net.2.weight", "net.2.bias"})
    found = []
    for recompute in (False, True):
        inner = InnerLoop(0.1, steps, adapted=adapted, per_step=per_step, recompute=recompute)
        phi, _ = run_inner(loss_fn, params, batch, inner)
        assert torch.equal(phi["net.0.bias"], rows[steps - 1])  # the last step's value
        targets = [*params.values(), rows]
        found.append(torch.autograd.grad(loss_fn(phi, batch), targets, allow_unused=True))
    for plain, recomputed in zip(*found):
        if plain is None:  # the layer's own net.0.bias: overridden at every step
            assert recomputed is None
            continue
        assert ((plain - recomputed).norm() / plain.norm()).item() < 1e-10


def test_per_step_tensors_for_fewer_steps_and_adapted_overrides_are_refused():
    model, loss_fn, batch = setup()
    params = split_state(model).params
    per_step = ({"net.0.bias": params["net.0.bias"]},)
    with pytest.raises(UsageError, match="learned for 1; adapt with at most 1 steps"):
        InnerLoop(0.1, 2, per_step=per_step)
    with pytest.raises(UsageError, match="also take per-step values"):
        run_inner(loss_fn, params, batch, InnerLoop(0.1, 1, per_step=per_step))
