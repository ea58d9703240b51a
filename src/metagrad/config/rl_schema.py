"""Config variants of meta reinforcement learning (MAML §5.3), registered into the schema.

Task families (``task.family``) are the environments of :mod:`metagrad.rl.envs`:
``"navigation-2d"``, ``"half-cheetah-vel"``, ``"half-cheetah-dir"``, ``"ant-vel"``, ``"ant-dir"``.
Their ``kind`` is ``"rl"`` and their ``modality`` ``"state"``, so the schema's cross-section
checks pair them only with the model ``"gaussian_mlp"`` and the algorithms ``"maml_trpo"`` and
``"pretrained_rl"`` (and those only with them). In an RL config ``[train] iterations`` counts
meta-iterations (one TRPO step each) and ``meta_batch_size`` tasks per meta-iteration; the test
uses ``task.test_tasks`` fixed tasks (seeded by ``eval.seed``) and ``[eval] inner_steps`` /
``inner_lr`` for the adaptation steps (0, 1, ..., inner_steps are reported).

Importing :mod:`metagrad.config` imports this module, which adds the classes below to
:data:`~metagrad.config.schema.TASK_CONFIGS`, :data:`~metagrad.config.schema.MODEL_CONFIGS` and
:data:`~metagrad.config.schema.ALGORITHM_CONFIGS`; :func:`rl_problems` adds the checks across
sections that only concern RL runs. Nothing here imports torch, gymnasium or MuJoCo.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

from metagrad.config.rules import Problem, at_least, lr_per_step, positive
from metagrad.config.schema import (
    ALGORITHM_CONFIGS,
    MODEL_CONFIGS,
    TASK_CONFIGS,
    AlgorithmConfig,
    EvalConfig,
    ExperimentConfig,
    ModelConfig,
    TaskConfig,
    TrainConfig,
    config_class,
)

RL_KIND = "rl"
STATE = "state"  # the modality of RL observations: only policies consume them


# ----------------------------------------------------------------------------------- task
@config_class
class RLTaskConfig(TaskConfig):
    """Base of the RL task families: episodes, trajectories per task, test tasks."""

    kind: ClassVar[str] = RL_KIND
    modality: ClassVar[str] = STATE
    horizon: int = 200  # maximum episode length
    trajectories: int = 20  # episodes per task per sampling (the reference's fast_batch_size)
    test_tasks: int = 40  # fixed test tasks of `metagrad test` (40 as in the paper)
    test_trajectories: int | None = None  # episodes per test task per step (None = trajectories)

    def problems(self) -> Iterator[Problem]:
        yield from at_least(self, 1, "horizon", "trajectories", "test_tasks", "test_trajectories")

    def env_kwargs(self) -> dict[str, Any]:
        """The environment constructor's arguments (none by default)."""
        return {}


@config_class
class Navigation2DTaskConfig(RLTaskConfig):
    """A point moves to a goal ~ U[-0.5, 0.5]^2; reward: minus the distance (pure torch)."""

    family: ClassVar[str] = "navigation-2d"
    horizon: int = 100  # the paper's
    action_scale: float = 1.0  # action multiplier before clipping to [-0.1, 0.1] (rllab: 0.1)

    def problems(self) -> Iterator[Problem]:
        yield from super().problems()
        yield from positive(self, "action_scale")

    def env_kwargs(self) -> dict[str, Any]:
        """The environment constructor's arguments."""
        return {"action_scale": self.action_scale}


@config_class
class LocomotionTaskConfig(RLTaskConfig):
    """Base of the MuJoCo families (gymnasium v5 models), stepped in this process or workers."""

    workers: int | None = None  # environment worker processes (0 or None: in this process)
    frame_skip: int = 1  # simulator steps per action; see metagrad.rl.envs.locomotion

    def problems(self) -> Iterator[Problem]:
        yield from super().problems()
        yield from at_least(self, 0, "workers")
        yield from at_least(self, 1, "frame_skip")

    def env_kwargs(self) -> dict[str, Any]:
        """The environment constructor's arguments."""
        return {"frame_skip": self.frame_skip}


