"""N-way K-shot few-shot episodes from a class-indexed uint8 image array held in memory.

The array is ``[classes, samples, H, W]`` (grayscale) or ``[classes, samples, H, W, C]``.
Optionally every class is also seen rotated by 90, 180 and 270 degrees, each rotation being a
distinct class: class ``g`` is image row ``g // R`` rotated by ``rotations[g % R]`` degrees
(counter-clockwise, :func:`numpy.rot90`), with ``R = len(rotations)``.

Per episode, ``ways`` distinct classes are drawn in random order (class ``i`` of the draw gets
label ``i``: a random label permutation) and, per class, ``shots + queries`` distinct samples
(support and query never share an image). Training batches come from a stateful
:class:`numpy.random.Generator` whose state is checkpointable; evaluation episodes are a pure
function of ``(seed, index)``, so every evaluation sees the same episodes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from metagrad.types import TaskBatch

__all__ = [
    "EpisodeIndices",
    "EpisodeSampler",
    "SeededStream",
    "draw_episodes",
    "expand_rotations",
    "gather_episodes",
]

_STATE_VERSION = 1


@dataclass(frozen=True, eq=False)
class EpisodeIndices:
    """Which images make up a batch of episodes.

    Attributes:
        classes: ``[tasks, ways]`` class indices; column ``i`` is the class labelled ``i``.
        samples: ``[tasks, ways, shots + queries]`` distinct sample indices within each class;
            the first ``shots`` are the support set, the rest the query set.
    """

    classes: np.ndarray
    samples: np.ndarray


def draw_episodes(
    rng: np.random.Generator,
    num_classes: int,
    num_samples: int,
    ways: int,
    per_class: int,
    tasks: int,
) -> EpisodeIndices:
    """Draw the indices of ``tasks`` episodes (vectorised over tasks and classes).

    Args:
        rng: Source of randomness; advanced by the draw.
        num_classes: Classes to choose from (including rotated copies).
        num_samples: Samples per class.
        ways: Distinct classes per episode, in random order (the label permutation).
        per_class: Distinct samples per class (``shots + queries``), in random order.
        tasks: Number of episodes.
    """
    classes = np.stack([rng.choice(num_classes, ways, replace=False) for _ in range(tasks)])
    keys = rng.random((tasks, ways, num_samples))  # random sort keys: a uniform draw w/o repl.
    if per_class < num_samples:
        picked = np.argpartition(keys, per_class - 1, axis=-1)[..., :per_class]
        order = np.argsort(np.take_along_axis(keys, picked, axis=-1), axis=-1)
        samples = np.take_along_axis(picked, order, axis=-1)
    else:
        samples = np.argsort(keys, axis=-1)
    return EpisodeIndices(classes.astype(np.int64), samples.astype(np.int64))


def _check_rotations(rotations: Sequence[int], image_shape: tuple[int, ...]) -> np.ndarray:
    quarter_turns = []
    for degrees in rotations:
        if degrees not in (0, 90, 180, 270):
            raise ValueError(f"rotations are degrees out of 0, 90, 180, 270; got {degrees}")
        quarter_turns.append(degrees // 90)
    if not quarter_turns or len(set(quarter_turns)) != len(quarter_turns):
        raise ValueError(f"rotations must be distinct and non-empty, got {tuple(rotations)}")
    if {1, 3} & set(quarter_turns) and image_shape[0] != image_shape[1]:
        raise ValueError(
            f"rotating by 90 or 270 degrees needs square images, got H x W = {image_shape[:2]}; "
            "use rotations=(0, 180) or (0,)"
        )
    return np.asarray(quarter_turns, dtype=np.int64)


def expand_rotations(images: np.ndarray, rotations: Sequence[int]) -> np.ndarray:
    """Precompute the rotated classes: ``[classes, ...] -> [classes * R, ...]``.

    Class ``g`` is row ``g // R`` rotated by ``rotations[g % R]`` degrees: the same classes, in
    the same order, that :class:`EpisodeSampler` builds lazily.
    """
    turns = _check_rotations(rotations, images.shape[2:])
    rotated = [np.rot90(images, k, axes=(2, 3)) for k in turns]  # R x [classes, S, H, W, ...]
    return np.stack(rotated, axis=1).reshape(-1, *images.shape[1:])


def gather_episodes(
    images: np.ndarray, indices: EpisodeIndices, shots: int, rotations: Sequence[int] = (0,)
) -> TaskBatch:
    """Build a :class:`TaskBatch` from episode indices (vectorised gather, then rotation).

    Args:
        images: ``[base_classes, samples, H, W]`` or ``[base_classes, samples, H, W, C]`` uint8.
        indices: From :func:`draw_episodes`; class indices count ``base_classes * R`` classes.
        shots: How many of the per-class samples form the support set.
        rotations: Degrees; see the module docstring.

    Returns:
        ``support_x [tasks, ways*shots, C, H, W]`` float32 in ``[0, 1]``, ``support_y`` int64
        labels (class-major: ``0,0,..,1,1,..``), and the query set likewise.
    """
    turns = _check_rotations(rotations, images.shape[2:])
    tasks, ways = indices.classes.shape
    base, turn = np.divmod(indices.classes, len(turns))  # [tasks, ways] each
    x = images[base[:, :, None], indices.samples]  # [tasks, ways, shots+queries, H, W(, C)]
    turn = turns[turn]
    for k in np.unique(turn[turn != 0]):
        mask = turn == k
        x[mask] = np.rot90(x[mask], int(k), axes=(2, 3))
    per_class = x.shape[2]

    def side(part: np.ndarray, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        flat = np.ascontiguousarray(part).reshape(tasks, ways * n, *x.shape[3:])
        t = torch.from_numpy(flat).to(torch.float32).div_(255.0)
        t = t.unsqueeze(2) if t.dim() == 4 else t.permute(0, 1, 4, 2, 3).contiguous()
        y = torch.arange(ways).repeat_interleave(n).expand(tasks, -1).contiguous()
        return t, y  # [tasks, ways*n, C, H, W], [tasks, ways*n]

    support_x, support_y = side(x[:, :, :shots], shots)
    query_x, query_y = side(x[:, :, shots:], per_class - shots)
    return TaskBatch(support_x, support_y, query_x, query_y)


class SeededStream:
    """The checkpointable position of a sampler's training stream: a subclass keeps its
    generator in ``_rng``, counts ``episodes_drawn`` and says what must match to resume in
    ``_config()``."""

    _rng: np.random.Generator
    episodes_drawn: int

    def _config(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """The training stream's position as plain JSON-able data (big ints as strings)."""
        return {
            "version": _STATE_VERSION,
            "config": self._config(),
            "episodes_drawn": self.episodes_drawn,
            "bit_generator": ints_to_str(self._rng.bit_generator.state),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`: the following :meth:`sample` calls repeat the stream."""
        if state.get("version") != _STATE_VERSION:
            raise ValueError(
                f"sampler state version {state.get('version')!r} is not {_STATE_VERSION}; it "
                "was saved by another metagrad version"
            )
        if state["config"] != self._config():
            raise ValueError(
                f"the saved sampler state is for {state['config']} but this sampler is "
                f"{self._config()}; build the sampler with the same data and settings to resume"
            )
        self._rng.bit_generator.state = str_to_ints(state["bit_generator"])
        self.episodes_drawn = int(state["episodes_drawn"])


class EpisodeSampler(SeededStream):
    """Samples N-way K-shot Q-query meta-batches from an in-memory uint8 image array.

    Args:
        images: ``[classes, samples, H, W]`` or ``[classes, samples, H, W, C]`` uint8 (not
            copied; 255 maps to 1.0).
        ways: Classes per episode (N).
        shots: Support images per class (K).
        queries: Query images per class (Q), disjoint from the support images.
        rotations: Degrees out of ``(0, 90, 180, 270)``; each class x rotation is a distinct
            class, e.g. ``(0, 90, 180, 270)`` quadruples the classes. Default: no rotation.
        seed: Seeds both the training stream (:meth:`sample`) and the fixed evaluation
            episodes (:meth:`episodes`, episode ``i`` drawn from ``default_rng([seed, i])``).
    """

    def __init__(
        self,
        images: np.ndarray,
        ways: int,
        shots: int,
        queries: int,
        *,
        rotations: Sequence[int] = (0,),
        seed: int = 0,
    ) -> None:
        ok = isinstance(images, np.ndarray) and images.dtype == np.uint8
        if not ok or images.ndim not in (4, 5):
            raise ValueError(
                f"images must be a uint8 numpy array [classes, samples, H, W] or [classes, "
                f"samples, H, W, C], got {type(images).__name__} "
                f"{getattr(images, 'dtype', '')} {getattr(images, 'shape', '')}"
            )
        self.images = images
        self.rotations = tuple(int(r) for r in rotations)
        _check_rotations(self.rotations, images.shape[2:])
        self.num_classes = images.shape[0] * len(self.rotations)
        self.ways, self.shots, self.queries, self.seed = ways, shots, queries, int(seed)
        if not 1 <= ways <= self.num_classes:
            raise ValueError(
                f"ways={ways} but there are {self.num_classes} classes ({images.shape[0]} x "
                f"{len(self.rotations)} rotations); choose 1 <= ways <= {self.num_classes}"
            )
        if shots < 1 or queries < 0 or shots + queries > images.shape[1]:
            raise ValueError(
                f"shots={shots} + queries={queries} distinct images per class are needed but "
                f"each class has {images.shape[1]} samples; need shots >= 1, queries >= 0 and "
                f"shots + queries <= {images.shape[1]}"
            )
        self._rng = np.random.default_rng(self.seed)
        self.episodes_drawn = 0

    def _draw(self, rng: np.random.Generator, tasks: int) -> EpisodeIndices:
        per_class = self.shots + self.queries
        return draw_episodes(
            rng, self.num_classes, self.images.shape[1], self.ways, per_class, tasks
        )

    def sample_indices(self, meta_batch_size: int) -> EpisodeIndices:
        """Indices of the next ``meta_batch_size`` training episodes (advances the state)."""
        if meta_batch_size < 1:
            raise ValueError(f"meta_batch_size must be >= 1, got {meta_batch_size}")
        self.episodes_drawn += meta_batch_size
        return self._draw(self._rng, meta_batch_size)

    def sample(self, meta_batch_size: int) -> TaskBatch:
        """The next ``meta_batch_size`` training episodes from the stateful generator."""
        return gather_episodes(
            self.images, self.sample_indices(meta_batch_size), self.shots, self.rotations
        )

    def episode_indices(self, indices: Iterable[int]) -> EpisodeIndices:
        """Indices of the fixed episodes ``indices``: a pure function of ``(seed, index)``."""
        drawn = [self._draw(np.random.default_rng([self.seed, int(i)]), 1) for i in indices]
        if not drawn:
            raise ValueError("episode_indices needs at least one episode index")
        return EpisodeIndices(
            np.concatenate([d.classes for d in drawn]), np.concatenate([d.samples for d in drawn])
        )

    def episodes(self, indices: Iterable[int]) -> TaskBatch:
        """Fixed evaluation episodes, e.g. ``episodes(range(0, 32))``; never touches the
        training stream, and the same ``(seed, index)`` always gives the same episode."""
        return gather_episodes(
            self.images, self.episode_indices(indices), self.shots, self.rotations
        )

    def _config(self) -> dict[str, Any]:
        return {
            "ways": self.ways,
            "shots": self.shots,
            "queries": self.queries,
            "num_classes": self.num_classes,
            "samples_per_class": int(self.images.shape[1]),
            "rotations": list(self.rotations),
            "seed": self.seed,
        }


def ints_to_str(obj: Any) -> Any:
    """Integers as decimal strings (128-bit generator state survives any JSON parser)."""
    if isinstance(obj, dict):
        return {k: ints_to_str(v) for k, v in obj.items()}
    return str(obj) if isinstance(obj, (int, np.integer)) else obj


def str_to_ints(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: str_to_ints(v) for k, v in obj.items()}
    return int(obj) if isinstance(obj, str) and obj.lstrip("-").isdigit() else obj
