"""Task families of MAML's RL experiments: task samplers, environments, batched environments.

====================  ============================  =======  =================================
name                  tasks                         horizon  environment
====================  ============================  =======  =================================
``navigation-2d``     goal ``~ U[-0.5, 0.5]^2``     100      torch (batched), gymnasium
``half-cheetah-vel``  goal velocity ``~ U[0, 2]``   200      ``HalfCheetah-v5``
``half-cheetah-dir``  direction ``+-1``             200      ``HalfCheetah-v5``
``ant-vel``           goal velocity ``~ U[0, 3]``   200      ``Ant-v5``
``ant-dir``           direction ``+-1``             200      ``Ant-v5``
====================  ============================  =======  =================================

Nothing here imports gymnasium or MuJoCo: the gymnasium environments are loaded on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from metagrad.registry import Registry
from metagrad.rl.envs.base import BatchedEnv, Task
from metagrad.rl.envs.navigation import Navigation2D
from metagrad.rl.envs.tasks import (
    ant_dir_tasks,
    ant_vel_tasks,
    half_cheetah_dir_tasks,
    half_cheetah_vel_tasks,
    navigation_tasks,
)


@dataclass(frozen=True)
class TaskFamily:
    """A distribution over tasks and the environment that runs them.

    Attributes:
        name: registry name, e.g. ``"half-cheetah-vel"``.
        sample_tasks: ``sample_tasks(n, generator) -> list[Task]``.
        horizon: episode length (the paper's).
        entry_point: ``"module:Class"`` of the gymnasium environment (imported lazily).
    """

    name: str
    sample_tasks: Callable[[int, torch.Generator | None], list[Task]]
    horizon: int
    entry_point: str

    def env_class(self) -> type:
        """The gymnasium environment class (imports gymnasium/MuJoCo)."""
        module, cls = self.entry_point.split(":")
        try:
            return getattr(importlib.import_module(module), cls)
        except ImportError as e:
            raise ImportError(
                f"task family {self.name!r} needs gymnasium with MuJoCo ({e}). Install the "
                "extra: pip install 'metagrad[rl]' (or pip install 'gymnasium[mujoco]')."
            ) from e


_ENVS = "metagrad.rl.envs"
FAMILIES: Registry[TaskFamily] = Registry("task family")
for _family in [
    TaskFamily("navigation-2d", navigation_tasks, 100, f"{_ENVS}.navigation_gym:Navigation2DEnv"),
    TaskFamily(
        "half-cheetah-vel",
        half_cheetah_vel_tasks,
        200,
        f"{_ENVS}.half_cheetah:HalfCheetahVelEnv",
    ),
    TaskFamily(
        "half-cheetah-dir",
        half_cheetah_dir_tasks,
        200,
        f"{_ENVS}.half_cheetah:HalfCheetahDirEnv",
    ),
    TaskFamily("ant-vel", ant_vel_tasks, 200, f"{_ENVS}.ant:AntVelEnv"),
    TaskFamily("ant-dir", ant_dir_tasks, 200, f"{_ENVS}.ant:AntDirEnv"),
]:
    FAMILIES.add(_family.name, _family)


# Where MuJoCo episodes are stepped by default: 0 = in this process. On these 2 cores, shared
# with other trainings, in-process stepping was the fastest (BENCHMARKS.md, issue 20).
DEFAULT_WORKERS = 0


def get_family(name: str) -> TaskFamily:
    """The task family called ``name`` (see the module docstring); an unknown name is a
    :class:`~metagrad.registry.UnknownName` (``KeyError``) that says which one was meant."""
    return FAMILIES[name]


def make_env(name: str, task: Task | None = None, **kwargs: Any):
    """A gymnasium environment of family ``name`` set to ``task`` (imports gymnasium).

    ``kwargs`` go to the environment's constructor (e.g. ``frame_skip=5`` for v5 dynamics).
    """
    return get_family(name).env_class()(task, **kwargs)


def make_batched_env(
    name: str,
    *,
    horizon: int | None = None,
    workers: int | None = None,
    env_kwargs: dict[str, Any] | None = None,
    start_method: str = "spawn",
    stepper: str = "mujoco",
) -> BatchedEnv:
    """The batched environment of family ``name``.

    2D navigation runs in torch in this process. MuJoCo families run in this process
    (``workers=0``, :class:`metagrad.rl.envs.vec_env.InProcessVecEnv`) or in ``workers``
    processes (:class:`metagrad.rl.envs.vec_env.SubprocVecEnv`; close it, or use it as a
    context manager).

    Args:
        name: family name.
        horizon: episode length; the family's (the paper's) when omitted.
        workers: worker processes for gymnasium families; 0 steps them in this process;
            ``None``: :data:`DEFAULT_WORKERS`.
        env_kwargs: constructor arguments of the environment (e.g. ``{"frame_skip": 5}``;
            ``{"action_scale": 0.1}`` for 2D navigation).
        start_method: multiprocessing start method of the workers.
        stepper: how episodes are stepped: ``"mujoco"`` (MuJoCo called directly, all episodes'
            observations and rewards computed at once) or ``"gymnasium"`` (each environment's
            ``step``; the reference); see :mod:`metagrad.rl.envs.stepping`.
    """
    family = get_family(name)
    horizon = horizon or family.horizon
    if name == "navigation-2d":
        return Navigation2D(horizon=horizon, **(env_kwargs or {}))
    from metagrad.rl.envs.vec_env import InProcessVecEnv, SubprocVecEnv

    workers = DEFAULT_WORKERS if workers is None else workers
    if workers < 0:
        raise ValueError(f"workers must be >= 0 (0: step in this process), got {workers}")
    if workers == 0:
        return InProcessVecEnv(name, horizon=horizon, env_kwargs=env_kwargs, stepper=stepper)
    return SubprocVecEnv(
        name,
        horizon=horizon,
        workers=workers,
        env_kwargs=env_kwargs,
        start_method=start_method,
        stepper=stepper,
    )


__all__ = [
    "DEFAULT_WORKERS",
    "FAMILIES",
    "BatchedEnv",
    "Navigation2D",
    "Task",
    "TaskFamily",
    "get_family",
    "make_batched_env",
    "make_env",
]
