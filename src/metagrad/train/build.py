"""From a config to the objects of an experiment: tasks, model, loss, meta-learner.

This is the one place that reads the config sections and calls the constructors of the
library; the trainer and the evaluator only see the :class:`Experiment` it returns. Each task
family, model and algorithm has a builder registered under its config tag
(:data:`TASK_BUILDERS`, :data:`MODEL_BUILDERS`, :data:`LEARNER_BUILDERS`): a new one is an
entry, never a branch.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from metagrad.algorithms import MAML, MetaLearner, Reptile
from metagrad.algorithms.baselines import Pretrained
from metagrad.config import (
    IMAGE_FAMILIES,
    Conv4Config,
    EvalSettings,
    ExperimentConfig,
    MLPConfig,
    OmniglotTaskConfig,
    PretrainedConfig,
    ResNet12Config,
    SinusoidTaskConfig,
    resolve_eval,
)
from metagrad.errors import UsageError
from metagrad.evaluate.mean import MeanPredictor
from metagrad.models import MODELS
from metagrad.registry import Registry
from metagrad.runtime import keep_freed_memory
from metagrad.tasks.preprocess import Preprocessing
from metagrad.tasks.preprocess import omniglot as omniglot_preprocessing
from metagrad.tasks.sinusoid import SinusoidTasks, TaskStream, fixed_tasks
from metagrad.train.distributed import ONE, Ranks
from metagrad.train.image_tasks import image_preprocessing, image_tasks
from metagrad.train.rng import eval_seed
from metagrad.types import Loss, TaskBatch


class TrainStream(Protocol):
    def sample(self, tasks: int) -> TaskBatch: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


# (split, first index, count) -> a chunk of fixed evaluation tasks
FixedTasks = Callable[[str, int, int], TaskBatch]


@dataclass
class Experiment:
    """Everything a run needs, built from one config.

    ``device`` is where the model and every task batch live (``train.device`` resolved);
    ``ranks`` is this process's place among the run's processes (one process: ``ONE``).
    """

    cfg: ExperimentConfig
    model: nn.Module
    learner: MetaLearner | MeanPredictor
    classification: bool
    train_tasks: TrainStream
    fixed: FixedTasks
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    ranks: Ranks = ONE

    def eval_batches(self, split: str, count: int, chunk: int) -> Iterator[TaskBatch]:
        """``count`` fixed tasks of ``split`` ("val" or "test"), ``chunk`` at a time.

        The meta-test shows a progress bar on standard error when that is a terminal: a test
        of 600 tasks used to print nothing for minutes until its final table.
        """
        device = self.device
        bar = _progress(count, "meta-test") if split == "test" else None
        try:
            for start in range(0, count, chunk):
                size = min(chunk, count - start)
                yield self.fixed(split, start, size).to(device)
                if bar is not None:
                    bar.update(size)  # counted when the consumer asks for the next chunk
        finally:
            if bar is not None:
                bar.close()


def _progress(total: int, desc: str):
    """A tqdm bar of ``total`` tasks on standard error, or None when that is no terminal
    (logs, tests and pipes stay free of carriage-return clutter)."""
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="task", file=sys.stderr, leave=False)


def build_experiment(cfg: ExperimentConfig, ranks: Ranks = ONE) -> Experiment:
    """Build the experiment of ``cfg`` (the model is freshly initialised from ``cfg.seed``, on
    the CPU, then moved: the same weights on every device and in every process)."""
    device = resolve_device(cfg.train.device, ranks)
    if device.type == "cpu":
        keep_freed_memory()  # before the first large tensor; it helps the CPU's hot path only
    elif device.type == "cuda":
        torch.cuda.set_device(device)  # where NCCL's collectives run
    torch.manual_seed(cfg.seed)
    train_tasks, fixed, shape = TASK_BUILDERS[cfg.task.family](cfg, resolve_eval(cfg))
    model = model_for(cfg, shape).to(device=device, dtype=getattr(torch, cfg.train.dtype))
    classification = cfg.task.kind == "classification"
    loss = F.cross_entropy if classification else F.mse_loss
    family = getattr(train_tasks, "family", None)  # the generative family, if there is one
    learner = LEARNER_BUILDERS[cfg.algorithm.name](cfg, model, loss, family)
    return Experiment(cfg, model, learner, classification, train_tasks, fixed, device, ranks)


def resolve_device(device: str, ranks: Ranks = ONE) -> torch.device:
    """``train.device`` as a torch device: ``"auto"`` is CUDA, else MPS, else the CPU; under
    several processes, ``"cuda"`` (and ``"auto"`` on CUDA) is the GPU of the local rank."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu" and torch.backends.mps.is_available():
            device = "mps"
    if device == "cuda" and ranks.many:
        device = f"cuda:{ranks.local_rank}"
    return torch.device(device)


