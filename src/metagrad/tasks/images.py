"""N-way K-shot episodes from a labelled image split whose classes differ in size.

The natural-image data sets hold a class's images wherever the release put them (CUB has
41-60 images per bird, tiered-ImageNet 732-1300 per class), so the split is given as uint8
images ``[N, H, W, 3]`` (typically memory-mapped, ``metagrad data prepare``'s cache) and their
labels ``[N]``, not as :class:`~metagrad.tasks.episodes.EpisodeSampler`'s ``[classes,
samples, ...]`` block. Per episode, ``ways`` distinct classes in random order (class ``i`` of
the draw is labelled ``i``: MMFewShot permutes labels per episode) and, per class,
``shots + queries`` distinct images (support and query never share one).

Training episodes come from a stateful generator whose state is checkpointable, and are
augmented by :meth:`ImagePipeline.train` with a seed drawn from that same generator, so a
resumed run sees the same pixels; evaluation episodes are a pure function of ``(seed, index)``
and get the deterministic test transform.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from metagrad.tasks.augment import ImagePipeline
from metagrad.tasks.episodes import SeededStream
from metagrad.types import TaskBatch


class LabelledEpisodeSampler(SeededStream):
    """Samples N-way K-shot Q-query meta-batches from a labelled image split.

    Args:
        images: uint8 ``[N, H, W, 3]`` (not copied; a memory map is read lazily).
        labels: int ``[N]``, classes ``0 .. C-1``.
        ways: Classes per episode (N).
        shots: Support images per class (K).
        queries: Query images per class (Q), disjoint from the support images.
        pipeline: How stored images become model inputs.
        augment: Whether :meth:`sample` applies the training augmentation (else the test
            transform); fixed episodes (:meth:`episodes`) never are augmented.
        seed: Seeds the training stream and the fixed episodes (episode ``i`` is drawn from
            ``default_rng([seed, i])``).
        split: The split's name, for error messages.
        class_names: The classes' names, for error messages.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        ways: int,
        shots: int,
        queries: int,
        pipeline: ImagePipeline,
        *,
        augment: bool = True,
        seed: int = 0,
        split: str = "train",
        class_names: list[str] | None = None,
    ) -> None:
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(
                f"images must be uint8 [N, H, W, 3], got {images.dtype} {tuple(images.shape)}"
            )
        self.images, self.pipeline, self.augment = images, pipeline, augment
        self.ways, self.shots, self.queries, self.seed = ways, shots, queries, int(seed)
        labels = np.asarray(labels, dtype=np.int64)
        self.counts = np.bincount(labels, minlength=len(class_names or ()))  # [C]
        self.by_class = np.argsort(labels, kind="stable")  # image indices grouped by class
        self.starts = np.concatenate([[0], np.cumsum(self.counts)[:-1]])
        names = class_names or [str(c) for c in range(len(self.counts))]
        classes = len(self.counts)
        if not 1 <= ways <= classes:
            raise ValueError(
                f"ways={ways} but the {split} split has {classes} classes; choose ways <= {classes}"
            )
        smallest = int(self.counts.argmin())
        if shots < 1 or queries < 0 or shots + queries > self.counts[smallest]:
            raise ValueError(
                f"shots={shots} + queries={queries} distinct images per class are needed but "
                f"class {names[smallest]} of the {split} split has {self.counts[smallest]}; "
                f"choose shots >= 1 and shots + queries <= {self.counts[smallest]}"
            )
        self._rng = np.random.default_rng(self.seed)
        self.episodes_drawn = 0

    def _draw(self, rng: np.random.Generator, tasks: int) -> np.ndarray:
        """Image indices ``[tasks, ways, shots + queries]`` of ``tasks`` episodes."""
        per_class = self.shots + self.queries
        out = np.empty((tasks, self.ways, per_class), dtype=np.int64)
        for t in range(tasks):
            for i, c in enumerate(rng.choice(len(self.counts), self.ways, replace=False)):
                picked = rng.choice(self.counts[c], per_class, replace=False)
                out[t, i] = self.by_class[self.starts[c] + picked]
        return out

    def _gather(self, indices: np.ndarray, seed: int | None) -> TaskBatch:
        tasks, ways, per_class = indices.shape
        # Reading the memory map in ascending order: page-cache friendly, and each image once.
        unique, inverse = np.unique(indices.reshape(-1), return_inverse=True)
        raw = torch.from_numpy(np.ascontiguousarray(self.images[unique]))[inverse]
        x = self.pipeline.test(raw) if seed is None else self.pipeline.train(raw, seed)
        x = x.view(tasks, ways, per_class, *x.shape[1:])  # [tasks, ways, K+Q, 3, S, S]

        def side(part: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            n = part.shape[2]
            y = torch.arange(ways).repeat_interleave(n).expand(tasks, -1).contiguous()
            return part.reshape(tasks, ways * n, *part.shape[3:]), y  # [tasks, ways*n, 3, S, S]

        support_x, support_y = side(x[:, :, : self.shots])
        query_x, query_y = side(x[:, :, self.shots :])
        return TaskBatch(support_x, support_y, query_x, query_y)

    def sample(self, meta_batch_size: int) -> TaskBatch:
        """The next ``meta_batch_size`` training episodes (advances the state)."""
        if meta_batch_size < 1:
            raise ValueError(f"meta_batch_size must be >= 1, got {meta_batch_size}")
        indices = self._draw(self._rng, meta_batch_size)
        seed = int(self._rng.integers(2**62)) if self.augment else None
        self.episodes_drawn += meta_batch_size
        return self._gather(indices, seed)

    def episodes(self, indices: Iterable[int]) -> TaskBatch:
        """Fixed evaluation episodes (test transform), the same for the same ``(seed, i)``."""
        drawn = [self._draw(np.random.default_rng([self.seed, int(i)]), 1) for i in indices]
        if not drawn:
            raise ValueError("episodes needs at least one episode index")
        return self._gather(np.concatenate(drawn), None)

    def _config(self) -> dict[str, Any]:
        return {
            "ways": self.ways,
            "shots": self.shots,
            "queries": self.queries,
            "images": len(self.by_class),
            "classes": len(self.counts),
            "augment": self.augment,
            "pipeline": repr(self.pipeline),
            "seed": self.seed,
        }
