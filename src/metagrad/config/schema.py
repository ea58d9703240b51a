"""The experiment config schema: the single source of truth for what a config file may say.

A config file has top-level keys ``name`` and ``seed`` and the sections ``[task]``, ``[model]``,
``[algorithm]``, ``[train]`` and ``[eval]``. The first three are *tagged unions*: their tag key
(``task.family``, ``model.name``, ``algorithm.name``) picks a variant dataclass, and the variant
decides which other keys the section may hold.

Every config class is a frozen, keyword-only dataclass. A field without a default is required.
Fields typed ``X | None`` must default to ``None``, because TOML has no null: ``None`` is written
by leaving the key out (and on the command line with ``--set key=none``).

To add a variant (say task family ``"miniimagenet"`` or model ``"resnet12"``): write a dataclass
subclassing :class:`TaskConfig` / :class:`ModelConfig` / :class:`AlgorithmConfig`, set its tag
class variable, optionally override ``problems()`` for semantic checks, and add it to
:data:`TASK_CONFIGS` / :data:`MODEL_CONFIGS` / :data:`ALGORITHM_CONFIGS` (and its builder to
:mod:`metagrad.train.build`'s registries). The loader, the TOML writer, ``--set`` overrides and
the error messages pick it up from there. The meta-RL variants live in
:mod:`metagrad.config.rl_schema`, which adds them to the registries when imported (as
``import metagrad.config`` does). The plain ``[train]`` and ``[eval]`` sections are in
:mod:`metagrad.config.run_schema`; the base class of every section in
:mod:`metagrad.config.section`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from metagrad.config.rules import (
    Problem,
    at_least,
    counts,
    inner_params_problems,
    learning_rate,
    lr_per_step,
    memory_budget,
    ordered_range,
)
from metagrad.config.run_schema import EvalConfig, TrainConfig
from metagrad.config.section import Section, config_class
from metagrad.registry import Registry

Norm = Literal["transductive", "running", "none"]
InnerPath = Literal["auto", "loop", "vectorized"]


# ----------------------------------------------------------------------------------- task
@config_class
class TaskConfig(Section):
    """Base of task variants; the class variable ``family`` is the tag."""

    family: ClassVar[str]
    kind: ClassVar[str]  # "regression", "classification" or "rl": which algorithms apply
    modality: ClassVar[str]  # "vector", "image" or "state": which models consume the inputs


@config_class
class SinusoidTaskConfig(TaskConfig):
    """Few-shot regression of ``A sin(x - phase)`` (Finn et al., 2017, section 5.1)."""

    family: ClassVar[str] = "sinusoid"
    kind: ClassVar[str] = "regression"
    modality: ClassVar[str] = "vector"
    shots: int = 10  # support points per task (K in K-shot regression)
    queries: int = 10  # query points per task, used for the outer loss
    amplitude: tuple[float, float] = (0.1, 5.0)  # A ~ U[low, high]
    phase: tuple[float, float] = (0.0, math.pi)  # phase ~ U[low, high]
    x_range: tuple[float, float] = (-5.0, 5.0)  # x ~ U[low, high]

    def problems(self) -> Iterator[Problem]:
        yield from at_least(self, 1, "shots", "queries")
        yield from ordered_range(self, "amplitude", "phase")
        yield from ordered_range(self, "x_range", strict=True)


@config_class
class OmniglotTaskConfig(TaskConfig):
    """N-way K-shot classification of Omniglot characters (Lake et al., 2015)."""

    family: ClassVar[str] = "omniglot"
    kind: ClassVar[str] = "classification"
    modality: ClassVar[str] = "image"
    channels: ClassVar[int] = 1  # grey: the model's in_channels must match
    root: str = "data/omniglot"  # dataset directory
    download: bool = False  # fetch the dataset into root if it is missing
    split: Literal["maml", "official", "vinyals"] = "maml"  # which classes train/val/test use
    ways: int = 5  # classes per task (N)
    shots: int = 1  # support examples per class (K)
    queries: int = 15  # query examples per class
    image_size: int = 28  # images are resized to image_size x image_size
    rotations: bool = True  # add 90/180/270-degree rotations as new training classes
    test_rotations: bool = False  # also add them to the validation and test classes

    def problems(self) -> Iterator[Problem]:
        yield from at_least(self, 2, "ways")
        yield from at_least(self, 1, "shots", "queries", "image_size")
        if not self.root:
            yield "root", 'must be a directory path, got ""'


# ---------------------------------------------------------------------------------- model
@config_class
class ModelConfig(Section):
    """Base of model variants; the class variable ``name`` is the tag."""

    name: ClassVar[str]
    modalities: ClassVar[frozenset[str]]  # task modalities this model accepts


@config_class
class MLPConfig(ModelConfig):
    """Fully connected network (images are flattened)."""

    name: ClassVar[str] = "mlp"
    modalities: ClassVar[frozenset[str]] = frozenset({"vector", "image"})
    hidden: tuple[int, ...] = (40, 40)  # width of each hidden layer
    activation: Literal["relu", "tanh", "gelu", "silu"] = "relu"  # after each hidden layer
    norm: Norm = "none"  # batch norm after each hidden layer; see Conv4Config.norm

    def problems(self) -> Iterator[Problem]:
        if not self.hidden or min(self.hidden) < 1:
            yield "hidden", f"must be a non-empty list of widths >= 1, got {list(self.hidden)}"


@config_class
class Conv4Config(ModelConfig):
    """The 4-block CNN of Vinyals et al. (2016) used by MAML: conv3x3, norm, ReLU, downsample."""

    name: ClassVar[str] = "conv4"
    modalities: ClassVar[frozenset[str]] = frozenset({"image"})
    filters: int = 64  # channels of every conv layer
    pool: Literal["stride", "max"] = "stride"  # downsample by stride-2 conv or 2x2 max pooling
    # Features to the linear head: "mean" over space (MAML's code), "flatten" (Reptile's code);
    # None: "mean" after strided convolutions, "flatten" after max pooling.
    head: Literal["mean", "flatten"] | None = None
    # "transductive": batch norm with the current batch's statistics, even at test time (MAML);
    # "running": ordinary batch norm with running statistics; "none": no normalisation.
    norm: Norm = "transductive"
    in_channels: int = 1  # image channels (1 for Omniglot, 3 for RGB datasets)

    def problems(self) -> Iterator[Problem]:
        yield from at_least(self, 1, "filters", "in_channels")


@config_class
class ResNet12Config(ModelConfig):
    """ResNet12 as MMFewShot's: four residual stages, LeakyReLU 0.1, global average pool."""

    name: ClassVar[str] = "resnet12"
    modalities: ClassVar[frozenset[str]] = frozenset({"image"})
    widths: tuple[int, int, int, int] = (64, 160, 320, 640)  # channels of the four stages
    norm: Norm = "transductive"  # as Conv4Config.norm (MMFewShot: the current batch's)
    in_channels: int = 3  # image channels
    drop_rate: float = 0.0  # DropBlock in the last two stages (off in every MAML config)

    def problems(self) -> Iterator[Problem]:
        yield from at_least(self, 1, "in_channels")
        if min(self.widths) < 1:
            yield "widths", f"must be four channel counts >= 1, got {list(self.widths)}"
        if not 0.0 <= self.drop_rate < 1.0:
            yield "drop_rate", f"must be in [0, 1), got {self.drop_rate!r}"


