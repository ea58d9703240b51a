"""Padded batches of whole trajectories for all tasks of a meta-batch."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from metagrad.rl.envs.base import Task


@dataclass(frozen=True)
class Trajectories:
    """``trajs`` episodes of each of ``tasks`` tasks, padded to ``T`` steps.

    Step ``t`` of an episode is: observation ``obs[..., t, :]`` seen, action
    ``actions[..., t, :]`` taken, reward ``rewards[..., t]`` received. ``mask[..., t]`` is 1 for
    the steps that happened and 0 for the padding after an episode ended early (padded
    observations, actions and rewards are 0). ``T`` is the longest episode (at most the horizon).

    Attributes:
        obs: ``[tasks, trajs, T, obs_dim]``.
        actions: ``[tasks, trajs, T, act_dim]`` (as sampled, before any clipping by the env).
        rewards: ``[tasks, trajs, T]``.
        mask: ``[tasks, trajs, T]``, same dtype as ``rewards``.
        tasks: the tasks, one per leading index.
    """

    obs: Tensor
    actions: Tensor
    rewards: Tensor
    mask: Tensor
    tasks: tuple[Task, ...] = ()

    @property
    def num_tasks(self) -> int:
        return self.rewards.shape[0]

    @property
    def trajs(self) -> int:
        return self.rewards.shape[1]

    def returns(self) -> Tensor:
        """Undiscounted return of each episode ``[tasks, trajs]``."""
        return (self.rewards * self.mask).sum(-1)

    def mean_return(self) -> float:
        """Average undiscounted return over all episodes."""
        return float(self.returns().mean())

    def lengths(self) -> Tensor:
        """Episode lengths ``[tasks, trajs]``."""
        return self.mask.sum(-1)

    def to(self, dtype: torch.dtype) -> Trajectories:
        """Floating tensors cast to ``dtype``."""
        return replace(
            self,
            obs=self.obs.to(dtype),
            actions=self.actions.to(dtype),
            rewards=self.rewards.to(dtype),
            mask=self.mask.to(dtype),
        )