@config_class
class HalfCheetahVelTaskConfig(LocomotionTaskConfig):
    """Half-cheetah runs at a goal velocity ~ U[0, 2]."""

    family: ClassVar[str] = "half-cheetah-vel"
    frame_skip: int = 1  # the paper's dt = 0.01 (gymnasium v5: 5)


@config_class
class HalfCheetahDirTaskConfig(LocomotionTaskConfig):
    """Half-cheetah runs forward or backward."""

    family: ClassVar[str] = "half-cheetah-dir"
    frame_skip: int = 1  # the paper's dt = 0.01 (gymnasium v5: 5)


@config_class
class AntVelTaskConfig(LocomotionTaskConfig):
    """Ant runs at a goal velocity ~ U[0, 3]."""

    family: ClassVar[str] = "ant-vel"
    frame_skip: int = 2  # the paper's control period dt = 0.02 (gymnasium v5: 5)


@config_class
class AntDirTaskConfig(LocomotionTaskConfig):
    """Ant runs forward or backward (40 trajectories per task in the paper)."""

    family: ClassVar[str] = "ant-dir"
    frame_skip: int = 2  # the paper's control period dt = 0.02 (gymnasium v5: 5)
    trajectories: int = 40


# ---------------------------------------------------------------------------------- model
@config_class
class GaussianMLPConfig(ModelConfig):
    """Gaussian policy: ReLU MLP for the mean, learned state-independent log-std."""

    name: ClassVar[str] = "gaussian_mlp"
    modalities: ClassVar[frozenset[str]] = frozenset({STATE})
    hidden: tuple[int, ...] = (100, 100)  # width of each hidden layer (the paper's 2 x 100)
    init_std: float = 1.0  # initial standard deviation of every action dimension
    min_std: float = 1e-6  # lower bound on the standard deviation

    def problems(self) -> Iterator[Problem]:
        if not self.hidden or min(self.hidden) < 1:
            yield "hidden", f"must be a non-empty list of widths >= 1, got {list(self.hidden)}"
        yield from positive(self, "init_std", "min_std")


