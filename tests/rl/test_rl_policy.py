"""The Gaussian MLP policy: batched over tasks equals per task; distribution formulas."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from metagrad.rl.policy import (
    GaussianMLPPolicy,
    distribution,
    entropy,
    log_prob,
)
from metagrad.rl.policy import (
    kl_divergence as kl,
)


def _per_task_params(policy, tasks, g):
    return {
        k: v.detach() + 0.3 * torch.randn(tasks, *v.shape, generator=g, dtype=v.dtype)
        for k, v in policy.named_parameters()
    }


def test_batched_policy_equals_per_task_evaluation():
    g = torch.Generator().manual_seed(0)
    policy = GaussianMLPPolicy(5, 3, hidden=(16, 16)).double()
    params = _per_task_params(policy, 4, g)
    obs = torch.randn(4, 6, 7, 5, generator=g, dtype=torch.float64)  # [tasks, trajs, T, obs]
    mean, log_std = distribution(policy, params, obs)
    assert mean.shape == log_std.shape == (4, 6, 7, 3)
    for t in range(4):
        one = {k: v[t] for k, v in params.items()}
        m, s = distribution(policy, one, obs[t])
        torch.testing.assert_close(mean[t], m)
        torch.testing.assert_close(log_std[t], s)


def test_shared_parameters_and_module_forward_agree():
    policy = GaussianMLPPolicy(2, 2)
    obs = torch.randn(3, 10, 2)
    m1, s1 = policy(obs)
    m2, _ = distribution(policy, dict(policy.named_parameters()), obs)
    torch.testing.assert_close(m1, m2)
    torch.testing.assert_close(s1, torch.zeros_like(s1))  # init_std = 1


def test_log_prob_entropy_kl_match_torch_distributions():
    g = torch.Generator().manual_seed(1)
    shape = (3, 4, 2)
    mp, sp, mq, sq, a = (torch.randn(*shape, generator=g, dtype=torch.float64) for _ in range(5))
    p, q = Normal(mp, sp.exp()), Normal(mq, sq.exp())
    torch.testing.assert_close(log_prob(mp, sp, a), p.log_prob(a).sum(-1))
    torch.testing.assert_close(entropy(sp), p.entropy().sum(-1))
    torch.testing.assert_close(kl(mp, sp, mq, sq), kl_divergence(p, q).sum(-1))
    assert (kl(mp, sp, mp, sp).abs() < 1e-12).all()


def test_wrong_observation_shapes_teach():
    policy = GaussianMLPPolicy(4, 2, hidden=(8,))
    with pytest.raises(ValueError, match="obs_dim=4"):
        policy(torch.randn(3, 5))
    params = _per_task_params(policy, 3, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="tasks=3"):
        distribution(policy, params, torch.randn(2, 5, 4))
