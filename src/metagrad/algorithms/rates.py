"""Learnable inner learning rates: meta-parameters that the outer optimiser trains with the
initialisation (their meta-gradient reaches ``.grad`` through ``backward()``).

- Meta-SGD (Li et al., 2017): one rate per parameter *element*, a tensor shaped like the
  weight, shared by every inner step: ``phi = theta - alpha * grad`` elementwise.
- LSLR, MAML++'s per-layer per-step rates (Antoniou et al., 2019): one scalar per parameter
  tensor and inner step.

Both are ordinary ``inner_lr`` values of the inner loop (``{name: tensor}``, or a list of them,
one per step); the learner lists them among its meta-parameters and keeps them in its
``state_dict``, so checkpoints save them with the model and tests adapt with them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor

from metagrad.errors import UsageError
from metagrad.types import Params

LearnInnerLR = Literal["none", "per_element", "per_layer_per_step"]
LEARN_INNER_LR: tuple[str, ...] = ("none", "per_element", "per_layer_per_step")


def per_element(params: Params, inner_lr: float) -> dict[str, Tensor]:
    """Meta-SGD's rates: ``{name: tensor shaped like params[name]}``, all ``inner_lr``."""
    if not isinstance(inner_lr, (int, float)) or isinstance(inner_lr, bool):
        raise UsageError(
            f"per-element learning rates (Meta-SGD) start from one number, got {inner_lr!r}: "
            "each weight element learns its own rate, shared by every inner step"
        )
    return {k: _leaf(torch.full_like(p, float(inner_lr))) for k, p in params.items()}


def per_layer_per_step(
    params: Params, inner_lr: float | Sequence[float], steps: int
) -> list[dict[str, Tensor]]:
    """MAML++'s LSLR rates: for each of ``steps`` steps, ``{name: scalar tensor}`` starting at
    ``inner_lr`` (one number, or one per step)."""
    per_step = [inner_lr] * steps if isinstance(inner_lr, (int, float)) else list(inner_lr)
    if len(per_step) != steps:
        raise UsageError(
            f"inner_lr lists {len(per_step)} per-step rates for {steps} inner steps; give one "
            f"number or {steps}"
        )
    return [
        {k: _leaf(p.new_tensor(float(lr)).reshape(())) for k, p in params.items()}
        for lr in per_step
    ]


def learned_rates(params: Params, inner_lr, learn: str, steps: int):
    """The learnable form ``learn`` (one of :data:`LEARN_INNER_LR`) of ``inner_lr``, for the
    adapted ``params``; ``"none"`` returns ``inner_lr`` as it is."""
    if learn == "none":
        return inner_lr
    if learn == "per_element":
        return per_element(params, inner_lr)
    if learn == "per_layer_per_step":
        return per_layer_per_step(params, inner_lr, steps)
    raise UsageError(f"learn_inner_lr must be one of {list(LEARN_INNER_LR)}, got {learn!r}")


def _leaf(t: Tensor) -> Tensor:
    return t.detach().clone().requires_grad_()


def learnable_rates(inner_lr) -> Params:
    """The tensors of ``inner_lr`` that require grad (learnable learning rates: meta-parameters
    like the weights), by a name of their place in ``inner_lr``; each tensor once."""
    found: Params = {}

    def visit(value, name: str) -> None:
        if isinstance(value, Tensor):
            if value.requires_grad and all(value is not t for t in found.values()):
                found[name] = value
        elif isinstance(value, Mapping):
            for k, v in value.items():
                visit(v, f"{name}[{k!r}]")
        elif isinstance(value, Sequence) and not isinstance(value, str):
            for i, v in enumerate(value):
                visit(v, f"{name}[{i}]")

    visit(inner_lr, "inner_lr")
    return found
