"""Fully connected networks: the sinusoid regressor (1-40-40-1) and the Omniglot MLP."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from torch import Tensor, nn

from metagrad.models.layers import Flatten, Linear, norm_layer
from metagrad.types import ExecutionPath

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU}


class MLP(nn.Module):
    """``in -> hidden... -> out`` with an activation (and optional BatchNorm) after each hidden.

    Inputs may carry extra trailing dimensions (images are flattened), and a leading task
    dimension when run with per-task parameters.

    Args:
        in_features: input size (product of the input's trailing shape).
        out_features: output size (1 for regression, ``ways`` for classification).
        hidden: hidden layer sizes, e.g. ``(40, 40)`` (MAML sinusoid) or
            ``(256, 128, 64, 64)`` (MAML Omniglot MLP, with ``norm="transductive"``).
        activation: ``"relu"``, ``"tanh"``, ``"gelu"`` or ``"silu"``.
        norm: BatchNorm policy, see :func:`metagrad.models.layers.norm_layer`.
        input_dims: how many trailing input dimensions to flatten (1 for vectors, 3 for images).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = (40, 40),
        activation: str = "relu",
        norm: str = "none",
        input_dims: int = 1,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}: expected {list(ACTIVATIONS)}")
        layers: list[nn.Module] = [Flatten(input_dims)] if input_dims > 1 else []
        sizes = [in_features, *hidden]
        for a, b in itertools.pairwise(sizes):
            layers.append(Linear(a, b))
            if norm != "none":
                layers.append(norm_layer(norm, b, spatial_dims=0))
            layers.append(ACTIVATIONS[activation]())
        layers.append(Linear(sizes[-1], out_features))
        self.net = nn.Sequential(*layers)

    @property
    def head_name(self) -> str:
        """The last linear layer (metagrad.types.HeadedModule: what ANIL adapts alone)."""
        return f"net.{len(self.net) - 1}"

    def embed(self, x: Tensor) -> Tensor:
        """The last hidden layer's activations ``[..., hidden[-1]]``."""
        for layer in list(self.net)[:-1]:
            x = layer(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def preferred_path(self, examples: int | None = None) -> ExecutionPath:
        """Always ``"vectorized"``: its small matrix products gain most from batching tasks
        (the sinusoid MLP, BENCHMARKS.md)."""
        return "vectorized"
