"""ResNet12, the backbone of MMFewShot's (and most later papers') natural-image MAML rows.

Four residual stages of widths 64, 160, 320 and 640; each stage is three 3x3 convolutions
without bias, each followed by BatchNorm, with LeakyReLU(0.1) after the first two, a 1x1
convolution + BatchNorm shortcut, LeakyReLU(0.1) after the sum and a 2x2 max-pool; then a
global average pool and a linear head (84 -> 42 -> 21 -> 10 -> 5 -> 640 features). About 12.4 M
parameters with a 5-way head. Initialised Kaiming-normal (fan_out, leaky_relu) as MMFewShot.

Built from :mod:`metagrad.models.layers`, so it runs per task and batched over tasks with
per-task weights like :class:`~metagrad.models.Conv4`. DropBlock (Ghiasi et al. 2018) is
available and off by default, as in every MAML config of MMFewShot.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metagrad.models.layers import Conv2d, Linear, MaxPool2d, norm_layer
from metagrad.types import ExecutionPath

WIDTHS = (64, 160, 320, 640)


class DropBlock(nn.Module):
    """Zero contiguous ``block_size`` x ``block_size`` regions of a feature map in training.

    Args:
        drop_rate: the fraction of units to drop (0 turns the module into the identity).
        block_size: side of the dropped squares.

    Works on inputs with any leading dimensions ``[..., C, H, W]``, e.g. per-task batches; the
    kept units are rescaled so the expected activation is unchanged.
    """

    def __init__(self, drop_rate: float = 0.0, block_size: int = 5) -> None:
        super().__init__()
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
        self.drop_rate, self.block_size = drop_rate, block_size

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.drop_rate == 0.0:
            return x
        h, w = x.shape[-2:]
        size = min(self.block_size, h, w)
        # The rate of block centres that drops about drop_rate of the units (the paper's gamma).
        gamma = self.drop_rate / size**2 * (h * w) / ((h - size + 1) * (w - size + 1))
        centres = torch.bernoulli(torch.full_like(x, gamma))
        flat = centres.reshape(-1, 1, h, w)
        blocks = F.max_pool2d(flat, size, stride=1, padding=size // 2)[..., :h, :w]
        keep = 1.0 - blocks.reshape(x.shape)
        return x * keep * (keep.numel() / keep.sum().clamp_min(1.0))

    def extra_repr(self) -> str:
        return f"drop_rate={self.drop_rate}, block_size={self.block_size}"


class ResidualStage(nn.Module):
    """Three 3x3 conv + BatchNorm (LeakyReLU after the first two), a 1x1 conv + BatchNorm
    shortcut, LeakyReLU after the sum, then 2x2 max-pool (and DropBlock)."""

    def __init__(
        self, in_channels: int, out_channels: int, norm: str, drop_rate: float = 0.0
    ) -> None:
        super().__init__()
        self.conv1 = Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.norm1 = norm_layer(norm, out_channels, spatial_dims=2)
        self.conv2 = Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = norm_layer(norm, out_channels, spatial_dims=2)
        self.conv3 = Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm3 = norm_layer(norm, out_channels, spatial_dims=2)
        self.shortcut = Conv2d(in_channels, out_channels, 1, bias=False)
        self.norm_shortcut = norm_layer(norm, out_channels, spatial_dims=2)
        self.act = nn.LeakyReLU(0.1)
        self.pool = MaxPool2d(2)
        self.drop = DropBlock(drop_rate)

    def forward(self, x: Tensor) -> Tensor:  # [..., C, H, W] -> [..., C', H/2, W/2]
        out = self.act(self.norm1(self.conv1(x)))
        out = self.act(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        out = self.act(out + self.norm_shortcut(self.shortcut(x)))
        return self.drop(self.pool(out))


class ResNet12(nn.Module):
    """ResNet12 with a linear head over globally average-pooled features.

    Args:
        ways: number of classes of the head.
        in_channels: 3 for natural images.
        widths: channels of the four stages (MMFewShot: 64, 160, 320, 640).
        norm: BatchNorm policy (``"transductive"``, ``"running"``, ``"none"``).
        drop_rate: DropBlock rate in the last two stages (0: off, as MMFewShot's MAML).
    """

    def __init__(
        self,
        ways: int,
        in_channels: int = 3,
        widths: Sequence[int] = WIDTHS,
        norm: str = "transductive",
        drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if len(widths) != 4 or min(widths) < 1:
            raise ValueError(f"widths must be 4 positive channel counts, got {list(widths)}")
        channels, stages = in_channels, []
        for i, width in enumerate(widths):
            stages.append(ResidualStage(channels, width, norm, drop_rate if i >= 2 else 0.0))
            channels = width
        self.features = nn.Sequential(*stages)
        self.head = Linear(channels, ways)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu")

    head_name = "head"  # metagrad.types.HeadedModule: what ANIL adapts alone

    def embed(self, x: Tensor) -> Tensor:
        """The globally pooled features: ``[..., C, H, W] -> [..., widths[-1]]``."""
        return self.features(x).mean(dim=(-2, -1))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.embed(x))

    def preferred_path(self, examples: int | None = None) -> ExecutionPath:
        """Always the per-task loop: it backpropagates one task at a time, so only one task's
        activations are alive, which second-order ResNet12 at 84x84 needs to fit in memory."""
        return "loop"
