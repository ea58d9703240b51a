"""The natural-image transforms (tasks/augment.py): deterministic given a seed, within the
protocol's ranges, and the test transform exactly MMFewShot's resize-then-centre-crop."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from metagrad.tasks.augment import METAOPTNET, MMFEWSHOT

# No jitter and no normalisation: the output pixels are source pixels, so crops can be measured.
PLAIN = dataclasses.replace(MMFEWSHOT, mean=(0.0,) * 3, std=(255.0,) * 3, jitter=0.0)


def ramps(n: int, side: int) -> torch.Tensor:
    """uint8 ``[n, side, side, 3]``: red encodes the column, green the row (0..side-1 scaled)."""
    axis = np.round(np.linspace(0, 255, side)).astype(np.uint8)
    img = np.zeros((side, side, 3), np.uint8)
    img[..., 0], img[..., 1] = axis[None, :], axis[:, None]
    return torch.from_numpy(np.repeat(img[None], n, axis=0))


def test_training_augmentation_is_a_function_of_the_seed():
    x = torch.randint(0, 256, (6, 96, 96, 3), dtype=torch.uint8)
    torch.manual_seed(5)
    before = torch.random.get_rng_state()
    a, b, c = MMFEWSHOT.train(x, 7), MMFEWSHOT.train(x, 7), MMFEWSHOT.train(x, 8)
    assert a.shape == (6, 3, 84, 84) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's stream is untouched


def test_resized_crops_stay_within_scale_and_ratio_and_flip_half():
    out = PLAIN.train(ramps(400, 96), seed=0)  # [400, 3, 84, 84] in [0, 1]
    red, green = out[:, 0] * 95, out[:, 1] * 95  # source column / row of each output pixel
    width = (red[:, 42, -1] - red[:, 42, 0]).abs() * 84 / 83  # source pixels spanned
    height = (green[:, -1, 42] - green[:, 0, 42]).abs() * 84 / 83
    area = width * height / 96**2
    assert area.min() > 0.08 * 0.8 and area.max() <= 1.0 + 1e-3
    assert (width / height).min() > 0.75 * 0.85 and (width / height).max() < 4 / 3 / 0.85
    assert area.max() > 0.7 and area.min() < 0.2  # the whole range is used
    flipped = (red[:, 42, -1] < red[:, 42, 0]).float().mean().item()
    assert 0.4 < flipped < 0.6
    assert (green[:, -1, 42] > green[:, 0, 42]).all()  # never flipped vertically


def test_jitter_changes_colours_and_keeps_the_range():
    x = torch.randint(30, 220, (50, 96, 96, 3), dtype=torch.uint8)
    jitter_only = dataclasses.replace(PLAIN, jitter=0.4)
    out = jitter_only.train(x, seed=1)
    assert out.min() >= 0 and out.max() <= 1
    plain = PLAIN.train(x, seed=1)  # the same crops and flips without jitter
    assert not torch.allclose(out, plain, atol=1e-2)


def test_test_transform_is_the_centre_crop_of_the_stored_96():
    x = torch.randint(0, 256, (3, 96, 96, 3), dtype=torch.uint8)
    out = PLAIN.test(x)
    assert torch.equal(out, x.permute(0, 3, 1, 2)[:, :, 6:90, 6:90].float() / 255)


def test_an_84_image_is_resized_to_96_then_cropped():
    x = ramps(2, 84)
    out = PLAIN.test(x)  # upsampled by 96/84: the crop sees the central 73.5 source pixels
    span = (out[0, 0, 42, -1] - out[0, 0, 42, 0]).item() * 83
    assert out.shape == (2, 3, 84, 84) and span == pytest.approx(83 * 84 / 96, abs=1.5)


def test_normalisation_uses_the_protocol_mean_and_std():
    x = torch.full((1, 96, 96, 3), 124, dtype=torch.uint8)
    out = MMFEWSHOT.test(x)
    expected = [(124 - m) / s for m, s in zip(MMFEWSHOT.mean, MMFEWSHOT.std, strict=True)]
    assert out[0, :, 0, 0].tolist() == pytest.approx(expected, abs=1e-6)


def test_cifar_padded_crop_shifts_at_most_4_pixels_and_keeps_32():
    plain = dataclasses.replace(METAOPTNET, mean=(0.0,) * 3, std=(255.0,) * 3, jitter=0.0)
    x = ramps(200, 32)
    out = plain.train(x, seed=3)
    assert out.shape == (200, 3, 32, 32)
    assert torch.equal(plain.test(x), x.permute(0, 3, 1, 2).float() / 255)  # no test transform
    inside = out[:, 1, 16, 16] * 31  # source row of the centre pixel (green is not flipped)
    assert (inside - 16).abs().max() <= 4.2 and (inside - 16).abs().max() >= 3


def test_images_smaller_than_the_input_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="smaller than the model's 84x84 input; prepare"):
        small = torch.zeros(1, 40, 40, 3, dtype=torch.uint8)
        dataclasses.replace(MMFEWSHOT, resize=None).test(small)
