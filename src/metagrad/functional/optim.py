"""Inner-loop optimisers as pure functions over parameter dicts.

``step`` returns new parameters and a new state; nothing is updated in place, so the update is
part of the autograd graph when the caller asks for second order (MAML) and a plain update
otherwise (FOMAML, Reptile). Both work unchanged on per-task parameters with a leading task
dimension, because every operation is elementwise.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from metagrad.errors import UsageError
from metagrad.functional.params import Params, zeros_like

# One rate, or one per parameter ({name: rate}, Meta-SGD style); a rate is a float or a
# (learnable) tensor broadcastable to its parameter.
LearningRate = float | Tensor | Mapping[str, float | Tensor]


def rate(lr: LearningRate, name: str) -> float | Tensor:
    """The learning rate of parameter ``name``."""
    return lr[name] if isinstance(lr, Mapping) else lr


def lr_schedule(inner_lr: LearningRate | Sequence[LearningRate], steps: int) -> list[LearningRate]:
    """Expand a scalar or per-step learning rate into one value per inner step.

    Args:
        inner_lr: one learning rate for all steps, or a sequence with at least ``steps`` values
            (a longer one is cut, so a training schedule can serve fewer test steps).
        steps: number of inner steps.
    """
    if isinstance(inner_lr, (numbers.Real, Tensor, Mapping)):
        return [inner_lr] * steps
    lrs = list(inner_lr)
    if len(lrs) < steps:
        raise UsageError(
            f"inner_lr gives {len(lrs)} per-step values {lrs} for {steps} inner steps; give one "
            "value per step, or a single number for all steps"
        )
    return lrs[:steps]


@dataclass(frozen=True)
class SGD:
    """Plain gradient descent: ``p - lr * g``. It has no state."""

    def init(self, params: Params) -> dict:
        return {}

    def step(self, params: Params, grads: Params, state: dict, lr: LearningRate):
        new = {k: p - rate(lr, k) * grads[k] if k in grads else p for k, p in params.items()}
        return new, state

    def sequential(self, start: dict, ends: dict, steps: int, tasks: int) -> dict:
        return {}


@dataclass(frozen=True)
class Adam:
    """Adam with bias correction (Reptile's inner optimiser uses ``betas=(0, 0.999)``).

    The state is ``{"m": Params, "v": Params, "t": {"steps": Tensor}}``: the moments and the
    number of steps taken, which the bias correction counts from. A state carried over from
    earlier tasks (Reptile's code keeps its Adam moments across tasks) may lack the task
    dimension of the parameters it updates: it broadcasts to every task.
    """

    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    def init(self, params: Params) -> dict:
        first = next(iter(params.values()), None)
        steps = torch.zeros((), dtype=torch.float32 if first is None else first.dtype)
        if first is not None:
            steps = steps.to(first.device)
        return {"m": zeros_like(params), "v": zeros_like(params), "t": {"steps": steps}}

    def step(self, params: Params, grads: Params, state: dict, lr: LearningRate):
        b1, b2 = self.betas
        m, v, new = dict(state["m"]), dict(state["v"]), dict(params)
        t = state["t"]["steps"] + 1
        c1, c2 = 1 - b1**t, 1 - b2**t  # 0-dim tensors
        for k, g in grads.items():
            m[k] = b1 * m[k] + (1 - b1) * g
            v[k] = b2 * v[k] + (1 - b2) * g * g
            new[k] = params[k] - (rate(lr, k) / c1) * m[k] / (_sqrt(v[k] / c2) + self.eps)
        return new, {"m": m, "v": v, "t": {"steps": t}}

    def sequential(self, start: dict, ends: dict, steps: int, tasks: int) -> dict:
        """The state after ``tasks`` tasks that each took ``steps`` steps from ``start`` had
        run one after the other, in order, each with the gradients it saw.

        Args:
            start: the state every task started from (without a task dimension).
            ends: each task's final state, moments with a leading task dimension ``[T, ...]``
                (a moment without it, of a parameter no task's loss used, is the same for all).
            steps: the steps each task took.
            tasks: the number of tasks ``T``.

        A moment is linear in its past: after one task it is ``d * start + c_i`` with
        ``d = beta ** steps`` and the task's own contribution ``c_i = end_i - d * start``;
        running the tasks in sequence gives ``d**T * start + sum_i d**(T-1-i) * c_i``.
        """
        out: dict = {"t": {"steps": start["t"]["steps"]}}
        for name, beta in (("m", self.betas[0]), ("v", self.betas[1])):
            decay, moments = beta**steps, {}
            for k, s in start[name].items():
                end = ends[name][k].expand(tasks, *s.shape)  # [T, ...]
                weights = decay ** torch.arange(tasks - 1, -1, -1, dtype=end.dtype)  # [T]
                weights = weights.to(end.device).reshape(-1, *[1] * s.dim())
                own = end - decay * s  # [T, ...]: what each task added
                moments[k] = decay**tasks * s + (weights * own).sum(0)
            out[name] = moments
        out["t"]["steps"] = start["t"]["steps"] + steps * tasks
        return out


def _sqrt(x: Tensor) -> Tensor:
    """``sqrt(x)`` for ``x >= 0`` whose derivative at 0 is 0 instead of inf.

    Adam's second moment is 0 where a gradient entry is 0 (a dead ReLU, an unused input), and
    differentiating through the step (second-order MAML with an Adam inner loop) would multiply
    that infinity by the zero derivative of the moment: NaN. 0 is the subgradient of the
    composite ``sqrt(c g^2) = sqrt(c) |g|`` at ``g = 0``.
    """
    positive = x > 0
    return torch.where(positive, x, 1.0).sqrt() * positive


def make_inner_optimizer(name: str, betas: tuple[float, float] = (0.9, 0.999)) -> SGD | Adam:
    """The inner optimiser called ``name`` ("sgd" or "adam")."""
    if name == "sgd":
        return SGD()
    if name == "adam":
        return Adam(betas=betas)
    raise UsageError(f"unknown inner optimizer {name!r}: expected 'sgd' or 'adam'")
