"""Built-in models: ordinary ``nn.Module``s that also run batched over tasks."""

from metagrad.models.conv4 import Conv4
from metagrad.models.heads import head_of
from metagrad.models.layers import BatchNorm, Conv2d, Linear, MaxPool2d, norm_layer
from metagrad.models.mlp import MLP
from metagrad.models.registry import MODELS, build_model
from metagrad.models.resnet12 import ResNet12

__all__ = [
    "MLP",
    "MODELS",
    "BatchNorm",
    "Conv2d",
    "Conv4",
    "Linear",
    "MaxPool2d",
    "ResNet12",
    "build_model",
    "head_of",
    "norm_layer",
]
