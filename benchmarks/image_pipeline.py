"""Throughput of the natural-image episode pipeline (issue 15): is data loading ever the
bottleneck?

Writes a mini-ImageNet-sized prepared cache of random pixels (38,400 training images at
96x96x3, memory-mapped, 1.06 GB in a temporary folder; the pixels do not change the work),
then times :class:`~metagrad.tasks.images.LabelledEpisodeSampler` as training uses it:
MMFewShot's b105 meta-batch (8 episodes of 5-way 5-shot 16 queries, RandomResizedCrop +
flip + ColorJitter + normalisation) and a test chunk (5-way 1-shot 15 queries, resize / centre
crop / normalisation). The first pass reads the memory map from disk; later passes from the
page cache, as a long training does.

    python -m benchmarks.image_pipeline --threads 1 --repeats 10
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from metagrad.tasks.augment import MMFEWSHOT
from metagrad.tasks.images import LabelledEpisodeSampler


def synthetic_split(folder: Path, classes: int = 64, per_class: int = 600, side: int = 96):
    """A memory-mapped uint8 ``[classes * per_class, side, side, 3]`` and its labels."""
    path = folder / "train_images.npy"
    images = np.lib.format.open_memmap(
        path, mode="w+", dtype=np.uint8, shape=(classes * per_class, side, side, 3)
    )
    rng = np.random.default_rng(0)
    for start in range(0, len(images), 4096):
        chunk = images[start : start + 4096]
        chunk[:] = rng.integers(0, 256, chunk.shape, dtype=np.uint8)
    images.flush()
    del images
    return np.load(path, mmap_mode="r"), np.repeat(np.arange(classes), per_class)


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        images, labels = synthetic_split(Path(tmp))
        train = LabelledEpisodeSampler(images, labels, 5, 5, 16, MMFEWSHOT, augment=True)
        test = LabelledEpisodeSampler(images, labels, 5, 1, 15, MMFEWSHOT, seed=1)
        first = timed(lambda: train.sample(8), 1)[0]
        steps = timed(lambda: train.sample(8), args.repeats)
        chunks = timed(lambda: test.episodes(range(16)), args.repeats)
    step = float(np.median(steps))
    chunk = float(np.median(chunks))
    report = {
        "threads": args.threads,
        "train_meta_batch_s": step,
        "train_meta_batch_first_s": first,
        "train_episodes_per_s": 8 / step,
        "train_images_per_s": 8 * 105 / step,
        "test_episodes_per_s": 16 / chunk,
    }
    print(
        f"b105 meta-batch of 8 (840 images, augmented): {step:.3f} s median "
        f"({8 / step:.1f} episodes/s, {840 / step:.0f} images/s; first, from disk: {first:.3f} s)"
    )
    print(f"test episodes (5-way 1-shot 15 queries): {16 / chunk:.1f} episodes/s")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
