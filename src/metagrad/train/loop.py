"""The outer loop every run shares, and the run directory it works in.

:func:`run_loop` counts the steps, reports them (:class:`metagrad.train.monitor.Monitor`),
validates, keeps the ``best`` checkpoint (highest validation metric) and saves ``last``, the same
way for supervised meta-learning (:mod:`metagrad.train.supervised`) and meta-RL
(:mod:`metagrad.train.rl_trainer`); what a step, a validation and a save do are the callables
each passes in.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metagrad.config import ExperimentConfig, TrainConfig, config_to_toml
from metagrad.train.checkpoint import CheckpointError, load_checkpoint
from metagrad.train.io import atomic_write_text
from metagrad.train.monitor import Monitor

if TYPE_CHECKING:
    from metagrad.evaluate.protocol import EvalResult
    from metagrad.train.rl_testing import RLEvalResult

CONFIG_FILE = "config.toml"


@dataclass(frozen=True)
class TrainResult:
    """What a training run did.

    Attributes:
        run_dir: the run directory.
        steps: the steps (meta-iterations) done, counting those before a resume.
        best_metric: the best validation metric (``None`` without validation).
        test: the final meta-test's result, if it ran.
    """

    run_dir: Path
    steps: int
    best_metric: float | None
    test: EvalResult | RLEvalResult | None


def refuse_existing_run(run_dir: Path) -> None:
    """Raise ``FileExistsError`` if ``run_dir`` already holds a run (it is never overwritten)."""
    if (run_dir / CONFIG_FILE).exists():
        raise FileExistsError(
            f"{run_dir} already holds a run. Resume it with `metagrad train --resume "
            f"{run_dir}`, or choose another directory with --out."
        )


def start_run(cfg: ExperimentConfig, run_dir: Path) -> None:
    """Create ``run_dir`` with the resolved config; refuses to overwrite another run."""
    refuse_existing_run(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / CONFIG_FILE, config_to_toml(cfg, header=f"metagrad run {cfg.name}"))


def load_resume_checkpoint(run_dir: Path, expected: dict) -> tuple[dict, dict]:
    """The ``last`` checkpoint, or ``last.prev`` when a kill interrupted the save of ``last``
    (a consistent state one checkpoint earlier: the resumed run replays the steps after it)."""
    try:
        return load_checkpoint(run_dir, "last", expected=expected)
    except CheckpointError as error:
        try:
            found = load_checkpoint(run_dir, "last.prev", expected=expected)
        except CheckpointError:
            raise error from None
        print(
            f"'last' is incomplete ({error}); resuming from 'last.prev' at step {found[1]['step']}",
            flush=True,
        )
        return found


@dataclass(frozen=True)
class SinceLog:
    """What the loop measured since the previous "train" log line (or its start).

    Attributes:
        steps: steps taken.
        seconds: seconds spent.
        wall: seconds since the run started, resumes included (``None``: not tracked).
    """

    steps: int
    seconds: float
    wall: float | None


# step index (steps done so far) -> (loss shown by the progress bar, the step's log record)
TrainStep = Callable[[int], tuple[float, Callable[[SinceLog], dict[str, Any]]]]
Validate = Callable[[], tuple[float, dict[str, Any]]]  # -> (metric, higher is better; summary)
Save = Callable[[str, int, float | None, float | None], None]  # name, step, best, wall


def run_loop(
    run_dir: Path,
    t: TrainConfig,
    step: int,
    best: float | None,
    train_step: TrainStep,
    validate: Validate,
    save: Save,
    max_steps: int | None = None,
    wall: float | None = None,
) -> tuple[int, float | None]:
    """Train from ``step`` to ``t.iterations`` (or ``max_steps``), validating and saving.

    After each step: a "train" line every ``t.log_every`` steps and at the stop (the record
    ``train_step`` returned, built only then); validation every ``t.val_every`` steps and at
    the last iteration, saving ``best`` when its metric beats ``best``; ``last`` every
    ``t.checkpoint_every`` steps and at the stop, after ``best``.

    Args:
        run_dir: the run directory (``metrics.jsonl``, TensorBoard events).
        t: the config's train section.
        step: the steps already done (0, or the resumed checkpoint's).
        best: the best validation metric so far (``None``: none yet).
        train_step: takes one step.
        validate: the validation metric and the summary logged as "val".
        save: saves a checkpoint ("best" or "last") at a step, with the best metric and the
            wall time.
        max_steps: stop after this step (the run can be resumed).
        wall: track the wall-clock time of the run, starting from these seconds (those of the
            steps before a resume); "val" lines then carry ``wall_s``. ``None``: untracked.

    Returns:
        The steps done and the best validation metric.
    """
    stop = min(t.iterations, max_steps or t.iterations)
    monitor = Monitor(run_dir, t.iterations, step)
    t_last, step_last = time.perf_counter(), step
    t_start = t_last - (wall or 0.0)  # wall-clock seconds of training carry over resumes

    def wall_s() -> float | None:
        return None if wall is None else time.perf_counter() - t_start

    try:
        while step < stop:
            loss, record = train_step(step)
            step += 1
            monitor.advance(step, loss)
            if step % t.log_every == 0 or step == stop:
                now = time.perf_counter()
                monitor.log(
                    step, "train", record(SinceLog(step - step_last, now - t_last, wall_s()))
                )
                t_last, step_last = now, step
            if t.val_every and (step % t.val_every == 0 or step == t.iterations):
                metric, summary = validate()
                monitor.log(
                    step, "val", summary if wall is None else {**summary, "wall_s": wall_s()}
                )
                if best is None or metric > best:
                    best = metric
                    save("best", step, best, wall_s())
            if (t.checkpoint_every and step % t.checkpoint_every == 0) or step == stop:
                save("last", step, best, wall_s())
    finally:
        monitor.close()
    return step, best
