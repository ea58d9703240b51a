"""Ant velocity and direction tasks on gymnasium's ``Ant-v5``.

See :mod:`metagrad.rl.envs.locomotion` for the rewards and for where v5 differs from the
paper's simulator (model, frame skip: the default here, 2, gives the paper's ``dt = 0.02``).
Termination is v5's: the state is not finite or the torso height leaves ``[0.2, 1.0]``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.envs.mujoco.ant_v5 import AntEnv
from gymnasium.utils import EzPickle

from metagrad.rl.envs.base import Task
from metagrad.rl.envs.locomotion import LocomotionTask, velocity_term
from metagrad.rl.envs.tasks import ant_dir_tasks, ant_vel_tasks

PAPER_FRAME_SKIP = 2  # dt = 0.02, the paper's control period (rllab: timestep 0.02, skip 1)
CTRL_COST = 0.005
CONTACT_COST = 0.0005
SURVIVE_REWARD = 0.05
VELOCITY_BONUS = 1.0  # velocity tasks only
HORIZON = 200
DEFAULTS = {"velocity": 0.0, "direction": 1.0}


class _AntTask(LocomotionTask, AntEnv):
    reads_contact_forces = True  # the contact cost and the observation read cfrc_ext

    def __init__(self, task: Task, frame_skip: int, **kwargs: Any) -> None:
        AntEnv.__init__(self, frame_skip=frame_skip, **kwargs)
        EzPickle.__init__(self, task, frame_skip, **kwargs)
        self.set_task(task)

    def _get_rew(self, x_velocity: float, action):
        forward = velocity_term(x_velocity, self.task_key, self.target)
        if self.task_key == "velocity":
            forward += VELOCITY_BONUS
        ctrl = CTRL_COST * float(np.sum(np.square(action)))
        contact = CONTACT_COST * float(np.sum(np.square(np.clip(self.data.cfrc_ext, -1.0, 1.0))))
        info = {
            "reward_forward": forward,
            "reward_ctrl": -ctrl,
            "reward_contact": -contact,
            "reward_survive": SURVIVE_REWARD,
        }
        return forward - ctrl - contact + SURVIVE_REWARD, info

    def x_source(self, data):
        return data.body(self._main_body).xpos  # v5 measures the velocity on the torso's xpos

    def batch_observation(self, qpos, qvel, cfrc_ext):
        parts = [qpos[:, 2:] if self._exclude_current_positions_from_observation else qpos, qvel]
        if self._include_cfrc_ext_in_observation:
            low, high = self._contact_force_range
            parts.append(np.clip(cfrc_ext, low, high)[:, 1:].reshape(len(qpos), -1))
        return np.concatenate(parts, axis=1)

    def batch_reward(self, x_velocity, action, target, cfrc_ext):
        forward = velocity_term(x_velocity, self.task_key, target)
        if self.task_key == "velocity":
            forward = forward + VELOCITY_BONUS
        ctrl = CTRL_COST * np.sum(np.square(action), axis=1)
        contact_forces = np.clip(cfrc_ext, -1.0, 1.0).reshape(len(cfrc_ext), -1)
        contact = CONTACT_COST * np.sum(np.square(contact_forces), axis=1)
        return forward - ctrl - contact + SURVIVE_REWARD

    def batch_terminated(self, qpos, qvel):
        if not self._terminate_when_unhealthy:
            return np.zeros(len(qpos), dtype=bool)
        low, high = self._healthy_z_range
        finite = np.isfinite(qpos).all(axis=1) & np.isfinite(qvel).all(axis=1)
        return ~(finite & (low <= qpos[:, 2]) & (qpos[:, 2] <= high))


class AntVelEnv(_AntTask):
    """Walk at a goal velocity ``~ U[0, 3]`` (reward in :mod:`metagrad.rl.envs.locomotion`).

    Args:
        task: ``{"velocity": v}`` (``v = 0`` until :meth:`set_task` is called).
        frame_skip: 2 (the paper's ``dt = 0.02``, default) or 5 (gymnasium v5's).
        **kwargs: passed to gymnasium's ``AntEnv`` (e.g. ``reset_noise_scale``).
    """

    task_key, family = "velocity", "ant velocity"
    sample_tasks = staticmethod(ant_vel_tasks)

    def __init__(
        self, task: Task | None = None, frame_skip: int = PAPER_FRAME_SKIP, **kwargs: Any
    ) -> None:
        super().__init__(task or {self.task_key: DEFAULTS[self.task_key]}, frame_skip, **kwargs)


class AntDirEnv(_AntTask):
    """Walk forward (+1) or backward (-1) (reward in :mod:`metagrad.rl.envs.locomotion`).

    Args:
        task: ``{"direction": +1.0 or -1.0}`` (+1 until :meth:`set_task` is called).
        frame_skip: 2 (the paper's ``dt = 0.02``, default) or 5 (gymnasium v5's).
        **kwargs: passed to gymnasium's ``AntEnv``.
    """

    task_key, family = "direction", "ant direction"
    sample_tasks = staticmethod(ant_dir_tasks)

    def __init__(
        self, task: Task | None = None, frame_skip: int = PAPER_FRAME_SKIP, **kwargs: Any
    ) -> None:
        super().__init__(task or {self.task_key: DEFAULTS[self.task_key]}, frame_skip, **kwargs)
