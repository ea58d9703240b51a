"""The shared networks: metagrad's built-in models and their plain ``torch.nn`` twins.

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
from metagrad.models import MLP, Conv4


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
    """metagrad's built-in model for ``setting`` (``pool``: "max", "stride" or "mlp")."""
    torch.manual_seed(seed)
    if pool == "mlp":
        return MLP(1, 1, hidden=(40, 40))
    return Conv4(setting.ways, setting.channels, setting.filters, setting.size, pool=pool)


def torch_model(setting: Setting, pool: str) -> nn.Module:
    """The plain ``torch.nn`` twin of :func:`metagrad_model` (random weights; load a state)."""
    if pool == "mlp":
        return TorchMLP()
    return TorchConv4(setting.ways, setting.channels, setting.filters, setting.size, pool)


def twin(reference: nn.Module, setting: Setting, pool: str) -> nn.Module:
    """A ``torch.nn`` model holding a copy of ``reference``'s weights.

    Parameters are matched by position (both models register them in the same order: each
    block's convolution weight and bias, BatchNorm weight and bias, then the head), so the copy
    does not depend on how metagrad names its submodules.

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
