"""Steppers: many episodes of one gymnasium task family stepped together in one process, in numpy.

A stepper is what runs inside a batched environment, in this process
(:class:`metagrad.rl.envs.vec_env.InProcessVecEnv`) or in each worker process
(:class:`metagrad.rl.envs.vec_env.SubprocVecEnv`): ``reset(tasks, seeds)`` starts one episode
per task (reset noise seeded per episode), ``step(actions)`` moves every running episode by one
step and returns ``(obs [n, obs], reward [n], done [n])`` in arrays it owns and overwrites at the
next call (no per-step allocation of results). Episodes that have ended are not stepped again:
they keep their last observation, reward 0 and ``done``.

Two steppers (:data:`STEPPERS`):

- ``"mujoco"`` (:class:`metagrad.rl.envs.mujoco_stepper.MujocoStepper`): calls MuJoCo directly
  and computes observations, rewards and terminations for all episodes at once with the
  environment's batched twins of its ``step`` -- the same numbers as gymnasium's ``step``
  (tested to the bit), at a fraction of its Python overhead (BENCHMARKS.md, issue 20).
- ``"gymnasium"`` (:class:`GymnasiumStepper`): each episode through its environment's ``step``;
  the reference, and the stepper of environments without batched twins.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from metagrad.registry import Registry
from metagrad.rl.envs.base import Task


class Stepper(Protocol):
    """Episodes stepped together in this process (see the module docstring).

    Attributes:
        obs_dim: observation size.
        act_dim: action size.
    """

    obs_dim: int
    act_dim: int

    def reset(self, tasks: Sequence[Task], seeds: Sequence[int]) -> np.ndarray:
        """One episode per task, reset with its seed; returns observations ``[n, obs]``."""
        ...

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Apply ``actions [n, act]``; ``(obs [n, obs], reward [n], done [n] bool)``."""
        ...


class GymnasiumStepper:
    """Each episode stepped by its environment's ``step`` (the reference).

    A MuJoCo environment is one object with one ``MjData`` (its whole simulation state) per
    episode, pointed at an episode's before stepping it: the same steps as independent
    environments, without building one model per episode. Other environments get one instance
    per episode.

    Args:
        make: builds the family's environment (``make_env(name, **env_kwargs)``).
        per_episode_data: one ``MjData`` per episode in one environment (default for MuJoCo
            environments) or one environment per episode (``False``).
    """

    def __init__(self, make: Callable[[], Any], per_episode_data: bool | None = None) -> None:
        self.env = make()
        mujoco_env = hasattr(self.env, "model") and hasattr(self.env, "data")
        self.per_episode_data = mujoco_env if per_episode_data is None else per_episode_data
        self.obs_dim = self.env.observation_space.shape[0]
        self.act_dim = self.env.action_space.shape[0]
        self._make, self._envs, self._datas = make, [self.env], []
        self._tasks: list[Task | None] = [None]
        self._alive = np.zeros(0, dtype=bool)
        self._obs = np.zeros((0, self.obs_dim))
        self._reward = np.zeros(0)
        self._episode_tasks: Sequence[Task] = ()

    def _activate(self, i: int, task: Task):
        if self.per_episode_data:
            import mujoco

            while len(self._datas) <= i:
                self._datas.append(mujoco.MjData(self.env.model))
            self.env.data, slot = self._datas[i], 0
        else:
            while len(self._envs) <= i:
                self._envs.append(self._make())
                self._tasks.append(None)
            slot = i
        if task is not self._tasks[slot]:  # a task's episodes are contiguous: set it once
            self._envs[slot].set_task(task)
            self._tasks[slot] = task
        return self._envs[slot]

    def reset(self, tasks: Sequence[Task], seeds: Sequence[int]) -> np.ndarray:
        n = len(tasks)
        self._episode_tasks = tasks
        self._alive = np.ones(n, dtype=bool)
        self._obs, self._reward = np.zeros((n, self.obs_dim)), np.zeros(n)
        for i, (task, seed) in enumerate(zip(tasks, seeds)):
            self._obs[i] = self._activate(i, task).reset(seed=int(seed))[0]
        return self._obs

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self._reward[:] = 0.0
        done = ~self._alive
        for i in np.flatnonzero(self._alive):
            o, r, terminated, _, _ = self._activate(i, self._episode_tasks[i]).step(actions[i])
            self._obs[i], self._reward[i] = o, r
            if terminated:
                self._alive[i], done[i] = False, True
        return self._obs, self._reward, done


STEPPERS: Registry[Callable[..., Stepper]] = Registry("stepper")


def _mujoco(make: Callable[[], Any]) -> Stepper:
    from metagrad.rl.envs.mujoco_stepper import MujocoStepper

    return MujocoStepper(make())


STEPPERS.add("mujoco", _mujoco)
STEPPERS.add("gymnasium", GymnasiumStepper)


def make_stepper(name: str, env_kwargs: dict[str, Any], stepper: str = "mujoco") -> Stepper:
    """The ``stepper`` of family ``name`` (``"mujoco"`` falls back to ``"gymnasium"`` for an
    environment that is not a MuJoCo locomotion task)."""
    from metagrad.rl.envs import get_family, make_env

    STEPPERS[stepper]  # an unknown stepper is an UnknownName error naming the known ones
    if stepper == "mujoco" and not hasattr(get_family(name).env_class(), "batch_observation"):
        stepper = "gymnasium"
    return STEPPERS[stepper](lambda: make_env(name, **env_kwargs))
