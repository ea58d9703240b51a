"""TRPO: exact Hessian-vector products through the adaptation, conjugate gradient, line search."""

from __future__ import annotations

import torch

from metagrad.rl.envs import Navigation2D, get_family
from metagrad.rl.maml_trpo import MAMLTRPOConfig, trpo_update
from metagrad.rl.objectives import Batch, adapt_policy, old_policy, process, surrogate_and_kl
from metagrad.rl.policy import GaussianMLPPolicy
from metagrad.rl.sampler import rollout
from metagrad.rl.trpo import (
    conjugate_gradient,
    flatten,
    hessian_vector_product,
    line_search,
    unflatten,
)


def _batch(g, tasks=3, trajs=4, steps=6, obs_dim=3, act_dim=2):
    mask = torch.ones(tasks, trajs, steps, dtype=torch.float64)
    mask[0, 1, 3:] = 0
    mask[2, 0, 1:] = 0
    obs = torch.randn(tasks, trajs, steps, obs_dim, generator=g, dtype=torch.float64)
    actions = torch.randn(tasks, trajs, steps, act_dim, generator=g, dtype=torch.float64)
    adv = torch.randn(tasks, trajs, steps, generator=g, dtype=torch.float64)
    return Batch(obs * mask[..., None], actions * mask[..., None], adv * mask, mask)


def _kl_problem(first_order=False):
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(3, 2, hidden=(8,)).double()
    theta0 = {k: v.detach().clone() for k, v in policy.named_parameters()}
    train = [_batch(g), _batch(g)]  # two inner steps, second-order through both
    valid = _batch(g)
    lrs = (0.5, 0.3)
    old = old_policy(policy, adapt_policy(policy, theta0, train, lrs), valid)

    def kl(theta):
        adapted = adapt_policy(policy, theta, train, lrs, first_order=first_order)
        return surrogate_and_kl(policy, adapted, valid, old)[1]

    return theta0, kl


def _grad(fn, theta):
    theta = {k: v.detach().requires_grad_() for k, v in theta.items()}
    return flatten(dict(zip(theta, torch.autograd.grad(fn(theta), list(theta.values())))))


def test_hvp_through_adaptation_equals_finite_differences_of_the_gradient():
    theta0, kl = _kl_problem()
    g = torch.Generator().manual_seed(1)
    v = torch.randn(flatten(theta0).numel(), generator=g, dtype=torch.float64)
    # At the old parameters (where TRPO evaluates it) and away from them.
    shift = 0.2 * torch.randn(v.numel(), generator=g, dtype=torch.float64)
    for point in (flatten(theta0), flatten(theta0) + shift):
        theta = {k: t.clone().requires_grad_() for k, t in unflatten(point, theta0).items()}
        hv = hessian_vector_product(kl(theta), theta)(v)
        eps = 1e-5
        plus = _grad(kl, unflatten(point + eps * v, theta0))
        minus = _grad(kl, unflatten(point - eps * v, theta0))
        fd = (plus - minus) / (2 * eps)
        assert hv.norm() > 1e-3
        torch.testing.assert_close(hv, fd, rtol=1e-6, atol=1e-8 * fd.norm())


