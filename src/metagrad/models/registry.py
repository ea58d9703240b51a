"""Built-in models by name, for configs (:mod:`metagrad.train.build`), ``metagrad list`` and
parametrised tests. A new model is an entry here."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from metagrad.models.conv4 import Conv4
from metagrad.models.mlp import MLP
from metagrad.models.resnet12 import ResNet12
from metagrad.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
MODELS.add("mlp", MLP)
MODELS.add("conv4", Conv4)
MODELS.add("resnet12", ResNet12)


def build_model(name: str, **kwargs) -> nn.Module:
    """Instantiate the built-in model ``name`` with ``kwargs`` (an unknown name is a
    :class:`~metagrad.registry.UnknownName` error that says which name was probably meant)."""
    return MODELS[name](**kwargs)
