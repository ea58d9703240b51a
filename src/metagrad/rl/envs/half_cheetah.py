"""Half-cheetah velocity and direction tasks on gymnasium's ``HalfCheetah-v5``.

See :mod:`metagrad.rl.envs.locomotion` for the rewards and for where v5 differs from the
paper's simulator (frame skip: the default here is the paper's 1, ``dt = 0.01``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
from gymnasium.utils import EzPickle

from metagrad.rl.envs.base import Task
from metagrad.rl.envs.locomotion import LocomotionTask, velocity_term
from metagrad.rl.envs.tasks import half_cheetah_dir_tasks, half_cheetah_vel_tasks

PAPER_FRAME_SKIP = 1  # rllab: dt = 0.01
CTRL_COST = 0.05
HORIZON = 200
DEFAULTS = {"velocity": 0.0, "direction": 1.0}


class _HalfCheetahTask(LocomotionTask, HalfCheetahEnv):
    def __init__(self, task: Task, frame_skip: int, **kwargs: Any) -> None:
        HalfCheetahEnv.__init__(self, frame_skip=frame_skip, **kwargs)
        EzPickle.__init__(self, task, frame_skip, **kwargs)
        self.set_task(task)

    def _get_rew(self, x_velocity: float, action):
        forward = velocity_term(x_velocity, self.task_key, self.target)
        ctrl = CTRL_COST * float(np.sum(np.square(action)))
        info = {"reward_forward": forward, "reward_ctrl": -ctrl}
        return forward - ctrl, info

    def x_source(self, data):
        return data.qpos  # v5 measures the velocity on qpos[0]

    def batch_observation(self, qpos, qvel, cfrc_ext):
        skip = 1 if self._exclude_current_positions_from_observation else 0
        return np.concatenate((qpos[:, skip:], qvel), axis=1)

    def batch_reward(self, x_velocity, action, target, cfrc_ext):
        forward = velocity_term(x_velocity, self.task_key, target)
        return forward - CTRL_COST * np.sum(np.square(action), axis=1)


class HalfCheetahVelEnv(_HalfCheetahTask):
    """Run at a goal velocity: reward ``-|v_x - goal| - 0.05 * sum(a^2)``, goal ``~ U[0, 2]``.

    Args:
        task: ``{"velocity": v}`` (``v = 0`` until :meth:`set_task` is called).
        frame_skip: 1 (the paper's ``dt = 0.01``, default) or 5 (gymnasium v5's).
        **kwargs: passed to gymnasium's ``HalfCheetahEnv`` (e.g. ``reset_noise_scale``).
    """

    task_key, family = "velocity", "half-cheetah velocity"
    sample_tasks = staticmethod(half_cheetah_vel_tasks)

    def __init__(
        self, task: Task | None = None, frame_skip: int = PAPER_FRAME_SKIP, **kwargs: Any
    ) -> None:
        super().__init__(task or {self.task_key: DEFAULTS[self.task_key]}, frame_skip, **kwargs)


class HalfCheetahDirEnv(_HalfCheetahTask):
    """Run forward (+1) or backward (-1): reward ``direction * v_x - 0.05 * sum(a^2)``.

    Args:
        task: ``{"direction": +1.0 or -1.0}`` (+1 until :meth:`set_task` is called).
        frame_skip: 1 (the paper's ``dt = 0.01``, default) or 5 (gymnasium v5's).
        **kwargs: passed to gymnasium's ``HalfCheetahEnv``.
    """

    task_key, family = "direction", "half-cheetah direction"
    sample_tasks = staticmethod(half_cheetah_dir_tasks)

    def __init__(
        self, task: Task | None = None, frame_skip: int = PAPER_FRAME_SKIP, **kwargs: Any
    ) -> None:
        super().__init__(task or {self.task_key: DEFAULTS[self.task_key]}, frame_skip, **kwargs)
