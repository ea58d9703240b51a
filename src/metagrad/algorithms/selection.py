"""Which parameters the inner loop adapts: ``inner_params``, an option of every algorithm.

MAML adapts every parameter; ANIL (Raghu et al., 2020) only the head, BOIL (Oh et al., 2021)
only the body. The choice is a name filter over the model's parameters, resolved once into the
set of names :class:`~metagrad.functional.inner.InnerLoop` carries as ``adapted``:

- ``"all"`` (or ``None``): every parameter;
- ``"head"`` / ``"body"``: the head of a :class:`~metagrad.types.HeadedModule` (metagrad's
  models name theirs), or everything else;
- glob patterns of parameter names (``"head.*"``, ``["features.3.*", "head.*"]``);
- in Python, also a predicate ``name -> bool``.

Parameters left out are *held*: used as they are by every inner step, and still meta-trained
through the adapted ones.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Collection, Sequence

from torch import nn

from metagrad.errors import UsageError
from metagrad.types import HeadedModule

InnerParams = str | Sequence[str] | Callable[[str], bool] | None
WORDS = ("all", "head", "body")


def head_names(model: nn.Module, names: Collection[str]) -> set[str]:
    """The names among ``names`` that belong to the head of ``model``.

    Raises:
        UsageError: the model does not name its head (no :class:`HeadedModule`).
    """
    if not isinstance(model, HeadedModule):
        raise UsageError(
            f'inner_params "head" / "body" needs a model that names its head, but '
            f"{type(model).__name__} has no head_name and embed() (metagrad.types.HeadedModule); "
            f"give glob patterns of its parameter names instead, e.g. {_example(names)}"
        )
    prefix = model.head_name + "."
    return {k for k in names if k.startswith(prefix)}


def adapted_names(
    model: nn.Module, inner_params: InnerParams, names: Collection[str]
) -> frozenset[str] | None:
    """The names among ``names`` (the model's adaptable parameters) that ``inner_params``
    selects for the inner loop; ``None`` when it selects all.

    Raises:
        UsageError: a value of the wrong type, or a selection that matches no parameter (the
            message lists the names there are).
    """
    if inner_params is None or inner_params == "all":
        return None
    if callable(inner_params):
        chosen = {k for k in names if inner_params(k)}
    elif inner_params == "head":
        chosen = head_names(model, names)
    elif inner_params == "body":
        chosen = set(names) - head_names(model, names)
    else:
        patterns = [inner_params] if isinstance(inner_params, str) else list(inner_params)
        if not patterns or not all(isinstance(p, str) for p in patterns):
            raise UsageError(
                f'inner_params must be "all", "head", "body", glob patterns of parameter names '
                f"or a predicate, got {inner_params!r}"
            )
        chosen = {k for k in names if any(fnmatch.fnmatchcase(k, p) for p in patterns)}
    if not chosen:
        raise UsageError(
            f"inner_params {_shown(inner_params)} matches none of the model's adaptable "
            f"parameters ({_listing(names)}); choose among these names (glob patterns such as "
            f'{_example(names)}), or "all", "head" or "body"'
        )
    return None if chosen == set(names) else frozenset(chosen)


def _shown(inner_params: InnerParams) -> str:
    if callable(inner_params):
        return "(a predicate)"
    if isinstance(inner_params, str):
        return repr(inner_params)
    return repr(list(inner_params))


def _listing(names: Collection[str], most: int = 12) -> str:
    names = list(names)
    shown = ", ".join(names[:most])
    return shown + (f", ... ({len(names)} in all)" if len(names) > most else "")


def _example(names: Collection[str]) -> str:
    last = list(names)[-1] if names else "fc.weight"
    return repr(last.rsplit(".", 1)[0] + ".*")
