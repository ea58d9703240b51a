"""A trained run as a model: ``metagrad.load``, ``Learner.adapt`` and ``metagrad.meta_test``.

``learner = metagrad.load(MODEL)`` rebuilds a run's model from its config alone (no data is
read), loads its best checkpoint (else ``last``) and its preprocessing. ``MODEL`` is looked up
as a path first: a run directory, a checkpoint file (``RUN/best.safetensors``) or an adapted
model (:meth:`~metagrad.train.adapted.Adapted.save`'s file, returned as an
:class:`~metagrad.train.adapted.Adapted`); else as the name of a pretrained initialisation
shipped in the package (:data:`~metagrad.train.pretrained.PRETRAINED`).

``learner.adapt(images, labels)`` adapts to a new task of any number of classes with the run's
test-time inner loop (steps, step sizes, optimiser, mini-batches) from a head initialised per
task (:mod:`metagrad.algorithms.head_init`); ``metagrad.meta_test(learner, tasks)`` scores many
tasks as ``metagrad test`` does, in a user's own loop.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import safetensors
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metagrad.algorithms import InnerLoop, MetaLearner
from metagrad.algorithms.head_init import HeadInit, default_head, with_head
from metagrad.algorithms.normalization import BatchNormMode, check_mode
from metagrad.algorithms.paths import TaskExecutor
from metagrad.algorithms.reptile import minibatch_schedule
from metagrad.config import ExperimentConfig, load_config, resolve_eval
from metagrad.errors import UsageError
from metagrad.functional.inner import run_inner
from metagrad.functional.params import detached
from metagrad.models import head_of
from metagrad.tasks.preprocess import Preprocessing
from metagrad.train.adapted import Adapted, Examples, as_inputs, is_adapted_file, load_adapted
from metagrad.train.build import INPUTS, LEARNER_BUILDERS, model_for
from metagrad.train.checkpoint import intact_checkpoints
from metagrad.train.preprocessing import run_preprocessing
from metagrad.train.pretrained import PRETRAINED, unknown_model
from metagrad.train.results import load_named_checkpoint


@dataclass(eq=False)
class Learner:
    """A trained run, ready to adapt.

    Attributes:
        model: the ``nn.Module`` with the run's weights (in ``eval()`` mode).
        algorithm: its meta-learner (``MAML``, ``Reptile``, ...), with the run's settings.
        preprocessing: how images become inputs (None: the inputs are not images).
        config: the run's config.
        source: what was loaded, e.g. ``"runs/o5 (best at step 900)"``.
    """

    model: nn.Module
    algorithm: MetaLearner
    preprocessing: Preprocessing | None
    config: ExperimentConfig
    source: str

    @property
    def classification(self) -> bool:
        return self.config.task.kind == "classification"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return INPUTS[self.config.task.family](self.config).shape

    def test_inner(self, inner_steps: int | None = None) -> tuple[InnerLoop, int | None]:
        """The run's test-time inner loop (``inner_steps`` steps; None: the run's test steps)
        and support examples per step (None: all), as ``metagrad test`` adapts."""
        ev = resolve_eval(self.config)
        steps = ev.inner_steps if inner_steps is None else inner_steps
        # eval.inner_lr if set, else the learner's own rates (Meta-SGD's, MAML++'s learned
        # ones included), as metagrad test adapts.
        inner = self.algorithm.inner_loop(steps, self.config.eval.inner_lr)
        batch_size = self.config.eval.inner_batch_size or getattr(
            self.algorithm, "inner_batch_size", None
        )
        return replace(inner, first_order=True), batch_size

    def adapt(
        self,
        examples: Examples,
        labels: Sequence | Tensor,
        inner_steps: int | None = None,
        *,
        head: HeadInit | None = None,
        batch_norm: BatchNormMode = "support",
    ) -> Adapted:
        """Adapt to one task: its support examples and their labels.

        Args:
            examples: the support set: images, image files, or a tensor of inputs ``[N, ...]``.
            labels: one per example: class names or numbers (classification; the head's units
                are the distinct labels in sorted order), or target tensors (regression).
            inner_steps: gradient steps (None: the run's test steps, at its test step size).
            head: how the head starts (:data:`metagrad.algorithms.head_init.HEADS`); None: the
                meta-learned head when the classes are as many as its units, else the
                prototypes (:func:`~metagrad.algorithms.head_init.default_head`, measured);
                ``"trained"`` for regression.
            batch_norm: the BatchNorm mode the adapted model predicts with.

        Raises:
            UsageError: fewer than two classes, labels that do not pair with the examples,
                tensors of mixed or wrong shapes, an unreadable image (named), an unknown head
                or mode.
        """
        check_mode(batch_norm)
        x = as_inputs(examples, self.preprocessing, self.input_shape)
        executor = TaskExecutor.create(self.model, "loop").with_copied_buffers()
        params = detached(self.algorithm.params)
        x = x.to(next(iter(params.values())).dtype)
        if len(labels) != x.shape[0]:
            raise UsageError(
                f"{x.shape[0]} examples but {len(labels)} labels: give one label per example"
            )
        if self.classification:
            classes, y = _class_indices(labels)
            name = head_of(self.model)
            head = head or default_head(params[f"{name}.weight"].shape[0], len(classes))
            params = with_head(head, executor, params, name, x, y, len(classes))
        elif head in (None, "trained"):
            classes, y, head = None, torch.as_tensor(labels).to(x.dtype), "trained"
        else:
            raise UsageError(f"head {head!r} is for classifiers; this model regresses")
        inner, batch_size = self.test_inner(inner_steps)
        inner = replace(inner, state=_fit_state(inner.state, params))
        pick = minibatch_schedule(x.shape[0], batch_size, _generator(self.config))
        batches = None if pick is None else (lambda step: (x[pick(step)], y[pick(step)]))
        objective = executor.task_objective(self.algorithm.loss)
        phi, _ = run_inner(objective, params, (x, y), inner, batches)
        about = {"head": head, "inner_steps": inner.inner_steps, "source": self.source}
        return Adapted(
            executor, detached(phi), x, classes, self.preprocessing, self.config, batch_norm, about
        )


def _class_indices(labels: Sequence | Tensor) -> tuple[tuple, Tensor]:
    """The classes (sorted distinct labels: the head's units) and each label's index."""
    values = labels.tolist() if isinstance(labels, Tensor) else list(labels)
    try:
        classes = tuple(sorted(set(values)))
    except TypeError:
        raise UsageError("labels must be all names (str) or all numbers, not both") from None
    if len(classes) < 2:
        raise UsageError(
            f"the support set has one class only ({classes[0] if classes else 'none'}): a "
            "classifier needs two or more classes"
        )
    index = {c: i for i, c in enumerate(classes)}
    return classes, torch.tensor([index[v] for v in values], dtype=torch.int64)


def _fit_state(state: dict | None, params: dict) -> dict | None:
    """A carried inner optimiser state (Reptile's Adam moments) for a head of another shape:
    the head's moments start from zero, the body's carry on."""
    if not state:
        return state

    def fitting(k: str, moment: Tensor) -> Tensor:
        stale = k in params and moment.shape != params[k].shape
        return torch.zeros_like(params[k]) if stale else moment

    fitted = dict(state)
    for group in ("m", "v"):
        if group in state:
            fitted[group] = {k: fitting(k, m) for k, m in state[group].items()}
    return fitted


def _generator(cfg: ExperimentConfig) -> torch.Generator:
    return torch.Generator().manual_seed(cfg.eval.seed)  # mini-batch order, as metagrad test


# --------------------------------------------------------------------------------- load
def load(model: str | os.PathLike, *, checkpoint: str | None = None) -> Learner | Adapted:
    """Load ``model``: a run directory, a checkpoint file, an adapted model (returned as an
    :class:`~metagrad.train.adapted.Adapted`) or a pretrained initialisation's name.

    Args:
        model: what to load (paths first, then names; see the module docstring).
        checkpoint: a run's checkpoint ("best", "last", "last.prev"); None: ``best`` if it
            has one, else ``last``.

    Raises:
        UsageError: ``model`` is none of these (with a "did you mean" for a near name), or
            the run cannot be loaded (a damaged checkpoint names an intact one).
    """
    path = Path(model).expanduser()
    if path.is_dir():
        return load_run(path, checkpoint)
    if path.is_file():
        metadata = _safetensors_metadata(path)
        if is_adapted_file(metadata):
            return load_adapted(path)
        name = path.name.removesuffix(".safetensors").removesuffix(".state")
        if (path.parent / "config.toml").is_file():
            return load_run(path.parent, checkpoint or name)
        raise UsageError(
            f"{path} is no adapted model, and no config.toml is beside it: give its run "
            "directory or a checkpoint inside one"
        )
    if str(model) in PRETRAINED:
        return load_run(PRETRAINED[str(model)].path, checkpoint)
    raise UsageError(unknown_model(str(model)))


def _safetensors_metadata(path: Path) -> dict:
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except (OSError, safetensors.SafetensorError) as e:
        raise UsageError(
            f"{path} is not a metagrad model: not a safetensors file ({e}); give a run "
            "directory, a checkpoint or an adapted model"
        ) from None


def load_run(run_dir: Path, checkpoint: str | None = None) -> Learner:
    """The :class:`Learner` of the run in ``run_dir`` (see :func:`load`)."""
    if not (run_dir / "config.toml").is_file():
        raise UsageError(
            f"{run_dir} holds no config.toml: not a metagrad run directory; give the folder "
            "`metagrad train` wrote"
        )
    cfg = load_config(run_dir / "config.toml")
    if cfg.task.kind not in ("classification", "regression") or not cfg.algorithm.adapts:
        raise UsageError(
            f"{run_dir} is a {cfg.task.family} run of {cfg.algorithm.name}: metagrad.load takes "
            "supervised runs that adapt; test it with `metagrad test`"
        )
    inputs = INPUTS[cfg.task.family](cfg)
    with torch.random.fork_rng():  # the discarded initialisation draws from the global RNG
        model = model_for(cfg, inputs.shape)
        loss = F.cross_entropy if cfg.task.kind == "classification" else F.mse_loss
        algorithm = LEARNER_BUILDERS[cfg.algorithm.name](cfg, model, loss, None)
    if checkpoint is None:
        checkpoint = "best" if "best" in intact_checkpoints(run_dir) else "last"
    weights, state, what = load_named_checkpoint(run_dir, checkpoint, model.state_dict(), cfg.seed)
    model.load_state_dict(weights)
    algorithm.load_state_dict(state.get("learner", {}))
    model.eval()  # test-time behaviour: running statistics where the model keeps them
    preprocessing = run_preprocessing(run_dir, cfg)
    return Learner(model, algorithm, preprocessing, cfg, f"{run_dir} ({what})")
