"""Built-in models by name, for configs and parametrised tests."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from metagrad.models.conv4 import Conv4
from metagrad.models.mlp import MLP

MODELS: dict[str, Callable[..., nn.Module]] = {"mlp": MLP, "conv4": Conv4}


def build_model(name: str, **kwargs) -> nn.Module:
    """Instantiate the built-in model ``name`` with ``kwargs``."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}: expected one of {sorted(MODELS)}")
    return MODELS[name](**kwargs)
