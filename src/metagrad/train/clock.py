"""The time a run has spent, carried across resumes, and its training-time budget.

A run counts two durations:

- ``wall``: seconds since the run started, validations, saves and pauses included (what
  ``metrics.jsonl``'s ``wall_s`` has always shown);
- ``training``: seconds spent inside training steps only, on the clock ``train.budget_clock``
  names: ``"wall"`` (elapsed time) or ``"cpu"`` (the process's CPU time, every thread
  counted). Validation is left out so that algorithms whose validation costs differ are
  compared on what training them costs; the CPU clock also leaves out the time the process
  waited for a core, so a run paused (``kill -STOP``) or sharing the machine is charged only
  for its own work.

``train.time_budget_s`` stops a run once ``training`` reaches it: the question "which algorithm
gets furthest in the hour I have" (issue 17's comparisons) is a run per algorithm with the same
budget. Both durations are saved in every checkpoint, so a resumed run continues its count.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


@dataclass(frozen=True)
class Elapsed:
    """The durations of a run at one moment, as a checkpoint records them.

    Attributes:
        wall: seconds since the run started, resumes included.
        training: seconds spent in training steps, on the run's budget clock.
    """

    wall: float
    training: float

    def state(self) -> dict[str, float]:
        """The entries a checkpoint's state holds."""
        return {"wall_seconds": self.wall, "train_seconds": self.training}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Elapsed:
        """The durations a checkpoint recorded (0 for a checkpoint older than the entry)."""
        return cls(state.get("wall_seconds") or 0.0, state.get("train_seconds") or 0.0)


class RunClock:
    """Counts a run's wall and training time from those of the steps before a resume.

    Args:
        start: the durations already spent (a resumed checkpoint's; zero for a new run).
        kind: the clock that measures training time, ``"wall"`` or ``"cpu"``.
        budget: stop once the training time reaches this many seconds (``None``: no budget).
        wall_clock / training_clock: the clocks read (injected by the tests).
    """

    def __init__(
        self,
        start: Elapsed = Elapsed(0.0, 0.0),
        kind: Literal["wall", "cpu"] = "wall",
        budget: float | None = None,
        wall_clock: Callable[[], float] = time.perf_counter,
        training_clock: Callable[[], float] | None = None,
    ) -> None:
        self.budget = budget
        self._wall_clock = wall_clock
        self._training_clock = training_clock or CLOCKS[kind]
        self._wall_start = wall_clock() - start.wall
        self._training = start.training

    @contextmanager
    def training_step(self) -> Iterator[None]:
        """Charge the time spent inside the ``with`` block to the run's training time."""
        began = self._training_clock()
        try:
            yield
        finally:
            self._training += self._training_clock() - began

    def now(self) -> Elapsed:
        """The durations so far."""
        return Elapsed(self._wall_clock() - self._wall_start, self._training)

    def spent(self) -> bool:
        """Whether the training time has reached the budget."""
        return self.budget is not None and self._training >= self.budget