def _download_omniglot(root: Path) -> list[Path]:
    from metagrad.data import download_omniglot

    return download_omniglot(root)


# `metagrad data download NAME --root DIR`: the official files of a data set, checksummed.
DOWNLOADS: Registry[Callable[[Path], list[Path]]] = Registry("data set")
DOWNLOADS.add("omniglot", _download_omniglot)


Preparer = Callable[[Path, Path | None, Callable[[str], None] | None], list[str]]


def _preparer(name: str) -> Preparer:
    def prepare(root: Path, cache: Path | None, progress=None) -> list[str]:
        from metagrad.data import prepare as prepare_data

        return prepare_data(name, root, cache, progress)

    return prepare


# `metagrad data prepare NAME --root DIR [--cache DIR]`: check a natural-image data set's layout
# and decode it once into a memory-mapped cache (metagrad.data.prepare). The names are
# metagrad.data.NATURAL_SETS's, listed here so the CLI's choices need no import of the data.
PREPARE: Registry[Preparer] = Registry("data set")
for _name in ("cub", "mini-imagenet", "tiered-imagenet", "cifar-fs", "fc100"):
    PREPARE.add(_name, _preparer(_name))


def model_for(cfg: ExperimentConfig, shape: tuple[int, ...]) -> nn.Module:
    """The (freshly initialised) model of ``cfg`` for inputs of ``shape`` (one example)."""
    outputs = getattr(cfg.task, "ways", 1)  # classes, or one regression output
    return MODEL_BUILDERS[cfg.model.name](cfg.model, shape, outputs)


@dataclass(frozen=True)
class Inputs:
    """What one example of a task family is, known from the config alone (no data read).

    Attributes:
        shape: one input's shape (``(1,)`` for the sinusoid, ``(C, H, W)`` for images).
        preprocessing: for image families, how an image file becomes such an input (the
            record a run keeps as ``preprocessing.json``); None for other inputs.
    """

    shape: tuple[int, ...]
    preprocessing: Preprocessing | None = None


# Each supervised task family's inputs: a run is reloaded (metagrad.load) from its config and
# this, without its data; a new family is an entry here as well as in TASK_BUILDERS.
INPUTS: Registry[Callable[[ExperimentConfig], Inputs]] = Registry("task family")
INPUTS.add("sinusoid", lambda cfg: Inputs((1,)))


@INPUTS.register("omniglot")
def _omniglot_inputs(cfg: ExperimentConfig) -> Inputs:
    task = cfg.task
    assert isinstance(task, OmniglotTaskConfig)
    preprocessing = omniglot_preprocessing(task.image_size)  # as metagrad.data.load_omniglot
    return Inputs(preprocessing.shape, preprocessing)


Tasks = tuple[TrainStream, FixedTasks, tuple[int, ...]]  # stream, fixed tasks, input shape
TASK_BUILDERS: Registry[Callable[[ExperimentConfig, EvalSettings], Tasks]] = Registry("task family")
MODEL_BUILDERS: Registry[Callable[..., nn.Module]] = Registry("model")
LEARNER_BUILDERS: Registry[Callable[..., MetaLearner | MeanPredictor]] = Registry("algorithm")


@TASK_BUILDERS.register("sinusoid")
def _sinusoid(cfg: ExperimentConfig, ev: EvalSettings) -> Tasks:
    task = cfg.task
    assert isinstance(task, SinusoidTaskConfig)
    family = SinusoidTasks(task.amplitude, task.phase, task.x_range)
    stream = TaskStream(family, task.shots, task.queries, cfg.seed)

    def fixed(split: str, start: int, count: int) -> TaskBatch:
        seed = eval_seed(cfg, split)
        # Validation episodes are shaped as the test's, so that validation predicts the test
        # (Reptile trains on 10 shots per class and is tested on 1 or 5).
        return fixed_tasks(family, seed, start, count, ev.shots, ev.queries)[0]

    return stream, fixed, (1,)