# ------------------------------------------------------------------------------ algorithm
@config_class
class AlgorithmConfig(Section):
    """Base of algorithm variants; the class variable ``name`` is the tag."""

    name: ClassVar[str]
    task_kinds: ClassVar[frozenset[str]] = frozenset({"regression", "classification"})
    adapts: ClassVar[bool] = True  # has inner-loop settings that eval falls back to
    group: ClassVar[str] = "baselines"  # the heading `metagrad list` shows it under


@config_class
class MAMLConfig(AlgorithmConfig):
    """Model-Agnostic Meta-Learning (Finn et al., 2017)."""

    name: ClassVar[str] = "maml"
    group: ClassVar[str] = "MAML family"
    inner_lr: float | tuple[float, ...]  # inner SGD step size, or one per inner step
    inner_steps: int = 1  # gradient steps on the support set per task
    first_order: bool = False  # drop second-order terms (= FOMAML)
    # "loop" over tasks, "vectorized" (all tasks at once), or "auto": measured on the first
    # step (each path and chunk size), the fastest within memory_budget, kept in path.json
    path: InnerPath = "auto"
    chunk_size: int | None = None  # tasks per vectorized chunk (None = whole meta-batch)
    memory_budget: float = 0.5  # "auto"'s limit: fraction (0, 1] of available memory, or bytes
    recompute_inner: bool = False  # recompute inner steps in backward: sqrt(steps) memory
    # Which parameters the inner loop adapts (train and test): "all", "head" (ANIL), "body"
    # (BOIL), or glob patterns of parameter names, e.g. ["features.3.*", "head.*"]. The others
    # are used as they are by the inner steps and still meta-trained.
    inner_params: str | tuple[str, ...] = "all"
    # Learnable inner learning rates, starting at inner_lr and trained with the weights:
    # "per_element" (Meta-SGD: one per weight element), "per_layer_per_step" (MAML++'s LSLR:
    # one per parameter tensor and inner step).
    learn_inner_lr: Literal["none", "per_element", "per_layer_per_step"] = "none"
    # MAML++ (Antoniou et al. 2019); schedules count iterations (outer steps), 0 = off.
    multi_step_loss_iterations: int = 0  # MSL: weigh every step's query loss for N iterations
    first_order_iterations: int = 0  # DA: first-order meta-gradients for the first N iterations
    per_step_bn_weights: bool = False  # BNWB: a BatchNorm scale and shift per inner step
    per_step_bn_stats: bool = False  # BNRS: running statistics per step (norm "running", loop)

    def problems(self) -> Iterator[Problem]:
        yield from learning_rate(self, "inner_lr")
        yield from counts(self, 1, "inner_steps", "chunk_size")
        yield from memory_budget(self)
        yield from counts(self, 0, "multi_step_loss_iterations", "first_order_iterations")
        yield from lr_per_step(self, "inner_lr", self.inner_steps)
        yield from inner_params_problems(self)


