"""2D navigation as a ``gymnasium.Env`` (one episode at a time), for gymnasium tooling.

The dynamics and reward are :func:`metagrad.rl.envs.navigation.navigation_step`, the same
function the batched torch environment uses. Requires the ``[rl]`` extra (gymnasium).
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
import torch
from gymnasium import spaces

from metagrad.rl.envs.base import Task, check_tasks
from metagrad.rl.envs.navigation import HORIZON, MAX_SPEED, navigation_step
from metagrad.rl.envs.tasks import navigation_tasks


class Navigation2DEnv(gymnasium.Env):
    """2D navigation to a goal (see :mod:`metagrad.rl.envs.navigation` for the definition).

    Episodes terminate on reaching the goal and are truncated after ``horizon`` steps.

    Args:
        task: ``{"goal": (x, y)}``; the goal ``(0, 0)`` until :meth:`set_task` is called.
        horizon: truncation length (100 in the paper).
        action_scale: multiplier applied to actions before clipping.
    """

    metadata = {"render_modes": []}  # noqa: RUF012 (gymnasium's convention)

    def __init__(
        self, task: Task | None = None, horizon: int = HORIZON, action_scale: float = 1.0
    ) -> None:
        super().__init__()
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
        high = MAX_SPEED / action_scale
        self.action_space = spaces.Box(-high, high, shape=(2,), dtype=np.float32)
        self.horizon, self.action_scale = horizon, action_scale
        self._position = np.zeros(2)
        self._steps = 0
        self.set_task(task or {"goal": (0.0, 0.0)})

    sample_tasks = staticmethod(navigation_tasks)

    def set_task(self, task: Task) -> None:
        """Change the goal; takes effect immediately (call :meth:`reset` to restart)."""
        check_tasks([task], "goal", "Navigation2DEnv")
        self.task = dict(task)
        self._goal = np.asarray(task["goal"], dtype=np.float64)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._position = np.zeros(2)
        self._steps = 0
        return self._position.astype(np.float32), {}

    def step(self, action):
        position, reward, done = navigation_step(
            torch.from_numpy(self._position),
            torch.from_numpy(self._goal),
            torch.as_tensor(np.asarray(action, dtype=np.float64)),
            self.action_scale,
        )
        self._position = position.numpy()
        self._steps += 1
        truncated = self._steps >= self.horizon and not bool(done)
        return self._position.astype(np.float32), float(reward), bool(done), truncated, {}
