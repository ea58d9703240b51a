"""A model adapted to a user's classes: it predicts, and it saves to and loads from one file.

:class:`Adapted` is what ``metagrad.load(RUN).adapt(images, labels)`` returns: the adapted
parameters (a dict, run with ``functional_call``; the head has one unit per class), the support
set whose statistics normalise its predictions (the ``"support"`` BatchNorm mode by default,
:mod:`metagrad.algorithms.normalization`), the class names and the preprocessing. ``save``
writes one safetensors file: tensors only, plus JSON metadata (class names, preprocessing, the
run's config, how it was adapted), nothing executable; ``metagrad.load(FILE)`` reads it back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from PIL import Image
from torch import Tensor

from metagrad.algorithms.normalization import BatchNormMode, check_mode, predict_with
from metagrad.algorithms.paths import TaskExecutor
from metagrad.config import ExperimentConfig, config_from_dict, config_to_dict
from metagrad.data.image_folders import read_image
from metagrad.errors import UsageError
from metagrad.functional.params import split_state
from metagrad.models import head_of
from metagrad.tasks.preprocess import Preprocessing
from metagrad.train.build import INPUTS, model_for
from metagrad.train.io import atomic_write_bytes, tensor_copy
from metagrad.types import Params

ADAPTED_FORMAT, ADAPTED_VERSION = "metagrad-adapted", "1"
ROLES = ("params", "frozen", "buffers")  # the tensors' roles; the file keys are "role/name"
SUPPORT_KEY = "support/x"
CHUNK = 64  # queries per forward pass in the modes where they do not affect each other

Example = Image.Image | str | os.PathLike
Examples = Tensor | Example | Sequence[Example] | Sequence[Tensor]


@dataclass(frozen=True)
class Prediction:
    """What :meth:`Adapted.predict` gives for ``N`` examples.

    Attributes:
        outputs: ``[N, classes]`` logits (``[N, ...]`` values for regression).
        probabilities: ``[N, classes]`` softmax of the logits (None for regression).
        labels: ``[N]`` index of the most probable class (None for regression).
        classes: ``N`` names of the most probable classes (None for regression).
    """

    outputs: Tensor
    probabilities: Tensor | None
    labels: Tensor | None
    classes: list | None


def as_inputs(examples: Examples, preprocessing: Preprocessing | None, shape: tuple) -> Tensor:
    """``examples`` as a batch of model inputs ``[N, *shape]``: a tensor as it is (one example
    without the batch dimension is one), images and image files through ``preprocessing``.

    Raises:
        UsageError: no examples, tensors of another or mixed shapes, images for a model whose
            inputs are not images, or a file that is not a readable image (named).
    """
    if isinstance(examples, Tensor):
        x = examples.unsqueeze(0) if examples.dim() == len(shape) else examples
        if tuple(x.shape[1:]) != tuple(shape):
            raise UsageError(
                f"the examples have shape {tuple(x.shape[1:])} each, but the model takes "
                f"{tuple(shape)}: give a tensor [N, {', '.join(map(str, shape))}] or images"
            )
        if not x.is_floating_point():
            raise UsageError(f"the examples are {x.dtype}: give floating inputs")
        return x
    if isinstance(examples, Image.Image | str | os.PathLike):
        examples = [examples]
    examples = list(examples)
    if not examples:
        raise UsageError("no examples given: give images, image files or a tensor")
    if all(isinstance(e, Tensor) for e in examples):
        first = tuple(examples[0].shape)
        for i, e in enumerate(examples):
            if tuple(e.shape) != first:
                raise UsageError(
                    f"example {i} has shape {tuple(e.shape)} but example 0 has {first} (mixed "
                    f"channel counts or sizes): give examples of the model's shape {tuple(shape)}"
                )
        return as_inputs(torch.stack(examples), preprocessing, shape)
    if preprocessing is None:
        raise UsageError(
            f"this model's inputs are not images (it takes tensors of shape {tuple(shape)}): "
            "give a tensor"
        )
    images = [e if isinstance(e, Image.Image) else read_image(e) for e in examples]
    return preprocessing.batch(images)


@dataclass(frozen=True, eq=False)
class Adapted:
    """A model adapted to one task (see the module docstring).

    Attributes:
        executor: the model with its frozen parameters and buffers.
        params: the adapted parameters.
        support_x: ``[n_support, ...]`` the inputs adapted to.
        classes: the class of each head unit, in order (None for regression).
        preprocessing: how images become inputs (None: inputs are not images).
        config: the run's config (the architecture, to rebuild the model on loading).
        batch_norm: the BatchNorm mode :meth:`predict` uses by default.
        about: how it was adapted (``head``, ``inner_steps``, ``source``), for reports.
    """

    executor: TaskExecutor
    params: Params
    support_x: Tensor
    classes: tuple | None
    preprocessing: Preprocessing | None
    config: ExperimentConfig
    batch_norm: BatchNormMode = "support"
    about: Mapping[str, Any] = field(default_factory=dict)

    def predict(self, examples: Examples, *, batch_norm: BatchNormMode | None = None) -> Prediction:
        """Outputs, class probabilities and classes of ``examples``: images, image files, or a
        tensor of inputs ``[N, ...]``.

        Args:
            examples: what to classify.
            batch_norm: whose statistics normalise them (default: :attr:`batch_norm`,
                ``"support"``: the support set's, so each answer is that of the image alone).
        """
        x = as_inputs(examples, self.preprocessing, tuple(self.support_x.shape[1:]))
        x = x.to(self.support_x.dtype)
        mode = check_mode(batch_norm or self.batch_norm)
        # Support-normalised (and one-at-a-time) queries do not affect each other: chunks
        # bound the memory and give the same answers; a transductive batch must stay whole.
        chunks = x.split(CHUNK) if mode != "transductive" else (x,)
        with torch.no_grad():
            out = torch.cat(
                [predict_with(self.executor, self.params, c, mode, self.support_x) for c in chunks]
            )
        if self.classes is None:
            return Prediction(out, None, None, None)
        probabilities = out.softmax(-1)
        labels = probabilities.argmax(-1)
        return Prediction(out, probabilities, labels, [self.classes[i] for i in labels.tolist()])

    def save(self, path: str | os.PathLike) -> None:
        """Write this adapted model to ``path`` (safetensors, atomically).

        Raises:
            UsageError: the folder of ``path`` does not exist or ``path`` is a folder.
        """
        path = Path(path)
        if path.is_dir() or not path.parent.is_dir():
            where = "is a folder" if path.is_dir() else f"is in {path.parent}, which does not exist"
            raise UsageError(f"cannot save the adapted model to {path}: it {where}")
        tensors = {SUPPORT_KEY: tensor_copy(self.support_x)}
        for role, group in zip(ROLES, (self.params, self.executor.frozen, self.executor.buffers)):
            tensors.update({f"{role}/{k}": tensor_copy(v) for k, v in group.items()})
        meta = {
            "classes": None if self.classes is None else list(self.classes),
            "preprocessing": None if self.preprocessing is None else self.preprocessing.to_dict(),
            "config": config_to_dict(self.config),
            "batch_norm": self.batch_norm,
            **self.about,
        }
        metadata = {
            "format": ADAPTED_FORMAT,
            "version": ADAPTED_VERSION,
            "metagrad": json.dumps(meta),
        }
        atomic_write_bytes(path, safetensors.torch.save(tensors, metadata))


def is_adapted_file(metadata: Mapping[str, str] | None) -> bool:
    """Whether a safetensors file's metadata is that of an :class:`Adapted` file."""
    return bool(metadata) and metadata.get("format") == ADAPTED_FORMAT


def load_adapted(path: Path) -> Adapted:
    """Read a file written by :meth:`Adapted.save`; executes nothing.

    Raises:
        UsageError: the file is damaged, of another version, or its tensors do not fit the
            model its config describes.
    """
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except (OSError, safetensors.SafetensorError) as e:
        raise UsageError(f"{path} is not a readable safetensors file ({e})") from None
    if metadata.get("version") != ADAPTED_VERSION:
        raise UsageError(
            f"{path} is an adapted model of version {metadata.get('version')!r}, expected "
            f"{ADAPTED_VERSION}: it was written by another metagrad version"
        )
    try:
        meta = json.loads(metadata["metagrad"])
        cfg = config_from_dict(meta["config"], f"{path} (its config)")
        record = meta["preprocessing"]
        preprocessing = None if record is None else Preprocessing.from_dict(record, str(path))
        groups: dict[str, Params] = {role: {} for role in ROLES}
        for key, t in tensors.items():
            role, _, name = key.partition("/")
            if key != SUPPORT_KEY:
                groups[role][name] = t
        support_x = tensors[SUPPORT_KEY]
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as e:
        raise UsageError(f"{path} is a damaged adapted model ({type(e).__name__}: {e})") from None
    with torch.random.fork_rng():  # building the model draws an initialisation: discard it
        model = model_for(cfg, INPUTS[cfg.task.family](cfg).shape).eval()
    _check_fit(path, model, groups)
    executor = TaskExecutor(model, groups["frozen"], groups["buffers"], "loop")
    classes = meta["classes"]
    about = {k: meta[k] for k in ("head", "inner_steps", "source") if k in meta}
    return Adapted(
        executor,
        groups["params"],
        support_x,
        None if classes is None else tuple(classes),
        preprocessing,
        cfg,
        check_mode(meta.get("batch_norm", "support")),
        about,
    )


def _check_fit(path: Path, model: torch.nn.Module, groups: dict[str, Params]) -> None:
    """The file's tensors have the model's names and shapes, but for the head's classes."""
    state = split_state(model)
    try:
        head = head_of(model)
    except UsageError:  # no linear head: every shape must match
        head = None
    for role, expected in zip(ROLES, (state.params, state.frozen, state.buffers)):
        got = groups[role]
        if set(got) != set(expected):
            odd = sorted(set(got) ^ set(expected))[:3]
            raise UsageError(f"{path} does not fit its model ({role} differ: {odd})")
        for name, t in got.items():
            same = t.shape == expected[name].shape
            head_rows = head is not None and name.startswith(f"{head}.")
            head_rows = head_rows and t.shape[1:] == expected[name].shape[1:]
            if not (same or head_rows):
                raise UsageError(
                    f"{path} does not fit its model: {name} is {list(t.shape)}, the model's "
                    f"{list(expected[name].shape)}"
                )
