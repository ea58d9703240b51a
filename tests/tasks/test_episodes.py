"""EpisodeSampler: shapes, determinism, disjoint support/query, uniform labels, rotations, state."""

from __future__ import annotations

import itertools
import json
import time

import numpy as np
import pytest
import torch

from metagrad.tasks.episodes import (
    EpisodeSampler,
    draw_episodes,
    expand_rotations,
    gather_episodes,
)
from metagrad.types import TaskBatch


def _coded(classes: int, samples: int, side: int = 5) -> np.ndarray:
    """``[classes, samples, side, side]``: pixel (0, 0) = class, pixel (0, 1) = sample."""
    images = np.zeros((classes, samples, side, side), np.uint8)
    images[:, :, 0, 0] = np.arange(classes)[:, None]
    images[:, :, 0, 1] = np.arange(samples)[None, :]
    return images


def _codes(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(class, sample) codes back from ``[tasks, n, 1, H, W]`` floats."""
    raw = (x[:, :, 0] * 255).round().to(torch.int64).numpy()
    return raw[:, :, 0, 0], raw[:, :, 0, 1]


def _assert_batches_equal(a: TaskBatch, b: TaskBatch) -> None:
    for name in ("support_x", "support_y", "query_x", "query_y"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_shapes_dtypes_and_range():
    sampler = EpisodeSampler(_coded(30, 20, 28), ways=5, shots=2, queries=3, seed=0)
    batch = sampler.sample(4)
    assert batch.support_x.shape == (4, 10, 1, 28, 28) and batch.query_x.shape == (4, 15, 1, 28, 28)
    assert batch.support_x.dtype == torch.float32 and batch.support_y.dtype == torch.int64
    assert batch.support_x.min() >= 0.0 and batch.support_x.max() <= 1.0
    assert batch.support_y[0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert batch.query_y[2].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]


def test_channels_last_input_becomes_channels_first():
    rgb = np.random.default_rng(0).integers(0, 256, (6, 4, 3, 3, 3), dtype=np.uint8)
    sampler = EpisodeSampler(rgb, ways=2, shots=1, queries=1, seed=0)
    idx = sampler.episode_indices([0])
    batch = sampler.episodes([0])
    assert batch.support_x.shape == (1, 2, 3, 3, 3)
    c, s = idx.classes[0, 1], idx.samples[0, 1, 0]
    expected = torch.from_numpy(rgb[c, s]).permute(2, 0, 1).float() / 255
    assert torch.allclose(batch.support_x[0, 1], expected)


@pytest.mark.parametrize("samples", [8, 11])  # all samples used / a subset drawn
def test_support_and_query_are_disjoint_and_labels_consistent(samples):
    sampler = EpisodeSampler(_coded(12, samples), ways=4, shots=3, queries=5, seed=1)
    batch = sampler.sample(50)
    s_cls, s_smp = _codes(batch.support_x)
    q_cls, q_smp = _codes(batch.query_x)
    for t in range(50):
        support = set(zip(s_cls[t], s_smp[t], strict=True))
        query = set(zip(q_cls[t], q_smp[t], strict=True))
        assert len(support) == 12 and len(query) == 20  # no repeats within a side
        assert not support & query
        for y in range(4):  # one class per label, a different class for every label
            assert {*s_cls[t][batch.support_y[t] == y], *q_cls[t][batch.query_y[t] == y]} == {
                s_cls[t][3 * y]
            }
        assert len(set(s_cls[t])) == 4


def test_fixed_episodes_are_a_pure_function_of_seed_and_index():
    images = _coded(40, 20)
    a = EpisodeSampler(images, 5, 1, 5, seed=7)
    b = EpisodeSampler(images, 5, 1, 5, seed=7)
    b.sample(3)  # the training stream must not affect evaluation episodes
    _assert_batches_equal(a.episodes(range(6)), b.episodes(range(6)))
    single = a.episodes([4])
    assert torch.equal(single.support_x[0], a.episodes(range(6)).support_x[4])
    other = EpisodeSampler(images, 5, 1, 5, seed=8).episodes(range(6))
    assert not torch.equal(other.support_x, a.episodes(range(6)).support_x)
    assert not torch.equal(a.episodes([0]).support_x, a.episodes([1]).support_x)


def _chi_square(counts: np.ndarray) -> float:
    expected = counts.sum() / counts.size
    return float(((counts - expected) ** 2 / expected).sum())


def test_label_permutation_is_uniform():
    # 4 classes, 4 ways: each episode assigns the labels by one of the 24 permutations.
    sampler = EpisodeSampler(_coded(4, 3), ways=4, shots=1, queries=0, seed=123)
    perms = {p: i for i, p in enumerate(itertools.permutations(range(4)))}
    counts = np.zeros(24)
    for _ in range(15):
        classes, _ = _codes(sampler.sample(320).support_x)  # [tasks, 4]: class of label i
        for row in classes:
            counts[perms[tuple(row)]] += 1
    # chi-square, 23 degrees of freedom: 49.7 is the p = 0.001 critical value
    assert _chi_square(counts) < 49.7, counts
    skewed = counts.copy()
    skewed[0] += 150  # the statistic does catch a mild bias
    assert _chi_square(skewed) > 49.7


def test_classes_are_drawn_uniformly():
    sampler = EpisodeSampler(_coded(10, 4), ways=3, shots=1, queries=1, seed=5)
    classes, _ = _codes(sampler.sample(3000).support_x)
    counts = np.bincount(classes.ravel(), minlength=10)
    assert _chi_square(counts) < 27.9  # 9 degrees of freedom, p = 0.001


def test_rotations_make_distinct_correctly_rotated_classes():
    base = np.random.default_rng(3).integers(0, 256, (2, 6, 7, 7), dtype=np.uint8)
    rotations = (0, 90, 180, 270)
    sampler = EpisodeSampler(base, ways=8, shots=1, queries=2, rotations=rotations, seed=0)
    assert sampler.num_classes == 8
    batch = sampler.sample(5)
    candidates = {  # every (base class, sample, quarter turns) image
        (b, s, k): np.rot90(base[b, s], k) for b in range(2) for s in range(6) for k in range(4)
    }

    def identify(img: torch.Tensor) -> tuple[int, int]:
        pixels = (img[0] * 255).round().to(torch.uint8).numpy()
        hits = [(b, k) for (b, s, k), c in candidates.items() if np.array_equal(c, pixels)]
        assert len(hits) == 1
        return hits[0]

    for t in range(5):
        labels = [identify(batch.support_x[t, i]) for i in range(8)]
        assert len(set(labels)) == 8  # each rotation of a character is its own label
        for j in range(16):
            assert identify(batch.query_x[t, j]) == labels[int(batch.query_y[t, j])]

    # the lazy rotation agrees with the precomputed layout class g = (g // R, rotations[g % R])
    idx = draw_episodes(np.random.default_rng(9), 8, 6, 5, 3, 4)
    lazy = gather_episodes(base, idx, 1, rotations)
    eager = gather_episodes(expand_rotations(base, rotations), idx, 1)
    _assert_batches_equal(lazy, eager)
    np.testing.assert_array_equal(
        expand_rotations(base, rotations)[5], np.rot90(base[1], 1, (1, 2))
    )


def test_rotation_of_channels_last_images_turns_height_and_width():
    rgb = np.random.default_rng(4).integers(0, 256, (1, 3, 4, 4, 3), dtype=np.uint8)
    idx = draw_episodes(np.random.default_rng(0), 4, 3, 4, 1, 1)
    batch = gather_episodes(rgb, idx, 1, (0, 90, 180, 270))
    for i in range(4):
        turns = int(idx.classes[0, i]) % 4
        expected = np.rot90(rgb[0, idx.samples[0, i, 0]], turns, axes=(0, 1))  # [H, W, C]
        got = (batch.support_x[0, i].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        np.testing.assert_array_equal(got, expected)


def test_state_dict_round_trip_reproduces_the_stream():
    images = _coded(50, 20)
    sampler = EpisodeSampler(images, 5, 1, 15, rotations=(0, 90, 180, 270), seed=11)
    sampler.sample(8)
    state = json.loads(json.dumps(sampler.state_dict()))  # plain JSON data
    first = [sampler.sample(8) for _ in range(3)]
    sampler.load_state_dict(state)
    again = [sampler.sample(8) for _ in range(3)]
    resumed = EpisodeSampler(images, 5, 1, 15, rotations=(0, 90, 180, 270), seed=11)
    resumed.load_state_dict(state)
    assert resumed.episodes_drawn == 8
    for a, b, c in zip(first, again, [resumed.sample(8) for _ in range(3)], strict=True):
        _assert_batches_equal(a, b)
        _assert_batches_equal(a, c)
    assert not torch.equal(first[0].support_x, first[1].support_x)
    with pytest.raises(ValueError, match="same data and settings"):
        EpisodeSampler(images, 5, 2, 15, rotations=(0, 90, 180, 270), seed=11).load_state_dict(
            state
        )


def test_invalid_configurations_explain_the_fix():
    images = _coded(4, 5)
    with pytest.raises(ValueError, match="ways=5"):
        EpisodeSampler(images, 5, 1, 1)
    with pytest.raises(ValueError, match="shots=3 \\+ queries=3"):
        EpisodeSampler(images, 2, 3, 3)
    with pytest.raises(ValueError, match="uint8"):
        EpisodeSampler(images.astype(np.float32), 2, 1, 1)
    with pytest.raises(ValueError, match="45"):
        EpisodeSampler(images, 2, 1, 1, rotations=(0, 45))
    with pytest.raises(ValueError, match="square"):
        EpisodeSampler(np.zeros((4, 5, 3, 6), np.uint8), 2, 1, 1, rotations=(0, 90))
    assert EpisodeSampler(images, 8, 1, 1, rotations=(0, 180)).num_classes == 8


def test_sampling_is_fast():
    images = np.random.default_rng(0).integers(0, 256, (1100, 20, 28, 28), dtype=np.uint8)
    sampler = EpisodeSampler(images, 5, 1, 15, rotations=(0, 90, 180, 270), seed=0)
    best = float("inf")
    for _ in range(5):  # best of 5: robust to other jobs sharing the CPU
        start = time.perf_counter()
        sampler.sample(32)
        best = min(best, time.perf_counter() - start)
    assert best < 0.1, f"32 episodes took {best * 1e3:.1f} ms"
