"""The Gauss-Newton-form KL Hessian through the adaptation equals the full double backward."""

from __future__ import annotations

import pytest
import torch
from test_rl_trpo import _batch

from metagrad.rl.fisher import adaptation_fisher_product
from metagrad.rl.objectives import adapt_policy, old_policy, surrogate_and_kl
from metagrad.rl.policy import GaussianMLPPolicy
from metagrad.rl.trpo import flatten, hessian_vector_product, unflatten


def _problem(lrs, steps, first_order=False):
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(3, 2, hidden=(8, 8)).double()
    theta = {k: v.detach().clone() for k, v in policy.named_parameters()}
    theta["log_std"] = theta["log_std"] + torch.tensor([0.3, -0.2], dtype=torch.float64)
    train = [_batch(g) for _ in range(steps)]
    valid = _batch(g)
    old = old_policy(policy, adapt_policy(policy, theta, train, lrs), valid)
    leaves = {k: v.clone().requires_grad_() for k, v in theta.items()}
    adapted = adapt_policy(policy, leaves, train, lrs, first_order=first_order)
    full = hessian_vector_product(surrogate_and_kl(policy, adapted, valid, old)[1], leaves, 0.1)
    fast = adaptation_fisher_product(policy, theta, train, valid, old, lrs, first_order, 0.1)
    return theta, full, fast


@pytest.mark.parametrize(
    "lrs,steps,first_order",
    [(0.5, 1, False), ((0.5, 0.3), 2, False), ((0.4, 0.2, 0.1), 3, False), (0.5, 2, True)],
)
def test_fisher_product_equals_double_backward_through_adaptation(lrs, steps, first_order):
    theta, full, fast = _problem(lrs, steps, first_order)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        v = torch.randn(flatten(theta).numel(), generator=g, dtype=torch.float64)
        expected = full(v)
        assert (expected - 0.1 * v).norm() > 1e-3  # the curvature part is not negligible
        torch.testing.assert_close(fast(v), expected, rtol=1e-9, atol=1e-11)


def test_fisher_product_is_symmetric_positive_semidefinite():
    theta, _, fast = _problem((0.5, 0.3), 2)
    n = flatten(theta).numel()
    cols = torch.stack([fast(torch.eye(n, dtype=torch.float64)[i]) for i in range(n)])
    torch.testing.assert_close(cols, cols.T, rtol=1e-9, atol=1e-11)
    assert torch.linalg.eigvalsh(cols).min() > 0.1 - 1e-9  # damping 0.1 on a PSD matrix


def test_second_order_terms_matter_so_the_check_is_sensitive():
    theta, full, _ = _problem((0.5, 0.3), 2)
    _, _, first = _problem((0.5, 0.3), 2, first_order=True)
    v = torch.randn(
        flatten(theta).numel(), generator=torch.Generator().manual_seed(2), dtype=torch.float64
    )
    assert (full(v) - first(v)).norm() > 1e-3 * full(v).norm()
    assert unflatten(v, theta).keys() == theta.keys()
