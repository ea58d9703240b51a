"""Episodes of a labelled image split whose classes differ in size (tasks/images.py)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from metagrad.tasks.augment import MMFEWSHOT
from metagrad.tasks.images import LabelledEpisodeSampler

# Stored 84x84 and fed 84x84 without normalisation: the test transform is then the identity,
# so every image's identity can be read back from its pixels.
IDENTITY = dataclasses.replace(MMFEWSHOT, resize=None, mean=(0.0,) * 3, std=(255.0,) * 3)
COUNTS = [3, 7, 5, 4, 9, 6]  # images per class: ragged, as CUB and tiered-ImageNet are


def split(counts=COUNTS, side=84):
    labels = np.repeat(np.arange(len(counts)), counts)
    rng = np.random.default_rng(0)
    labels = labels[rng.permutation(len(labels))]  # classes interleaved, as in a real cache
    images = np.zeros((len(labels), side, side, 3), np.uint8)
    images[:, 0, 0, 0] = np.arange(len(labels))  # pixel (0, 0) says which image it is
    images[:, 0, 0, 1] = labels
    return images, labels


def ids(x: torch.Tensor) -> np.ndarray:
    """Image index and class of every image of ``[tasks, n, 3, H, W]``."""
    px = (x[:, :, :2, 0, 0] * 255).round().long().numpy()
    return px[..., 0], px[..., 1]


def sampler(**kw):
    images, labels = split()
    args = dict(ways=3, shots=2, queries=1, pipeline=IDENTITY, augment=False, seed=4)
    return LabelledEpisodeSampler(images, labels, **(args | kw))


def test_episodes_have_distinct_classes_labelled_in_draw_order_and_disjoint_images():
    batch = sampler().sample(50)
    assert batch.support_x.shape == (50, 6, 3, 84, 84) and batch.query_x.shape == (50, 3, 3, 84, 84)
    s_img, s_cls = ids(batch.support_x)
    q_img, q_cls = ids(batch.query_x)
    assert batch.support_y[0].tolist() == [0, 0, 1, 1, 2, 2]
    assert batch.query_y[0].tolist() == [0, 1, 2]
    for t in range(50):
        classes = s_cls[t, ::2]
        assert len(set(classes)) == 3
        assert (s_cls[t] == np.repeat(classes, 2)).all() and (q_cls[t] == classes).all()
        assert not set(s_img[t]) & set(q_img[t]) and len(set(s_img[t])) == 6
    # Every class (the smallest too) is drawn, and each with every label: labels are permuted.
    drawn = s_cls[:, ::2]
    assert set(drawn.ravel()) == set(range(6))
    assert all(set(drawn[:, i]) == set(range(6)) for i in range(3))


def test_the_stream_is_seeded_and_fixed_episodes_are_a_function_of_seed_and_index():
    a, b = sampler(), sampler()
    assert torch.equal(a.sample(4).support_x, b.sample(4).support_x)
    assert not torch.equal(a.sample(4).support_x, sampler(seed=5).sample(4).support_x)
    first = a.episodes(range(3, 6)).query_x
    assert torch.equal(first, sampler().episodes([3, 4, 5]).query_x)  # the stream does not matter
    assert torch.equal(first[1:], a.episodes([4, 5]).query_x)  # nor the chunking


def test_a_resumed_stream_repeats_episodes_and_augmentation():
    s = sampler(augment=True, pipeline=MMFEWSHOT, ways=2, shots=1, queries=1)
    s.sample(3)
    state = json.loads(json.dumps(s.state_dict()))  # as it goes through a checkpoint
    expected = s.sample(2)
    resumed = sampler(augment=True, pipeline=MMFEWSHOT, ways=2, shots=1, queries=1)
    resumed.load_state_dict(state)
    again = resumed.sample(2)
    assert torch.equal(again.support_x, expected.support_x) and resumed.episodes_drawn == 5
    with pytest.raises(ValueError, match="same data and settings"):
        sampler(ways=2, shots=1, queries=1).load_state_dict(state)  # augment differs


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(ways=7), "ways=7 but the train split has 6 classes; choose ways <= 6"),
        (dict(shots=2, queries=2), "class c0 of the train split has 3; choose shots >= 1 and "),
        (dict(shots=0), "shots=0"),
    ],
)
def test_ways_or_shots_beyond_the_split_name_the_limit(kw, message):
    images, labels = split()
    names = [f"c{i}" for i in range(6)]
    args = dict(ways=3, shots=1, queries=1, pipeline=IDENTITY) | kw
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        LabelledEpisodeSampler(images, labels, class_names=names, **args)
