"""Environments: rewards match their definitions; task samplers; the batched 2D navigation."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from metagrad.rl.envs import FAMILIES, Navigation2D, get_family
from metagrad.rl.envs.navigation import navigation_step


def test_navigation_step_by_hand():
    pos, goal = torch.zeros(2, dtype=torch.float64), torch.tensor([0.05, -0.3], dtype=torch.float64)
    pos, reward, done = navigation_step(pos, goal, torch.tensor([0.5, -0.02], dtype=torch.float64))
    torch.testing.assert_close(pos, torch.tensor([0.1, -0.02], dtype=torch.float64))  # clipped
    assert math.isclose(float(reward), -math.hypot(0.05, 0.28)) and not done
    pos, reward, done = navigation_step(
        pos, goal, torch.tensor([-0.045, -0.1], dtype=torch.float64)
    )
    assert not done  # dx = 0.005 but dy = 0.18
    near = torch.tensor([0.05 + 0.009, -0.3 - 0.009], dtype=torch.float64)
    _, reward, done = navigation_step(torch.zeros(2, dtype=torch.float64), goal, near, 1.0)
    assert not done  # one coordinate moved by more than 0.1: clipped, far from the goal
    _, reward, done = navigation_step(goal - near + goal, goal, near - goal, 1.0)
    assert done and math.isclose(float(reward), -math.hypot(0.0, 0.0), abs_tol=1e-12)


def test_batched_navigation_equals_pointwise_steps():
    env = Navigation2D(horizon=5)
    tasks = get_family("navigation-2d").sample_tasks(3, torch.Generator().manual_seed(0))
    obs = env.reset(tasks, trajs=4, seed=0)
    assert obs.shape == (3, 4, 2) and (obs == 0).all()
    g = torch.Generator().manual_seed(1)
    pos = torch.zeros(3, 4, 2)
    for _ in range(5):
        action = 0.2 * torch.randn(3, 4, 2, generator=g)
        obs, reward, done = env.step(action)
        for t in range(3):
            for j in range(4):
                goal = torch.tensor(tasks[t]["goal"], dtype=torch.float32)
                p, r, d = navigation_step(pos[t, j], goal, action[t, j])
                pos[t, j] = p
                torch.testing.assert_close(obs[t, j], p)
                torch.testing.assert_close(reward[t, j], r)
                assert bool(done[t, j]) == bool(d)


def test_task_samplers_are_reproducible_and_in_range():
    for name, family in FAMILIES.items():
        a = family.sample_tasks(200, torch.Generator().manual_seed(3))
        b = family.sample_tasks(200, torch.Generator().manual_seed(3))
        assert a == b, name
        (key,) = a[0].keys()
        values = np.array([t[key] for t in a])
        if key == "goal":
            assert values.shape == (200, 2) and np.abs(values).max() <= 0.5
        elif key == "velocity":
            high = 2.0 if name.startswith("half-cheetah") else 3.0
            assert values.min() >= 0 and values.max() <= high and values.max() > 0.9 * high
        else:
            assert set(values) == {-1.0, 1.0} and 60 < (values > 0).sum() < 140


def test_navigation_gym_wrapper_matches_batched_env():
    pytest.importorskip("gymnasium")
    from metagrad.rl.envs import make_env

    task = {"goal": (0.3, -0.2)}
    env = make_env("navigation-2d", task, horizon=6)
    batched = Navigation2D(horizon=6)
    obs, _ = env.reset(seed=0)
    bobs = batched.reset([task], 1)
    np.testing.assert_allclose(obs, bobs[0, 0].numpy())
    g = torch.Generator().manual_seed(0)
    for step in range(6):
        action = 0.2 * torch.randn(1, 1, 2, generator=g)
        obs, reward, terminated, truncated, _ = env.step(action[0, 0].numpy())
        bobs, breward, bdone = batched.step(action)
        np.testing.assert_allclose(obs, bobs[0, 0].numpy(), rtol=1e-6, atol=1e-7)
        assert math.isclose(reward, float(breward), rel_tol=1e-5) and terminated == bool(bdone)
        assert truncated == (step == 5)


def test_import_metagrad_does_not_import_gymnasium():
    code = (
        "import sys, metagrad, metagrad.rl, metagrad.rl.envs;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('gymnasium', 'mujoco')];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _check_locomotion(name, task, steps=25, frame_skip=None):
    from metagrad.rl.envs import make_env

    kwargs = {} if frame_skip is None else {"frame_skip": frame_skip}
    env = make_env(name, task, **kwargs)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    ant = name.startswith("ant")
    for _ in range(steps):
        action = rng.uniform(-1.5, 1.5, env.action_space.shape)  # partly out of bounds
        x_before = (env.data.body("torso").xpos[0] if ant else env.data.qpos[0]).copy()
        _, reward, terminated, _, _ = env.step(action)
        x_after = env.data.body("torso").xpos[0] if ant else env.data.qpos[0]
        v = (x_after - x_before) / env.dt
        a = np.clip(action, -1, 1)
        forward = -abs(v - task["velocity"]) if "velocity" in task else task["direction"] * v
        if ant:
            contact = 0.0005 * np.sum(np.clip(env.data.cfrc_ext, -1, 1) ** 2)
            bonus = 1.0 if "velocity" in task else 0.0
            expected = forward + bonus - 0.005 * np.sum(a**2) - contact + 0.05
            z = env.data.qpos[2]
            state = np.concatenate([env.data.qpos, env.data.qvel])
            assert terminated == (not (np.isfinite(state).all() and 0.2 <= z <= 1.0))
        else:
            expected = forward - 0.05 * np.sum(a**2)
            assert not terminated
        assert math.isclose(reward, expected, rel_tol=1e-9, abs_tol=1e-9), (name, reward, expected)
        if terminated:
            break
    return env


@pytest.mark.parametrize(
    "name, task",
    [
        ("half-cheetah-vel", {"velocity": 1.3}),
        ("half-cheetah-dir", {"direction": -1.0}),
        ("ant-vel", {"velocity": 2.1}),
        ("ant-dir", {"direction": 1.0}),
    ],
)
def test_locomotion_rewards_match_their_definition(name, task):
    pytest.importorskip("mujoco")
    pytest.importorskip("gymnasium")
    env = _check_locomotion(name, task)
    paper_dt = 0.01 if name.startswith("half-cheetah") else 0.02
    assert math.isclose(env.dt, paper_dt)


def test_locomotion_gymnasium_dynamics_option_and_set_task():
    pytest.importorskip("mujoco")
    pytest.importorskip("gymnasium")
    env = _check_locomotion("half-cheetah-vel", {"velocity": 0.5}, steps=5, frame_skip=5)
    assert math.isclose(env.dt, 0.05)
    env.set_task({"velocity": 1.5})
    assert env.target == 1.5
    with pytest.raises(ValueError, match="expected a dict with key 'velocity'"):
        env.set_task({"direction": 1.0})