@TASK_BUILDERS.register("omniglot")
def _omniglot(cfg: ExperimentConfig, ev: EvalSettings) -> Tasks:
    from metagrad.data import load_omniglot, omniglot_split
    from metagrad.tasks.episodes import EpisodeSampler

    task = cfg.task
    assert isinstance(task, OmniglotTaskConfig)

    data = load_omniglot(task.root, image_size=task.image_size, download=task.download)
    test_rot = (0, 90, 180, 270) if task.test_rotations else (0,)
    rotations = {
        "train": (0, 90, 180, 270) if task.rotations else (0,),
        "val": test_rot,
        "test": test_rot,
    }
    sets = omniglot_split(data, task.split, rotations=rotations)
    stream = EpisodeSampler(
        sets["train"].images,
        task.ways,
        task.shots,
        task.queries,
        rotations=sets["train"].rotations,
        seed=cfg.seed,
    )
    # Validation episodes are shaped as the test's (its shots and queries): validation
    # predicts the test.
    samplers = {
        split: EpisodeSampler(
            sets[split].images,
            task.ways,
            ev.shots,
            ev.queries,
            rotations=sets[split].rotations,
            seed=eval_seed(cfg, split),
        )
        for split in ("val", "test")
    }

    def fixed(split: str, start: int, count: int) -> TaskBatch:
        return samplers[split].episodes(range(start, start + count))

    return stream, fixed, (1, task.image_size, task.image_size)


def _image_inputs(cfg: ExperimentConfig) -> Inputs:
    preprocessing = image_preprocessing(cfg.task)
    return Inputs(preprocessing.shape, preprocessing)


# The natural-image families (cub, mini-imagenet, tiered-imagenet, cifar-fs, fc100) and a
# user's folder: one builder.
for _family in IMAGE_FAMILIES:
    TASK_BUILDERS.add(_family.family, image_tasks)
    INPUTS.add(_family.family, _image_inputs)


@MODEL_BUILDERS.register("mlp")
def _mlp(m: MLPConfig, shape: tuple[int, ...], outputs: int) -> nn.Module:
    features = int(torch.tensor(shape).prod())
    return MODELS["mlp"](features, outputs, m.hidden, m.activation, m.norm, input_dims=len(shape))


@MODEL_BUILDERS.register("conv4")
def _conv4(m: Conv4Config, shape: tuple[int, ...], outputs: int) -> nn.Module:
    return MODELS["conv4"](outputs, m.in_channels, m.filters, shape[-1], m.pool, m.norm, m.head)


@MODEL_BUILDERS.register("resnet12")
def _resnet12(m: ResNet12Config, shape: tuple[int, ...], outputs: int) -> nn.Module:
    return MODELS["resnet12"](outputs, m.in_channels, m.widths, m.norm, m.drop_rate)


def constructor_kwargs(constructor: Callable, section: object) -> dict[str, Any]:
    """The fields of a config ``section`` that ``constructor`` takes as keyword arguments: the
    config and the library name each setting alike, so it passes through untranslated."""
    accepted = inspect.signature(constructor).parameters
    return {f.name: getattr(section, f.name) for f in fields(section) if f.name in accepted}


@LEARNER_BUILDERS.register("maml")
@LEARNER_BUILDERS.register("fomaml")  # FOMAMLConfig: first_order = true
@LEARNER_BUILDERS.register("anil")  # the MAML family (config/family_schema.py): MAML settings
@LEARNER_BUILDERS.register("boil")
@LEARNER_BUILDERS.register("metasgd")
@LEARNER_BUILDERS.register("mamlpp")
def _maml(cfg: ExperimentConfig, model: nn.Module, loss: Loss, family=None) -> MetaLearner:
    kwargs = constructor_kwargs(MAML, cfg.algorithm)
    return MAML(model, loss, **kwargs, schedule_every=cfg.train.schedule_every)


@LEARNER_BUILDERS.register("reptile")
def _reptile(cfg: ExperimentConfig, model: nn.Module, loss: Loss, family=None) -> MetaLearner:
    generator = torch.Generator().manual_seed(cfg.seed)  # the inner mini-batches' order
    return Reptile(model, loss, **constructor_kwargs(Reptile, cfg.algorithm), generator=generator)


@LEARNER_BUILDERS.register("pretrained")
def _pretrained(cfg: ExperimentConfig, model: nn.Module, loss: Loss, family=None) -> MetaLearner:
    a = cfg.algorithm
    assert isinstance(a, PretrainedConfig)
    return Pretrained(model, loss, inner_lr=a.inner_lr)


@LEARNER_BUILDERS.register("mean")
def _mean(cfg: ExperimentConfig, model: nn.Module, loss: Loss, family=None) -> MeanPredictor:
    mean_fn = getattr(family, "mean_curve", None)
    if mean_fn is None:
        raise UsageError(
            f"the mean baseline needs a task family with a mean function; "
            f"{cfg.task.family!r} has none"
        )
    return MeanPredictor(loss, mean_fn)