@config_class
class FOMAMLConfig(MAMLConfig):
    """First-order MAML: MAML without the second-order terms (a subclass of MAMLConfig)."""

    name: ClassVar[str] = "fomaml"
    first_order: bool = True  # fixed: FOMAML is first-order by definition

    def problems(self) -> Iterator[Problem]:
        yield from super().problems()
        if not self.first_order:
            yield "first_order", 'is always true for fomaml; for second-order use name = "maml"'


@config_class
class ReptileConfig(AlgorithmConfig):
    """Reptile (Nichol et al., 2018): move the weights towards the task-adapted weights."""

    name: ClassVar[str] = "reptile"
    group: ClassVar[str] = "Reptile"
    inner_lr: float  # inner optimizer step size
    inner_steps: int = 5  # inner optimizer steps per task
    inner_optimizer: Literal["sgd", "adam"] = "sgd"  # optimizer of the inner loop
    inner_batch_size: int | None = None  # support examples per inner step (None = all)
    adam_betas: tuple[float, float] = (0.0, 0.999)  # inner Adam betas (beta1 = 0 as in the paper)
    # "reset": every task starts the inner optimizer afresh; "carry": its state (Adam's moments)
    # goes on from task to task and into meta-testing, as in the Reptile paper's code.
    inner_state: Literal["reset", "carry"] = "reset"
    path: InnerPath = "auto"  # as MAMLConfig.path
    # Tasks adapted at once in meta-testing (eval.chunk_size overrides it); training adapts a
    # meta-batch in one pass, as it keeps no graph to bound.
    chunk_size: int | None = None
    memory_budget: float = 0.5  # as MAMLConfig.memory_budget

    def problems(self) -> Iterator[Problem]:
        yield from learning_rate(self, "inner_lr")
        yield from counts(self, 1, "inner_steps", "inner_batch_size", "chunk_size")
        yield from memory_budget(self)
        if self.inner_state == "carry" and self.inner_optimizer == "sgd":
            yield "inner_state", "'carry' keeps an optimizer state, and SGD has none: use adam"
        if not all(0.0 <= b < 1.0 for b in self.adam_betas):
            yield "adam_betas", f"must both be in [0, 1), got {list(self.adam_betas)}"


@config_class
class PretrainedConfig(AlgorithmConfig):
    """Baseline: supervised training on all tasks at once, fine-tuned on each test task."""

    name: ClassVar[str] = "pretrained"
    inner_lr: float  # test-time fine-tuning step size (training uses train.outer_lr)

    def problems(self) -> Iterator[Problem]:
        yield from learning_rate(self, "inner_lr")


@config_class
class MeanConfig(AlgorithmConfig):
    """Baseline for regression: predict the mean of the support targets. No parameters."""

    name: ClassVar[str] = "mean"
    task_kinds: ClassVar[frozenset[str]] = frozenset({"regression"})
    adapts: ClassVar[bool] = False


# ----------------------------------------------------------------------------- registries
TASK_CONFIGS: Registry[type[TaskConfig]] = Registry("task family")
MODEL_CONFIGS: Registry[type[ModelConfig]] = Registry("model")
ALGORITHM_CONFIGS: Registry[type[AlgorithmConfig]] = Registry("algorithm")
for _cls in (SinusoidTaskConfig, OmniglotTaskConfig):
    TASK_CONFIGS.add(_cls.family, _cls)
for _cls in (MLPConfig, Conv4Config, ResNet12Config):
    MODEL_CONFIGS.add(_cls.name, _cls)
for _cls in (MAMLConfig, FOMAMLConfig, ReptileConfig, PretrainedConfig, MeanConfig):
    ALGORITHM_CONFIGS.add(_cls.name, _cls)


@dataclass(frozen=True)
class Variants:
    """A tagged-union section: the value of ``tag`` picks a class from ``registry``."""

    tag: str  # the key that names the variant, e.g. "family"
    registry: Mapping[str, type[Section]]  # tag value -> dataclass


SECTIONS: dict[str, Variants | type[Section]] = {
    "task": Variants("family", TASK_CONFIGS),
    "model": Variants("name", MODEL_CONFIGS),
    "algorithm": Variants("name", ALGORITHM_CONFIGS),
    "train": TrainConfig,
    "eval": EvalConfig,
}


@config_class
class ExperimentConfig:
    """One experiment: everything needed to train and test it, read from one TOML file."""

    name: str  # experiment name, used for the run directory
    seed: int = 0  # seeds Python, NumPy and torch RNGs and the training task stream
    task: TaskConfig
    model: ModelConfig
    algorithm: AlgorithmConfig
    train: TrainConfig
    eval: EvalConfig = field(default_factory=EvalConfig)
