"""MAML++'s per-step BatchNorm (Antoniou et al., 2019, sections 4 BNWB and BNRS).

- **BNWB**: every BatchNorm layer has a scale and shift per inner step, ``[steps, C]``,
  meta-learned: step ``s``'s support loss uses row ``s``, and so does the query loss after step
  ``s + 1`` (as the paper's code). They are not adapted in the inner loop.
- **BNRS**: every BatchNorm layer with running statistics keeps them per inner step,
  ``[steps, C]``: in ``train()`` mode step ``s``'s support forward pass updates row ``s``; in
  ``eval()`` mode (meta-testing) step ``s`` normalises with row ``s``.

The policy, explicitly: BNRS needs BatchNorm that keeps running statistics (``norm =
"running"``: torch's BatchNorm, updated in place task by task, so the per-task loop is its only
path). The paper's code collects per-step statistics but normalises with the current batch's
at test time too (``F.batch_norm(..., training=True)`` in ``MetaBatchNormLayer``), so they
never change an output there: metagrad's ``norm = "transductive"`` *is* that behaviour, and the
shipped MAML++ configs use it with BNWB alone. Only the support passes feed the statistics here
(the query passes of a meta-batch do not), so that a step's statistics are those of the data
its adaptation step sees.

The model is untouched: the per-step tensors are the learner's (its meta-parameters and
``state_dict``), handed to the inner loop as ``InnerLoop.per_step``, which overrides the
layers' own weights or buffers of the same name at each step.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from metagrad.errors import UsageError
from metagrad.types import Params


def norm_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The BatchNorm layers of ``model`` by name: ``torch.nn`` BatchNorm, and metagrad's
    transductive ``BatchNorm`` (found by class name: the core does not import the models)."""
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) or type(m).__name__ == "BatchNorm"
    }


def per_step_weights(model: nn.Module, steps: int) -> Params:
    """BNWB: ``{"<layer>.weight": [steps, C], "<layer>.bias": [steps, C]}`` for every
    BatchNorm layer's learnable scale and shift, each row starting at the layer's value.

    Raises:
        UsageError: the model has no BatchNorm layer with a learnable scale or shift.
    """
    found: Params = {}
    for name, layer in norm_layers(model).items():
        for kind in ("weight", "bias"):
            p = getattr(layer, kind, None)
            if isinstance(p, Tensor) and p.requires_grad:
                rows = p.detach().unsqueeze(0).repeat(steps, *[1] * p.dim())
                found[f"{name}.{kind}"] = rows.requires_grad_()
    if not found:
        raise UsageError(
            f"per_step_bn_weights needs BatchNorm layers with a learnable scale and shift, but "
            f"{type(model).__name__} has none; use a model with BatchNorm (norm = "
            '"transductive" or "running"), or turn per_step_bn_weights off'
        )
    return found


def per_step_stats(model: nn.Module, steps: int) -> Params:
    """BNRS: ``{"<layer>.running_mean": [steps, C], "<layer>.running_var": [steps, C]}`` for
    every BatchNorm layer that keeps running statistics, each row a copy of the layer's.

    Raises:
        UsageError: the model keeps no running statistics.
    """
    found: Params = {}
    for name, layer in norm_layers(model).items():
        for kind in ("running_mean", "running_var"):
            buffer = getattr(layer, kind, None)
            if isinstance(buffer, Tensor):
                found[f"{name}.{kind}"] = buffer.detach().unsqueeze(0).repeat(steps, 1)
    if not found:
        raise UsageError(
            "per_step_bn_stats keeps BatchNorm running statistics per inner step, but "
            f"{type(model).__name__} keeps none (its BatchNorm is transductive); use norm = "
            '"running" (the per-task loop path), or turn per_step_bn_stats off'
        )
    return found


def at_steps(tensors: Params, steps: int) -> tuple[Params, ...]:
    """One dict per step: row ``s`` of every per-step tensor (views: gradients and in-place
    running-statistic updates reach the tensors themselves)."""
    if not tensors:
        return ()
    return tuple({k: t[s] for k, t in tensors.items()} for s in range(steps))


def copy_into(tensors: Params, saved: Params, what: str) -> None:
    """Copy ``saved`` into ``tensors`` in place (optimisers keep referring to them).

    Raises:
        ValueError: names or shapes differ (the state was saved by another configuration).
    """
    if set(saved) != set(tensors):
        raise ValueError(
            f"the checkpoint's {what} are for {sorted(saved)[:4]}..., this learner's for "
            f"{sorted(tensors)[:4]}...: it was saved with another model or configuration; test "
            "it with its own run's config.toml"
        )
    with torch.no_grad():
        for k, t in tensors.items():
            if saved[k].shape != t.shape:
                raise ValueError(
                    f"the checkpoint's {what} {k!r} has shape {list(saved[k].shape)}, this "
                    f"learner's {list(t.shape)}: it was saved with another configuration"
                )
            t.copy_(saved[k])
