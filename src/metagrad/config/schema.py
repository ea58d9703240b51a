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
``import metagrad.config`` does).
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
    positive,
)
from metagrad.registry import Registry

config_class = dataclass(frozen=True, kw_only=True)  # the decorator of every config class

Norm = Literal["transductive", "running", "none"]
InnerPath = Literal["auto", "loop", "vectorized"]


@config_class
class Section:
    """Base of all config classes: ``problems()`` lists semantic errors (none by default)."""

    def problems(self) -> Iterator[Problem]:
        """Yield ``(field, message)`` for each value that type-checks but makes no sense."""
        yield from ()


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
    chunk_size: int | None = None  # as MAMLConfig.chunk_size
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


# ---------------------------------------------------------------------------- train, eval
DEVICES = ("cpu", "cuda", "mps", "auto")  # and "cuda:N"


def device_missing(device: str) -> str | None:
    """Why the installed torch cannot run on ``device`` (None if it can; ``"auto"`` always can).

    Checked when the config is read: a CUDA device on a CPU-only torch used to pass validation
    and kill the run at its first tensor with an AssertionError.
    """
    import torch

    fix = 'use train.device = "cpu" or "auto" (--set train.device=cpu)'
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            return (
                f"{device!r} is not available: this torch ({torch.__version__}) has no CUDA; {fix}"
            )
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            return (
                f"{device!r} is not available: this machine has {torch.cuda.device_count()} CUDA "
                f"device(s), cuda:0..cuda:{torch.cuda.device_count() - 1}"
            )
    if device == "mps" and not torch.backends.mps.is_available():
        return f"'mps' is not available: this torch ({torch.__version__}) has no MPS; {fix}"
    return None


def precision_missing(precision: str, device: str) -> str | None:
    """Why ``precision`` (``"bf16"``, ``"fp16"``) cannot autocast on ``device`` (None if it can).

    CPU autocast runs bf16 and fp16; CUDA runs fp16 everywhere and bf16 from Ampere on (or
    emulated, which torch reports as supported); MPS runs both from torch 2.5 on.
    """
    import torch

    if precision == "fp32" or device == "auto":  # "auto" resolves to a device that autocasts
        return None
    kind = device.partition(":")[0]
    if not torch.amp.is_autocast_available(kind):
        return f'torch {torch.__version__} has no autocast on {kind!r}; use precision = "fp32"'
    if kind == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        return 'this GPU has no bfloat16: use precision = "fp16" or "fp32"'
    return None


