"""Where a classifier's body ends and its head begins: the final linear layer.

Adapting to a new set of classes (any number of them) needs the head, ``logits = h W^T + b``
over the body's features ``h``: it is re-initialised per task (zero, or from the support set's
class prototypes) while the body keeps its meta-learned weights. Conv4, ResNet12 and the MLP
end in such a layer (``head``, ``head``, ``net.<last>``); any other model names its own with a
``head_name`` attribute.
"""

from __future__ import annotations

from torch import nn

from metagrad.errors import UsageError


def head_of(model: nn.Module) -> str:
    """The module name of ``model``'s classification head: its ``head_name`` attribute if it has
    one, else its last ``nn.Linear`` (in registration order, which is the order the built-in
    models apply their layers).

    Raises:
        UsageError: ``model`` has no ``nn.Linear``, or ``head_name`` names no ``nn.Linear``.
    """
    linears = {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    name = getattr(model, "head_name", None)
    if name is None and linears:
        name = list(linears)[-1]
    if name not in linears:
        what = f"its head_name {name!r} names no nn.Linear" if name else "it has no nn.Linear"
        raise UsageError(
            f"cannot find the classification head of {type(model).__name__}: {what}; a model "
            "adapted to new classes must end in an nn.Linear (set model.head_name to its name)"
        )
    return name