def test_first_order_hvp_differs_so_the_check_is_sensitive():
    theta0, kl2 = _kl_problem()
    _, kl1 = _kl_problem(first_order=True)
    v = torch.randn(
        flatten(theta0).numel(), generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    t2 = {k: t.clone().requires_grad_() for k, t in theta0.items()}
    t1 = {k: t.clone().requires_grad_() for k, t in theta0.items()}
    exact = hessian_vector_product(kl2(t2), t2)(v)
    first = hessian_vector_product(kl1(t1), t1)(v)
    assert (exact - first).norm() > 1e-3 * exact.norm()


def test_damping_and_conjugate_gradient_solve_spd_system():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(12, 12, generator=g, dtype=torch.float64)
    a = m @ m.T + 0.5 * torch.eye(12, dtype=torch.float64)
    b = torch.randn(12, generator=g, dtype=torch.float64)
    x = conjugate_gradient(lambda v: a @ v, b, iters=40)
    torch.testing.assert_close(x, torch.linalg.solve(a, b))
    p = {"w": torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)}
    quad = 0.5 * (p["w"] ** 2 * torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)).sum()
    hv = hessian_vector_product(quad, p, damping=0.1)(torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(hv, torch.tensor([1.1, 2.1, 3.1], dtype=torch.float64))


def test_line_search_backtracks_and_rejects():
    params = {"w": torch.tensor([1.0, 1.0], dtype=torch.float64)}

    def evaluate(p):  # loss improves along -step, KL grows with the step's size
        d = p["w"] - params["w"]
        return (p["w"] ** 2).sum(), (d**2).sum()

    step = torch.tensor([1.0, 1.0], dtype=torch.float64)
    res = line_search(evaluate, params, step, 2.0, max_kl=0.1, ratio=0.5, max_steps=10)
    assert res.accepted and res.kl <= 0.1 and res.loss < 2.0 and res.step_fraction == 0.125
    torch.testing.assert_close(res.params["w"], torch.tensor([0.875, 0.875], dtype=torch.float64))
    bad = line_search(evaluate, params, -step, 2.0, max_kl=0.1, max_steps=5)
    assert not bad.accepted and torch.equal(bad.params["w"], params["w"])


def _nav_update(max_kl, fisher_tasks=None):
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    env = Navigation2D()
    policy = GaussianMLPPolicy(2, 2, hidden=(16, 16))
    theta = {k: v.detach() for k, v in policy.named_parameters()}
    tasks = get_family("navigation-2d").sample_tasks(3, g)
    cfg = MAMLTRPOConfig(trajectories=5, max_kl=max_kl, fisher_tasks=fisher_tasks)
    train = [process(rollout(env, policy, theta, tasks, 5, g))]
    adapted = adapt_policy(policy, theta, train, cfg.inner_lr)
    valid = process(rollout(env, policy, adapted, tasks, 5, g))
    new, stats = trpo_update(policy, theta, train, valid, cfg)
    # Recompute KL and surrogate independently at the returned parameters.
    old = old_policy(policy, adapt_policy(policy, theta, train, cfg.inner_lr), valid)
    with torch.no_grad():
        after = adapt_policy(policy, new, train, cfg.inner_lr, first_order=True)
        loss, kl = surrogate_and_kl(policy, after, valid, old)
    return stats, float(loss), float(kl)


def test_trpo_step_stays_in_the_trust_region_and_improves_the_surrogate():
    for max_kl, fisher in [(0.01, None), (1e-4, None), (0.01, 2)]:
        stats, loss, kl = _nav_update(max_kl, fisher)
        assert stats["accepted"], stats
        assert 0 < kl <= max_kl and abs(kl - stats["kl"]) < 1e-6
        assert loss < stats["loss_before"] and abs(loss - stats["loss_after"]) < 1e-6
        assert set(stats["time"]) == {"adaptation", "conjugate_gradient", "line_search"}


def test_packed_batches_keep_every_valid_step_and_every_loss():
    g = torch.Generator().manual_seed(0)
    batch = _batch(g)
    mask = batch.mask.clone()
    mask[1, 2, 4:] = 0  # every task has an ended episode: 21, 22 and 19 of 24 steps valid
    batch = Batch(batch.obs, batch.actions, batch.advantages, mask)
    packed = batch.packed()
    assert packed.obs.shape == (3, 1, 22, 3)
    assert torch.equal(packed.mask.sum((1, 2)), batch.mask.sum((1, 2)))
    for k in range(3):  # the valid steps, in order, then padding
        n = int(batch.mask[k].sum())
        valid = batch.mask[k].bool()
        assert torch.equal(packed.obs[k, 0, :n], batch.obs[k][valid])
        assert torch.equal(packed.advantages[k, 0, :n], batch.advantages[k][valid])
        assert not packed.mask[k, 0, n:].any()
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(3, 2, hidden=(8,)).double()
    theta = {k: v.detach() for k, v in policy.named_parameters()}
    adapted = adapt_policy(policy, theta, [batch], 0.5)
    torch.testing.assert_close(
        adapt_policy(policy, theta, [packed], 0.5), adapted, rtol=1e-12, atol=1e-14
    )
    old = old_policy(policy, adapted, batch)
    shifted = {k: v + 0.01 for k, v in adapted.items()}
    unpacked_values = surrogate_and_kl(policy, shifted, batch, old)
    packed_values = surrogate_and_kl(policy, shifted, packed, old_policy(policy, adapted, packed))
    torch.testing.assert_close(packed_values, unpacked_values, rtol=1e-12, atol=1e-14)


def test_a_batch_without_padding_is_not_copied():
    g = torch.Generator().manual_seed(0)
    full = _batch(g)
    full = Batch(full.obs, full.actions, full.advantages, torch.ones_like(full.mask))
    assert full.packed() is full
