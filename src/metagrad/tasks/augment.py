"""Turning a batch of stored uint8 images into the model's input: train augmentation, test
transform and normalisation, batched on tensors.

Two protocols of the natural-image benchmarks (``NATURAL_IMAGES.md``):

- ``"resized-crop"`` (MMFewShot, 84x84): RandomResizedCrop(84, scale 0.08-1, ratio 3/4-4/3,
  bilinear), horizontal flip with probability 0.5, ColorJitter(brightness 0.4, contrast 0.4,
  saturation 0.4); at test the short side is resized to 96 and the centre 84x84 kept.
- ``"padded-crop"`` (MetaOptNet's CIFAR-FS / FC100, 32x32): RandomCrop(32, padding 4),
  ColorJitter(0.4, 0.4, 0.4), horizontal flip; no test transform.

The random transforms are kornia's (``kornia.augmentation``: torchvision's formulas on batched
tensors, no torchvision needed); one difference from torchvision: kornia draws ColorJitter's
order of the three adjustments once per batch, torchvision once per image. Kornia draws from
torch's global generator, so :func:`augment` runs it inside :func:`torch.random.fork_rng`
seeded by the caller: the same seed gives the same pixels (a resumed run sees the same
episodes) and the caller's global random state is left untouched.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F

Augment = Literal["resized-crop", "padded-crop", "none"]

__all__ = ["METAOPTNET", "MMFEWSHOT", "Augment", "ImagePipeline"]


@dataclass(frozen=True)
class ImagePipeline:
    """How stored images become model inputs.

    Attributes:
        size: Side of the model's input (84, or 32 for CIFAR).
        mean: Per-channel mean on the 0-255 scale, subtracted after augmentation.
        std: Per-channel standard deviation on the 0-255 scale.
        resize: At test (and validation), the short side is resized to this before the centre
            ``size x size`` crop; ``None``: images are only centre-cropped to ``size``.
        augment: The training augmentation (see the module docstring).
        jitter: ColorJitter's brightness, contrast and saturation.
    """

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: int | None
    augment: Augment
    jitter: float = 0.4

    def to_dict(self) -> dict:
        return asdict(self)

    def test(self, images: torch.Tensor) -> torch.Tensor:
        """The deterministic transform: uint8 ``[M, H, W, 3]`` -> float ``[M, 3, size, size]``."""
        x = _to_float(images)
        if self.resize is not None and min(x.shape[-2:]) != self.resize:
            x = _resize_short_side(x, self.resize)
        return self._normalise(_centre_crop(x, self.size))

    def train(self, images: torch.Tensor, seed: int) -> torch.Tensor:
        """The training transform, a pure function of ``(images, seed)``: uint8
        ``[M, H, W, 3]`` -> float ``[M, 3, size, size]``."""
        if self.augment == "none":
            return self.test(images)
        import kornia.augmentation as K  # imported on first use: ~1 s, only image training needs it

        x = _to_float(images)
        jitter = K.ColorJitter(self.jitter, self.jitter, self.jitter, p=1.0)
        if self.augment == "resized-crop":
            steps = [
                K.RandomResizedCrop(
                    (self.size, self.size), scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)
                ),
                K.RandomHorizontalFlip(p=0.5),
                jitter,
            ]
        else:  # "padded-crop"
            steps = [
                K.RandomCrop((self.size, self.size), padding=4),
                jitter,
                K.RandomHorizontalFlip(p=0.5),
            ]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for step in steps:
                x = step(x)
        return self._normalise(x)

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=x.dtype).div_(255.0).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype).div_(255.0).view(1, 3, 1, 1)
        return (x - mean) / std


def _to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``[M, H, W, 3]`` -> float32 ``[M, 3, H, W]`` in ``[0, 1]``."""
    return images.permute(0, 3, 1, 2).to(torch.float32).div_(255.0).contiguous()


def _resize_short_side(x: torch.Tensor, side: int) -> torch.Tensor:
    """Bilinear resize of ``[M, 3, H, W]`` so that ``min(H, W) == side`` (antialiased when
    shrinking, as Pillow: the stored 96x96 images were made by Pillow)."""
    h, w = x.shape[-2:]
    scale = side / min(h, w)
    shape = (max(side, round(h * scale)), max(side, round(w * scale)))
    return F.interpolate(x, size=shape, mode="bilinear", align_corners=False, antialias=True)


def _centre_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    if min(h, w) < size:
        raise ValueError(
            f"images of {h}x{w} are smaller than the model's {size}x{size} input; prepare the "
            "data set again (`metagrad data prepare`) or lower the input size"
        )
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top : top + size, left : left + size]


# MMFewShot's MAML pipeline: ImageNet's mean and std on the 0-255 scale.
MMFEWSHOT = ImagePipeline(
    size=84,
    mean=(123.675, 116.28, 103.53),
    std=(58.395, 57.12, 57.375),
    resize=96,
    augment="resized-crop",
)

# MetaOptNet's CIFAR-FS / FC100 pipeline at 32x32 (never upscaled).
METAOPTNET = ImagePipeline(
    size=32,
    mean=(129.38, 124.11, 112.48),
    std=(68.21, 65.43, 70.46),
    resize=None,
    augment="padded-crop",
)
