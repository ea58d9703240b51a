"""Steppers and the batched policy: MuJoCo stepped directly equals gymnasium's step, to the bit;
the policy evaluated for all episodes of all tasks at once equals one evaluation per episode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metagrad.rl.envs import get_family, make_batched_env
from metagrad.rl.policy import GaussianMLPPolicy, distribution
from metagrad.rl.sampler import per_task


@pytest.mark.parametrize(("name", "frame_skip"), [("half-cheetah-vel", 1), ("ant-dir", 2)])
def test_mujoco_stepper_equals_gymnasium_step_to_the_bit(name, frame_skip):
    pytest.importorskip("mujoco")
    pytest.importorskip("gymnasium")
    from metagrad.rl.envs.stepping import make_stepper

    tasks = get_family(name).sample_tasks(3, torch.Generator().manual_seed(0))
    episodes = [t for t in tasks for _ in range(3)]
    seeds = list(range(40, 49))
    fast = make_stepper(name, {"frame_skip": frame_skip}, "mujoco")
    reference = make_stepper(name, {"frame_skip": frame_skip}, "gymnasium")
    assert type(fast).__name__ == "MujocoStepper"
    assert np.array_equal(fast.reset(episodes, seeds), reference.reset(episodes, seeds))
    rng = np.random.default_rng(0)
    ended = np.zeros(len(episodes), dtype=bool)
    for _ in range(60):  # large actions: some ant episodes fall over and end
        actions = 2.0 * rng.standard_normal((len(episodes), fast.act_dim))
        got = [x.copy() for x in fast.step(actions)]
        want = reference.step(actions)
        for x, y in zip(got, want):
            assert np.array_equal(x, y)
        ended |= got[2]
    assert ended.any() == name.startswith("ant")  # termination is exercised where it exists
    assert not ended.all()


def test_mujoco_stepper_steps_on_once_every_episode_has_ended():
    pytest.importorskip("mujoco")
    pytest.importorskip("gymnasium")
    from metagrad.rl.envs.stepping import make_stepper

    steps = make_stepper("ant-vel", {}, "mujoco")
    steps.reset([{"velocity": 1.0}], [0])
    steps._datas[0].qpos[2] = 5.0  # the torso far above the healthy range: the episode ends
    obs, reward, done = (x.copy() for x in steps.step(np.zeros((1, 8))))
    assert done.tolist() == [True] and reward[0] != 0
    again = steps.step(np.ones((1, 8)))  # nothing left to step: last observation, reward 0
    assert np.array_equal(again[0], obs) and again[1].tolist() == [0.0]
    assert again[2].tolist() == [True]


def test_unknown_stepper_and_negative_workers_are_refused():
    pytest.importorskip("mujoco")
    with pytest.raises(KeyError, match="stepper"):
        make_batched_env("half-cheetah-vel", horizon=5, workers=0, stepper="physx")
    with pytest.raises(ValueError, match="workers must be >= 0"):
        make_batched_env("half-cheetah-vel", horizon=5, workers=-1)


def test_batched_policy_equals_per_environment_evaluation():
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(17, 6, hidden=(32, 32)).double()
    tasks, trajs = 4, 5
    params = {  # per-task parameters, as after adaptation: each task's differ
        k: v.detach() + 0.1 * torch.randn(tasks, *v.shape, dtype=v.dtype)
        for k, v in policy.named_parameters()
    }
    obs = torch.randn(tasks, trajs, 17, dtype=torch.float64)
    mean, log_std = distribution(policy, per_task(policy, params, tasks), obs)
    assert mean.shape == log_std.shape == (tasks, trajs, 6)
    for i in range(tasks):
        own = {k: v[i] for k, v in params.items()}
        for j in range(trajs):
            m, s = distribution(policy, own, obs[i, j])
            torch.testing.assert_close(mean[i, j], m, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(log_std[i, j], s, rtol=0, atol=0)
    shared = {k: v.detach() for k, v in policy.named_parameters()}  # expanded over tasks
    mean, _ = distribution(policy, per_task(policy, shared, tasks), obs)
    torch.testing.assert_close(mean[2, 3], distribution(policy, shared, obs[2, 3])[0])
