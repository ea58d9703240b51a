"""The shared networks: metagrad's built-in models (Conv4, ResNet12, MLP) and their plain
``torch.nn`` twins.

The peers (learn2learn, higher, torchopt) run the ``torch.nn`` twins, which have the same
parameters as metagrad's models in the same order, so one set of weights initialises all.
Their BatchNorm is ``torch.nn.BatchNorm2d(track_running_stats=False)``: batch statistics in
training and evaluation alike, the same math as metagrad's transductive BatchNorm.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.settings import Setting
from metagrad.models import MLP, Conv4, ResNet12


class TorchConv4(nn.Module):
    """Conv4 from plain ``torch.nn``: 4 x [conv3x3, BatchNorm (batch stats), ReLU, (max-pool)].

    Args:
        ways: classes of the linear head.
        in_channels: image channels.
        filters: channels of every block.
        image_size: input height = width, to size the head.
        pool: ``"max"`` (max-pool 2 after each block, features flattened) or ``"stride"``
            (stride-2 convolutions, features averaged over space).
    """

    def __init__(self, ways: int, in_channels: int, filters: int, image_size: int, pool: str):
        super().__init__()
        blocks: list[nn.Module] = []
        channels, size = in_channels, image_size
        for _ in range(4):
            stride = 2 if pool == "stride" else 1
            blocks += [
                nn.Conv2d(channels, filters, 3, stride=stride, padding=1),
                nn.BatchNorm2d(filters, track_running_stats=False),
                nn.ReLU(),
            ]
            size = (size - 1) // stride + 1
            if pool == "max":
                blocks.append(nn.MaxPool2d(2))
                size //= 2
            channels = filters
        self.features = nn.Sequential(*blocks)
        self.mean_head = pool == "stride"
        self.flatten = nn.Flatten(1)
        self.head = nn.Linear(filters if self.mean_head else filters * size * size, ways)

    def forward(self, x: Tensor) -> Tensor:
        h = self.features(x)
        h = h.mean(dim=(-2, -1)) if self.mean_head else self.flatten(h)
        return self.head(h)


class TorchResidualStage(nn.Module):
    """One stage of :class:`TorchResNet12`, registered in the order of metagrad's
    ``ResidualStage``: three conv3x3 (no bias) + BatchNorm, the 1x1 shortcut + BatchNorm."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()

        def bn() -> nn.BatchNorm2d:
            return nn.BatchNorm2d(out_channels, track_running_stats=False)

        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.norm1 = bn()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = bn()
        self.conv3 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm3 = bn()
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.norm_shortcut = bn()
        self.act = nn.LeakyReLU(0.1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: Tensor) -> Tensor:  # [N, C, H, W] -> [N, C', H/2, W/2]
        out = self.act(self.norm1(self.conv1(x)))
        out = self.act(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        return self.pool(self.act(out + self.norm_shortcut(self.shortcut(x))))


class TorchResNet12(nn.Module):
    """ResNet12 from plain ``torch.nn`` (no DropBlock: off in every MAML config of MMFewShot):
    four residual stages, global average pool, linear head.

    Args:
        ways: classes of the linear head.
        in_channels: image channels.
        widths: channels of the four stages.
    """

    def __init__(self, ways: int, in_channels: int, widths: tuple[int, ...]) -> None:
        super().__init__()
        channels, stages = in_channels, []
        for width in widths:
            stages.append(TorchResidualStage(channels, width))
            channels = width
        self.features = nn.Sequential(*stages)
        self.head = nn.Linear(channels, ways)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).mean(dim=(-2, -1)))  # [N, ways]


class TorchMLP(nn.Module):
    """The sinusoid regressor ``1-40-40-1`` with ReLU, from plain ``torch.nn``."""

    def __init__(self, hidden: tuple[int, ...] = (40, 40)) -> None:
        super().__init__()
        sizes, layers = [1, *hidden], []
        for a, b in itertools.pairwise(sizes):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.net = nn.Sequential(*layers, nn.Linear(sizes[-1], 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def metagrad_model(setting: Setting, pool: str, seed: int = 0) -> nn.Module:
    """metagrad's built-in model for ``setting`` (``pool``: "max", "stride", "resnet12" or
    "mlp")."""
    torch.manual_seed(seed)
    if pool == "mlp":
        return MLP(1, 1, hidden=(40, 40))
    if pool == "resnet12":
        return ResNet12(setting.ways, setting.channels, widths=setting.widths)
    return Conv4(setting.ways, setting.channels, setting.filters, setting.size, pool=pool)


def torch_model(setting: Setting, pool: str) -> nn.Module:
    """The plain ``torch.nn`` twin of :func:`metagrad_model` (random weights; load a state)."""
    if pool == "mlp":
        return TorchMLP()
    if pool == "resnet12":
        return TorchResNet12(setting.ways, setting.channels, setting.widths)
    return TorchConv4(setting.ways, setting.channels, setting.filters, setting.size, pool)


def twin(reference: nn.Module, setting: Setting, pool: str) -> nn.Module:
    """A ``torch.nn`` model holding a copy of ``reference``'s weights.

    Parameters are matched by position (both models register them in the same order: each
    block's convolution weight and bias, BatchNorm weight and bias, then the head; for ResNet12
    each stage's three convolutions and BatchNorms, then its shortcut's), so the copy does not
    depend on how metagrad names its submodules.

    Raises:
        ValueError: the numbers or shapes of the parameters differ.
    """
    model = torch_model(setting, pool)
    ours, theirs = list(reference.parameters()), list(model.parameters())
    shapes = [tuple(p.shape) for p in ours], [tuple(p.shape) for p in theirs]
    if shapes[0] != shapes[1]:
        raise ValueError(f"parameters differ: metagrad {shapes[0]} vs torch.nn {shapes[1]}")
    with torch.no_grad():
        for src, dst in zip(ours, theirs):
            dst.copy_(src)
    return model


def loss_fn(setting: Setting):
    """The task loss: cross-entropy for classification, mean squared error for regression."""
    return F.cross_entropy if setting.classification else F.mse_loss
