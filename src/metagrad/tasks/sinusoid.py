"""Few-shot sinusoid regression, exactly as the MAML paper (section 5.1).

A task is ``y = A * sin(x - phase)`` with ``A ~ U[0.1, 5]``, ``phase ~ U[0, pi]``; its inputs
are ``x ~ U[-5, 5]``. Support and query points are drawn independently from the same task.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from metagrad.types import TaskBatch


@dataclass(frozen=True)
class SinusoidTasks:
    """The sinusoid task family.

    Attributes:
        amplitude: range of the amplitude ``A``.
        phase: range of the phase.
        x_range: range of the inputs.
    """

    amplitude: tuple[float, float] = (0.1, 5.0)
    phase: tuple[float, float] = (0.0, math.pi)
    x_range: tuple[float, float] = (-5.0, 5.0)

    def draw(
        self, rng: np.random.Generator, tasks: int, shots: int, queries: int
    ) -> tuple[TaskBatch, np.ndarray]:
        """Draw ``tasks`` tasks with ``shots`` support and ``queries`` query points each.

        Returns:
            The meta-batch (``x``, ``y`` as ``[tasks, points, 1]`` float32) and the tasks'
            ``[tasks, 2]`` (amplitude, phase), e.g. to plot the true curves.
        """
        amp = rng.uniform(*self.amplitude, size=(tasks, 1, 1))
        phase = rng.uniform(*self.phase, size=(tasks, 1, 1))
        x = rng.uniform(*self.x_range, size=(tasks, shots + queries, 1))
        y = amp * np.sin(x - phase)
        x, y = torch.from_numpy(x).float(), torch.from_numpy(y).float()
        batch = TaskBatch(x[:, :shots], y[:, :shots], x[:, shots:], y[:, shots:])
        return batch, np.concatenate([amp, phase], axis=-1).reshape(tasks, 2)

    def mean_curve(self, x: torch.Tensor) -> torch.Tensor:
        """``E[y | x]`` over the task distribution: what regression on all tasks converges to.

        ``E[A] * E[sin(x - phase)]`` with ``E_phase[sin(x - p)] = (cos(x - b) - cos(x - a)) /
        (b - a)`` for ``phase ~ U[a, b]``.
        """
        a, b = self.phase
        mean_amp = sum(self.amplitude) / 2
        if b == a:
            return mean_amp * torch.sin(x - a)
        return mean_amp * (torch.cos(x - b) - torch.cos(x - a)) / (b - a)

    @staticmethod
    def curve(params: np.ndarray, x: np.ndarray) -> np.ndarray:
        """The true ``y`` of tasks ``params [tasks, 2]`` at inputs ``x [points]``."""
        return params[:, :1] * np.sin(x[None, :] - params[:, 1:])


class TaskStream:
    """Training tasks from a seeded, checkpointable random stream.

    Args:
        family: anything with ``draw(rng, tasks, shots, queries)``.
        shots: support points (or examples per class) per task.
        queries: query points per task.
        seed: seed of the stream.
    """

    def __init__(self, family: SinusoidTasks, shots: int, queries: int, seed: int) -> None:
        self.family, self.shots, self.queries = family, shots, queries
        self.rng = np.random.default_rng(seed)

    def sample(self, tasks: int) -> TaskBatch:
        """The next ``tasks`` tasks of the stream."""
        return self.family.draw(self.rng, tasks, self.shots, self.queries)[0]

    def state_dict(self) -> dict:
        """The stream's position, as JSON-able data."""
        return self.rng.bit_generator.state

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state


def fixed_tasks(
    family: SinusoidTasks, seed: int, start: int, count: int, shots: int, queries: int
) -> tuple[TaskBatch, np.ndarray]:
    """Evaluation tasks ``start .. start+count-1``; task ``i`` is a pure function of
    ``(seed, i)``, so every run and every chunking sees the same tasks."""
    draws = [
        family.draw(np.random.default_rng([seed, i]), 1, shots, queries)
        for i in range(start, start + count)
    ]
    batch = TaskBatch(
        *(
            torch.cat(parts)
            for parts in zip(*((b.support_x, b.support_y, b.query_x, b.query_y) for b, _ in draws))
        )
    )
    return batch, np.concatenate([p for _, p in draws])
