"""2D navigation (MAML §5.3), vectorised in pure torch over ``tasks x trajs`` points.

A point starts at ``(0, 0)`` and must reach a goal ``~ U[-0.5, 0.5]^2``. The action is a
velocity, clipped to ``[-0.1, 0.1]`` per coordinate; the point moves by it; the reward is minus
the Euclidean distance to the goal *after* the move (the paper's text says squared distance,
every reference implementation and the reported returns use the plain distance); the episode
ends when ``|dx| < 0.01`` and ``|dy| < 0.01`` (the reward of that last move counts), or after
``horizon = 100`` steps. The observation is the position.

``action_scale`` multiplies the action before clipping. The default 1 follows the issue's
definition (and pytorch-maml-rl). The original rllab code wrapped the environment in
``normalize``, which maps a policy output in ``[-1, 1]`` to ``[-0.1, 0.1]``: that is
``action_scale=0.1``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from metagrad.rl.envs.base import Task, check_tasks

MAX_SPEED = 0.1
GOAL_TOLERANCE = 0.01
HORIZON = 100


def navigation_step(
    position: Tensor, goal: Tensor, action: Tensor, action_scale: float = 1.0
) -> tuple[Tensor, Tensor, Tensor]:
    """One step of 2D navigation for any batch shape.

    Args:
        position: current positions ``[..., 2]``.
        goal: goals, broadcastable to ``position``.
        action: velocities ``[..., 2]`` (clipped to ``[-0.1, 0.1]`` after ``action_scale``).
        action_scale: multiplier applied before clipping (see the module docstring).

    Returns:
        ``(new_position [..., 2], reward [...], done [...] bool)``.
    """
    position = position + (action * action_scale).clamp(-MAX_SPEED, MAX_SPEED)
    delta = position - goal
    reward = -delta.norm(dim=-1)
    done = (delta.abs() < GOAL_TOLERANCE).all(dim=-1)
    return position, reward, done


class Navigation2D:
    """Batched 2D navigation: all ``[tasks, trajs]`` points stepped by one tensor operation.

    Implements :class:`metagrad.rl.envs.base.BatchedEnv`. Deterministic (no reset noise), so
    ``seed`` is accepted and ignored.

    Args:
        horizon: maximum episode length (100 in the paper).
        action_scale: multiplier applied to actions before clipping (see module docstring).
        dtype: dtype of observations and rewards.
    """

    obs_dim = 2
    act_dim = 2

    def __init__(
        self, horizon: int = HORIZON, action_scale: float = 1.0, dtype: torch.dtype = torch.float32
    ) -> None:
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        self.horizon, self.action_scale, self.dtype = horizon, action_scale, dtype
        self._goal: Tensor | None = None  # [tasks, 1, 2]
        self._position: Tensor | None = None  # [tasks, trajs, 2]

    def reset(self, tasks: Sequence[Task], trajs: int, seed: int = 0) -> Tensor:
        check_tasks(tasks, "goal", "2D navigation")
        goals = torch.tensor([t["goal"] for t in tasks], dtype=self.dtype)
        if goals.shape != (len(tasks), 2):
            raise ValueError(f"2D navigation goals must be (x, y) pairs, got shape {goals.shape}")
        self._goal = goals.unsqueeze(1)  # [tasks, 1, 2]
        self._position = torch.zeros(len(tasks), trajs, 2, dtype=self.dtype)
        return self._position.clone()

    def step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if self._position is None or self._goal is None:
            raise RuntimeError("Navigation2D.step called before reset(tasks, trajs, seed)")
        if actions.shape != self._position.shape:
            raise ValueError(
                f"actions must be [tasks, trajs, 2] = {tuple(self._position.shape)}, got "
                f"{tuple(actions.shape)}"
            )
        actions = actions.to(self.dtype)
        self._position, reward, done = navigation_step(
            self._position, self._goal, actions, self.action_scale
        )
        return self._position.clone(), reward, done

    def close(self) -> None:
        self._goal = self._position = None
