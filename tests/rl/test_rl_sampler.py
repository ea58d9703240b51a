"""The sampler: padded trajectories with masks, reproducible given a seed, any environment."""

from __future__ import annotations

import math

import pytest
import torch

from metagrad.rl.envs import Navigation2D, get_family
from metagrad.rl.policy import GaussianMLPPolicy
from metagrad.rl.sampler import rollout


def test_rollout_is_reproducible_given_the_generator():
    env = Navigation2D()
    policy = GaussianMLPPolicy(2, 2, hidden=(16,))
    theta = dict(policy.named_parameters())
    tasks = get_family("navigation-2d").sample_tasks(3, torch.Generator().manual_seed(0))
    a = rollout(env, policy, theta, tasks, 4, torch.Generator().manual_seed(5))
    b = rollout(env, policy, theta, tasks, 4, torch.Generator().manual_seed(5))
    c = rollout(env, policy, theta, tasks, 4, torch.Generator().manual_seed(6))
    assert a.obs.shape == (3, 4, 100, 2) and a.actions.shape == (3, 4, 100, 2)
    for x, y in [(a.obs, b.obs), (a.actions, b.actions), (a.rewards, b.rewards), (a.mask, b.mask)]:
        assert torch.equal(x, y)
    assert not torch.equal(a.actions, c.actions)


def test_early_termination_is_masked_and_padded():
    env = Navigation2D()
    policy = GaussianMLPPolicy(2, 2, hidden=(4,))
    with torch.no_grad():  # a nearly deterministic policy moving by (0.05, 0.05) per step
        policy.log_std.fill_(-30.0)
        policy.mean[-1].weight.zero_()
        policy.mean[-1].bias.fill_(0.05)
    tasks = [{"goal": (0.05, 0.05)}, {"goal": (0.5, 0.5)}, {"goal": (-0.4, 0.3)}]
    traj = rollout(env, policy, dict(policy.named_parameters()), tasks, 2)
    lengths = traj.lengths()
    assert lengths[0].tolist() == [1, 1] and lengths[1].tolist() == [10, 10]
    assert lengths[2].tolist() == [100, 100] and traj.rewards.shape[2] == 100
    assert (traj.rewards[0, :, 1:] == 0).all() and (traj.obs[1, :, 10:] == 0).all()
    expected = -sum(math.hypot(0.5 - 0.05 * k, 0.5 - 0.05 * k) for k in range(1, 11))
    torch.testing.assert_close(traj.returns()[1], torch.full((2,), expected), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(traj.obs[1, 0, 1], torch.tensor([0.05, 0.05]))  # pre-action obs


def test_per_task_parameters_drive_each_task():
    env = Navigation2D(horizon=3)
    policy = GaussianMLPPolicy(2, 2, hidden=(4,))
    params = {k: torch.stack([v.detach()] * 2) for k, v in policy.named_parameters()}
    params["mean.2.bias"] = torch.tensor([[0.05, 0.0], [-0.05, 0.0]])
    params["mean.2.weight"] = torch.zeros(2, 2, 4)
    params["log_std"] = torch.full((2, 2), -30.0)
    traj = rollout(env, policy, params, [{"goal": (0.4, 0)}, {"goal": (0.4, 0)}], 1)
    assert traj.obs[0, 0, 2, 0] > 0.09 and traj.obs[1, 0, 2, 0] < -0.09
    with pytest.raises(ValueError, match="one per task"):
        rollout(env, policy, params, [{"goal": (0.4, 0)}] * 3, 1)


def test_mujoco_sampling_is_reproducible_in_process_and_in_workers():
    pytest.importorskip("mujoco")
    pytest.importorskip("gymnasium")
    from metagrad.rl.envs.vec_env import InProcessVecEnv, SubprocVecEnv

    tasks = get_family("ant-dir").sample_tasks(2, torch.Generator().manual_seed(0))
    policy = GaussianMLPPolicy(105, 8, hidden=(16,))
    theta = dict(policy.named_parameters())
    # Default: MuJoCo stepped directly in this process; against 2 spawned workers doing the
    # same, and one forked worker stepping one gymnasium environment per episode (reference).
    with (
        InProcessVecEnv("ant-dir", horizon=30) as local,
        SubprocVecEnv("ant-dir", horizon=30, workers=2) as shared,
        SubprocVecEnv(
            "ant-dir", horizon=30, workers=1, start_method="fork", stepper="gymnasium"
        ) as separate,
    ):
        runs = [
            rollout(env, policy, theta, tasks, 3, torch.Generator().manual_seed(1))
            for env in (local, local, shared, separate)
        ]
        assert shared.stats["steps"] == 30 and shared.stats["round_trip_s"] > 0
        assert local.stats["steps"] == 60 and local.stats["worker_s"] > 0
    a = runs[0]
    assert a.obs.shape == (2, 3, 30, 105)
    for other in runs[1:]:
        for x, y in [(a.obs, other.obs), (a.rewards, other.rewards), (a.mask, other.mask)]:
            assert torch.equal(x, y)
        assert torch.equal(a.actions, other.actions)
    assert a.obs[:, :, 0, :27].std(1).min() > 0  # reset noise differs (qpos, qvel)
    c = rollout(local, policy, theta, tasks, 3, torch.Generator().manual_seed(2))
    assert not torch.equal(a.obs, c.obs)
