"""Task distributions of MAML's RL experiments (Finn et al. 2017, §5.3), in pure torch.

They are separate from the environments so that tasks can be drawn (and logged, and sent to
workers) without importing gymnasium or MuJoCo. Every sampler takes a ``torch.Generator`` and
is exactly reproducible given its state.
"""

from __future__ import annotations

import torch

from metagrad.rl.envs.base import Task, uniform


def navigation_tasks(n: int, generator: torch.Generator | None = None) -> list[Task]:
    """2D navigation goals ``~ U[-0.5, 0.5]^2``: ``[{"goal": (x, y)}, ...]``."""
    xy = uniform(2 * n, -0.5, 0.5, generator).reshape(n, 2)
    return [{"goal": (float(x), float(y))} for x, y in xy.tolist()]


def velocity_tasks(
    n: int, generator: torch.Generator | None = None, high: float = 2.0
) -> list[Task]:
    """Goal velocities ``~ U[0, high]`` (2 for half-cheetah, 3 for ant): ``[{"velocity": v}]``."""
    return [{"velocity": float(v)} for v in uniform(n, 0.0, high, generator).tolist()]


def direction_tasks(
    n: int, generator: torch.Generator | None = None, high: float = 2.0
) -> list[Task]:
    """Directions ``+1`` / ``-1`` with probability 1/2: ``[{"direction": d}, ...]``.

    As the reference code: draw ``U[0, high]`` and take ``-1`` below ``high / 2``
    (``high`` 2 for half-cheetah, 3 for ant).
    """
    u = uniform(n, 0.0, high, generator)
    return [{"direction": -1.0 if x < high / 2 else 1.0} for x in u.tolist()]


def half_cheetah_vel_tasks(n: int, generator: torch.Generator | None = None) -> list[Task]:
    """Half-cheetah goal velocities ``~ U[0, 2]``."""
    return velocity_tasks(n, generator, high=2.0)


def half_cheetah_dir_tasks(n: int, generator: torch.Generator | None = None) -> list[Task]:
    """Half-cheetah directions (``U[0, 2] < 1`` gives ``-1``)."""
    return direction_tasks(n, generator, high=2.0)


def ant_vel_tasks(n: int, generator: torch.Generator | None = None) -> list[Task]:
    """Ant goal velocities ``~ U[0, 3]``."""
    return velocity_tasks(n, generator, high=3.0)


def ant_dir_tasks(n: int, generator: torch.Generator | None = None) -> list[Task]:
    """Ant directions (``U[0, 3] < 1.5`` gives ``-1``)."""
    return direction_tasks(n, generator, high=3.0)