# ------------------------------------------------------------------------------ algorithm
@config_class
class TRPOConfig(AlgorithmConfig):
    """Base of the RL algorithms: the TRPO outer update and the advantage estimator."""

    name: ClassVar[str]
    task_kinds: ClassVar[frozenset[str]] = frozenset({RL_KIND})
    group: ClassVar[str] = "meta-RL"
    max_kl: float = 0.01  # trust region: mean KL between the old and new policy
    cg_iters: int = 10  # conjugate gradient iterations
    cg_damping: float = 1e-5  # damping added to the Hessian-vector products
    ls_backtrack_ratio: float = 0.8  # line search: shrink the step by this factor
    ls_max_steps: int = 15  # line search: candidates before giving up
    gamma: float = 0.99  # discount
    gae_lambda: float = 1.0  # GAE lambda (1: returns minus the linear baseline)

    def problems(self) -> Iterator[Problem]:
        yield from positive(self, "max_kl", "cg_damping")
        yield from at_least(self, 1, "cg_iters", "ls_max_steps")
        for name in ("ls_backtrack_ratio", "gamma", "gae_lambda"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0 or (name == "ls_backtrack_ratio" and value == 1.0):
                bound = "< 1" if name == "ls_backtrack_ratio" else "<= 1"
                yield name, f"must be > 0 and {bound}, got {value!r}"


@config_class
class MAMLTRPOAlgorithmConfig(TRPOConfig):
    """MAML for RL: policy-gradient adaptation, TRPO meta-update (Finn et al., 2017)."""

    name: ClassVar[str] = "maml_trpo"
    inner_lr: float | tuple[float, ...] = 0.1  # inner step size, or one per inner step
    inner_steps: int = 1  # policy-gradient steps per task during meta-training
    first_order: bool = False  # drop second-order terms of the adaptation
    fisher_tasks: int | None = None  # tasks in the KL's Hessian (None = all; fewer is faster)

    def problems(self) -> Iterator[Problem]:
        yield from super().problems()
        yield from positive(self, "inner_lr")
        yield from at_least(self, 1, "inner_steps", "fisher_tasks")
        yield from lr_per_step(self, "inner_lr", self.inner_steps)


@config_class
class PretrainedRLConfig(TRPOConfig):
    """Baseline: one policy trained by TRPO on all tasks (no adaptation), fine-tuned at test."""

    name: ClassVar[str] = "pretrained_rl"
    inner_lr: float = 0.1  # test-time policy-gradient step size (training is TRPO, no inner loop)

    def problems(self) -> Iterator[Problem]:
        yield from super().problems()
        yield from positive(self, "inner_lr")


# ----------------------------------------------------------------------------- registries
RL_TASKS: tuple[type[RLTaskConfig], ...] = (
    Navigation2DTaskConfig,
    HalfCheetahVelTaskConfig,
    HalfCheetahDirTaskConfig,
    AntVelTaskConfig,
    AntDirTaskConfig,
)
for _task in RL_TASKS:
    TASK_CONFIGS.add(_task.family, _task)
MODEL_CONFIGS.add(GaussianMLPConfig.name, GaussianMLPConfig)
for _algorithm in (MAMLTRPOAlgorithmConfig, PretrainedRLConfig):
    ALGORITHM_CONFIGS.add(_algorithm.name, _algorithm)

# Settings of supervised runs that RL runs do not read: changing them would do nothing.
_UNUSED = {
    "train": (
        "outer_lr",
        "optimizer",
        "outer_lr_schedule",
        "min_outer_lr",
        "schedule_every",
        "grad_clip",
        "dtype",
        "precision",
        "reduce",
    ),
    "eval": ("tasks", "shots", "queries", "transductive", "chunk_size", "score_every"),
}
_INSTEAD = {
    "outer_lr": "TRPO's step is set by algorithm.max_kl",
    "optimizer": "the outer update is TRPO",
    "outer_lr_schedule": "TRPO's step is set by algorithm.max_kl",
    "min_outer_lr": "TRPO's step is set by algorithm.max_kl",
    "schedule_every": "MAML-TRPO has no schedules",
    "grad_clip": "TRPO's step is set by algorithm.max_kl",
    "dtype": "policies run in float32",
    "precision": "policies run in float32",
    "reduce": "MAML-TRPO runs its tasks in one process",
    "tasks": "the number of test tasks is task.test_tasks",
    "shots": "episodes per test task are task.test_trajectories",
    "queries": "episodes per test task are task.test_trajectories",
    "transductive": "policies have no batch norm",
    "chunk_size": "all test tasks are sampled at once",
    "score_every": "the return is measured after every adaptation step",
}


def rl_problems(cfg: ExperimentConfig) -> list[Problem]:
    """Problems across sections of an RL config (none for supervised configs).

    Settings of ``[train]`` / ``[eval]`` that only supervised runs read must keep their
    defaults, so that a config never looks like it sets something that has no effect.
    """
    if cfg.task.kind != RL_KIND:
        return []
    defaults = {"train": TrainConfig(iterations=1, meta_batch_size=1), "eval": EvalConfig()}
    problems: list[Problem] = []
    for section, names in _UNUSED.items():
        for name in names:
            value = getattr(getattr(cfg, section), name)
            if value != getattr(defaults[section], name):
                problems.append(
                    (
                        f"{section}.{name}",
                        f"has no effect on reinforcement-learning runs ({_INSTEAD[name]}); "
                        f"remove it (got {value!r})",
                    )
                )
    if cfg.train.device not in ("cpu", "auto"):
        problems.append(
            ("train.device", f'RL runs sample on the CPU: use "cpu", got {cfg.train.device!r}')
        )
    return problems


__all__ = [
    "RL_KIND",
    "RL_TASKS",
    "AntDirTaskConfig",
    "AntVelTaskConfig",
    "GaussianMLPConfig",
    "HalfCheetahDirTaskConfig",
    "HalfCheetahVelTaskConfig",
    "LocomotionTaskConfig",
    "MAMLTRPOAlgorithmConfig",
    "Navigation2DTaskConfig",
    "PretrainedRLConfig",
    "RLTaskConfig",
    "TRPOConfig",
    "rl_problems",
]
