"""From an RL experiment config to the objects of a run: tasks, environment, policy, update.

The one place that reads the sections of an RL config (:mod:`metagrad.config.rl_schema`) and
calls the constructors of :mod:`metagrad.rl`; the RL trainer and tester only see the
:class:`RLExperiment` it returns. Building a MuJoCo family starts its worker processes: close
the experiment (or use it as a context manager) when done.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

from metagrad.config import (
    ExperimentConfig,
    GaussianMLPConfig,
    RLTaskConfig,
)
from metagrad.errors import UsageError
from metagrad.functional.params import Params
from metagrad.registry import Registry
from metagrad.rl.envs import TaskFamily, get_family, make_batched_env
from metagrad.rl.envs.base import BatchedEnv, Task
from metagrad.rl.maml_trpo import MAMLTRPOConfig, meta_iteration
from metagrad.rl.policy import GaussianMLPPolicy
from metagrad.rl.pretrain import multitask_iteration
from metagrad.train.rng import eval_seed

Iteration = Callable[..., tuple[Params, dict[str, Any]]]  # (env, policy, theta, tasks, ...)
ITERATIONS: Registry[Iteration] = Registry("RL algorithm")
ITERATIONS.add("maml_trpo", meta_iteration)
ITERATIONS.add("pretrained_rl", multitask_iteration)


@dataclass
class RLExperiment:
    """Everything an RL run needs, built from one config.

    Attributes:
        cfg: the experiment config.
        family: the task distribution.
        env: the batched environment (worker processes for MuJoCo families).
        policy: the Gaussian MLP policy (its parameters are the initialisation).
        update: the library's hyper-parameters: episodes per task, TRPO, inner loop (for the
            pretrained baseline ``inner_lr`` is its test-time step size).
        iterate: one training iteration of the algorithm (:data:`ITERATIONS`).
    """

    cfg: ExperimentConfig
    family: TaskFamily
    env: BatchedEnv
    policy: GaussianMLPPolicy
    update: MAMLTRPOConfig
    iterate: Iteration

    def initial_theta(self) -> Params:
        """Detached copies of the policy's initial parameters (seeded by ``cfg.seed``)."""
        return {k: v.detach().clone() for k, v in self.policy.named_parameters()}

    def as_theta(self, weights: Mapping[str, Tensor]) -> Params:
        """``weights`` (e.g. loaded from a checkpoint) in the policy's parameter order.

        The order fixes the layout of TRPO's flat vectors, hence the rounding of its sums: a
        resumed run is bit-identical only with the same order.
        """
        return {k: weights[k] for k, _ in self.policy.named_parameters()}

    def iteration(
        self, theta: Params, tasks: Sequence[Task], generator: torch.Generator
    ) -> tuple[Params, dict[str, Any]]:
        """One meta-iteration (MAML-TRPO) or multi-task TRPO iteration (pretrained) on ``tasks``."""
        return self.iterate(self.env, self.policy, theta, tasks, self.update, generator)

    def fixed_generator(self, split: str) -> torch.Generator:
        """The generator of a fixed evaluation: its tasks, then its episodes ("val", "test")."""
        return torch.Generator().manual_seed(eval_seed(self.cfg, split))

    def close(self) -> None:
        """Stop the environment's worker processes (if any)."""
        self.env.close()

    def __enter__(self) -> RLExperiment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def update_config(cfg: ExperimentConfig) -> MAMLTRPOConfig:
    """The library's :class:`MAMLTRPOConfig` of an RL config's task and algorithm sections.

    The library's fields have the config's names, so they pass through: ``task.trajectories``
    and every field of the algorithm section that :class:`MAMLTRPOConfig` has (for the
    pretrained baseline, ``inner_lr`` is its test-time step size).
    """
    task, a = cfg.task, cfg.algorithm
    assert isinstance(task, RLTaskConfig)
    ITERATIONS[a.name]  # an algorithm without an iteration is an UnknownName error
    names = {f.name for f in fields(MAMLTRPOConfig)}
    given: dict[str, Any] = {f.name: getattr(a, f.name) for f in fields(a) if f.name in names}
    return MAMLTRPOConfig(trajectories=task.trajectories, **given)


def build_rl_experiment(cfg: ExperimentConfig) -> RLExperiment:
    """Build the RL experiment of ``cfg`` (the policy is freshly initialised from ``cfg.seed``).

    Raises:
        ValueError: ``cfg`` is not an RL config.
        ImportError: a MuJoCo family without gymnasium[mujoco] installed (says what to install).
    """
    task, model = cfg.task, cfg.model
    if not isinstance(task, RLTaskConfig) or not isinstance(model, GaussianMLPConfig):
        raise UsageError(
            f"task family {task.family!r} with model {model.name!r} is not an RL experiment; "
            "RL experiments use an RL task family and model 'gaussian_mlp'"
        )
    update = update_config(cfg)
    family = get_family(task.family)
    env = make_batched_env(
        task.family,
        horizon=task.horizon,
        workers=getattr(task, "workers", None),
        env_kwargs=task.env_kwargs(),
    )
    try:
        torch.manual_seed(cfg.seed)
        policy = GaussianMLPPolicy(
            env.obs_dim, env.act_dim, model.hidden, model.init_std, model.min_std
        )
    except BaseException:
        env.close()
        raise
    return RLExperiment(cfg, family, env, policy, update, ITERATIONS[cfg.algorithm.name])
