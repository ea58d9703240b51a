"""The interfaces shared by every task family: tasks, task samplers, batched environments.

A *task* is a small picklable dict (``{"goal": (x, y)}``, ``{"velocity": v}``,
``{"direction": d}``), so it can be sent to worker processes and stored in logs.

A *batched environment* steps ``tasks x trajs`` episodes in lockstep: one call moves every
still-running episode of every task by one step, which lets the sampler evaluate the policy
once per time step for the whole meta-batch. Implementations: :class:`Navigation2D` (pure
torch), :class:`metagrad.rl.envs.vec_env.InProcessVecEnv` and
:class:`metagrad.rl.envs.vec_env.SubprocVecEnv` (MuJoCo / gymnasium environments stepped in this
process or in worker processes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

Task = dict[str, Any]


@runtime_checkable
class BatchedEnv(Protocol):
    """``tasks x trajs`` episodes stepped together (see the module docstring).

    Attributes:
        obs_dim: observation size.
        act_dim: action size.
        horizon: maximum episode length (the sampler stops after this many steps).
    """

    obs_dim: int
    act_dim: int
    horizon: int

    def reset(self, tasks: Sequence[Task], trajs: int, seed: int) -> Tensor:
        """Start ``trajs`` episodes of each task; returns observations ``[tasks, trajs, obs]``."""
        ...

    def step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Apply ``actions [tasks, trajs, act]``.

        Returns:
            ``(obs [tasks, trajs, obs], reward [tasks, trajs], done [tasks, trajs] bool)``.
            Episodes that ended earlier may return anything: the sampler masks them.
        """
        ...

    def close(self) -> None:
        """Release resources (worker processes)."""
        ...


def check_tasks(tasks: Sequence[Task], key: str, family: str) -> None:
    """Raise a teaching error unless every task is a dict holding ``key``."""
    if len(tasks) == 0:
        raise ValueError(f"{family}: got an empty list of tasks; sample some with sample_tasks(n)")
    for i, task in enumerate(tasks):
        if not isinstance(task, dict) or key not in task:
            raise ValueError(
                f"{family}: task {i} is {task!r}, expected a dict with key {key!r} as returned "
                f"by this family's sample_tasks(n, generator)"
            )


def uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> Tensor:
    """``n`` draws from U[low, high) in float64 (exactly reproducible given the generator)."""
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)