@config_class
class TrainConfig(Section):
    """The outer (meta-)training loop."""

    iterations: int  # outer steps (meta-batches) to train for
    meta_batch_size: int  # tasks per outer step
    outer_lr: float = 1e-3  # outer optimizer step size
    optimizer: Literal["adam", "sgd"] = "adam"  # outer optimizer
    # "linear": anneal to 0 over train.iterations (Reptile); "cosine": cosine-anneal to
    # min_outer_lr over train.iterations (MAML++'s CA)
    outer_lr_schedule: Literal["constant", "linear", "cosine"] = "constant"
    min_outer_lr: float = 0.0  # where "cosine" ends (MAML++: 1e-5)
    grad_clip: float | None = None  # clip the meta-gradient norm to this (None = no clipping)
    val_every: int = 1000  # validate every N iterations (0 = never)
    val_tasks: int = 100  # tasks per validation
    # What picks the "best" checkpoint from a validation run with the test's protocol: "last",
    # the query score after the test's last inner step (what classification tables report);
    # "mean", its mean over the test's adapted steps 1..K (the sinusoid table reports steps
    # 1 / 5 / 10, the RL tables 1-3); "auto": "last" for classification, "mean" otherwise.
    val_metric: Literal["auto", "last", "mean"] = "auto"
    log_every: int = 100  # append a line to metrics.jsonl every N iterations
    checkpoint_every: int = 1000  # save the "last" checkpoint every N iterations (0 = at end)
    # Stop once the training steps (validation and saves not counted) have taken this many
    # seconds on budget_clock, then test as at train.iterations (None = no budget). Resumes
    # continue the count; a resume may raise it.
    time_budget_s: float | None = None
    # What measures that time: "wall" (elapsed) or "cpu" (this process's CPU time, all its
    # threads: immune to pauses and to other jobs on the machine).
    budget_clock: Literal["wall", "cpu"] = "wall"
    # torch device: "cpu", "cuda", "cuda:N", "mps", or "auto" (CUDA, else MPS, else the CPU;
    # RL runs sample on the CPU). Under torchrun, "cuda" and "auto" give each process the GPU
    # of its local rank.
    device: str = "cpu"
    threads: int | None = None  # torch CPU threads (None = torch's default)
    # The dtype of the model's parameters, and so of the whole computation (float64: for
    # reference runs).
    dtype: Literal["float32", "float64"] = "float32"
    # Mixed precision: "bf16" / "fp16" run the meta-training steps under torch.autocast (the
    # parameters and the optimiser stay float32; validation and test run in full precision).
    # Not exact, and fp16 has no loss scaling here: prefer bf16 where the device has it.
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    # Several processes (torchrun): "all_reduce" sums the ranks' shares of the meta-gradient
    # in one all_reduce (equal to one process's up to rounding); "ordered" gathers each task's
    # gradient and sums them in the meta-batch's order (bit-identical for any number of
    # processes, each task's gradient computed alone; more communication).
    reduce: Literal["all_reduce", "ordered"] = "all_reduce"
    # Several processes: a process that waits this long on another (dead or hung) stops the run.
    dist_timeout_s: float = 300.0

    def problems(self) -> Iterator[Problem]:
        yield from at_least(self, 1, "iterations", "meta_batch_size", "val_tasks", "log_every")
        yield from at_least(self, 1, "threads")
        yield from at_least(self, 0, "val_every", "checkpoint_every")
        yield from positive(self, "outer_lr", "grad_clip")
        if not 0.0 <= self.min_outer_lr < self.outer_lr:
            shown = f"[0, outer_lr = {self.outer_lr})"
            yield "min_outer_lr", f"must be in {shown}, got {self.min_outer_lr!r}"
        elif self.min_outer_lr and self.outer_lr_schedule != "cosine":
            yield "min_outer_lr", 'is where outer_lr_schedule "cosine" ends; set that, or remove it'
        yield from positive(self, "dist_timeout_s", "time_budget_s")
        device = self.device
        if not (device in DEVICES or device.removeprefix("cuda:").isdigit()):
            yield "device", f'must be "cpu", "cuda", "cuda:N", "mps" or "auto", got {device!r}'
        elif (missing := device_missing(device)) is not None:
            yield "device", missing
        elif (missing := precision_missing(self.precision, device)) is not None:
            yield "precision", missing
        if self.precision != "fp32" and self.dtype == "float64":
            message = f'autocasts float32 to {self.precision}; with dtype = "float64" use "fp32"'
            yield "precision", message


@config_class
class EvalConfig(Section):
    """Meta-testing: adapt to held-out tasks and report query performance."""

    tasks: int = 600  # test tasks to average over (600 as in MAML)
    inner_steps: int | None = None  # test-time adaptation steps (None = as in training)
    inner_lr: float | tuple[float, ...] | None = None  # test-time step size(s) (None = training's)
    shots: int | None = None  # support examples (per class) at test time (None = as training)
    queries: int | None = None  # query examples (per class) at test time (None = as training)
    seed: int = 1234  # seeds the test task stream, independent of the training seed
    transductive: bool = True  # normalise with the query batch's statistics (as MAML does)
    chunk_size: int | None = None  # test tasks adapted at once (None = algorithm's)
    inner_batch_size: int | None = None  # support examples per test inner step (None = training's)
    # Score the query set after inner steps 0, n, 2n, ... and the last. Non-transductive scoring
    # costs queries x (support + 1) forward passes per scored step: the Reptile 20-way 1-shot
    # test (50 steps) took 4.5 min scoring 2 steps and had not finished in 36 scoring all 51.
    score_every: int = 1

    def problems(self) -> Iterator[Problem]:
        yield from at_least(
            self, 1, "tasks", "shots", "queries", "chunk_size", "inner_batch_size", "score_every"
        )
        yield from at_least(self, 0, "inner_steps", "seed")
        yield from learning_rate(self, "inner_lr")


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
