"""The outer loop every run shares, and the run directory it works in.

:func:`run_loop` counts the steps, reports them (:class:`metagrad.train.monitor.Monitor`),
validates, keeps the ``best`` checkpoint (highest validation metric) and saves ``last``, the same
way for supervised meta-learning (:mod:`metagrad.train.supervised`) and meta-RL
(:mod:`metagrad.train.rl_trainer`); what a step, a validation and a save do are the callables
each passes in.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metagrad.config import ExperimentConfig, TrainConfig, config_to_toml
from metagrad.train.checkpoint import (
    CheckpointError,
    CheckpointWriteError,
    intact_checkpoints,
    load_checkpoint,
)
from metagrad.train.clock import Elapsed, RunClock
from metagrad.train.distributed import ONE, Ranks, stop_agreed
from metagrad.train.io import atomic_write_text
from metagrad.train.monitor import Monitor
from metagrad.train.rundir import (
    CONFIG_FILE,
    WriteFailure,
    check_new_run,
    check_same_config,
    config_hash,
    config_identity,
    stop_requests,
)

if TYPE_CHECKING:
    from metagrad.evaluate.protocol import EvalResult
    from metagrad.train.rl_testing import RLEvalResult


class Silent:
    """The monitor of a process other than rank 0: it reports nothing."""

    def advance(self, step: int, loss: float) -> None: ...
    def log(self, step: int, split: str, metrics: dict[str, Any]) -> None: ...
    def close(self, failing: bool = False) -> None: ...


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped the run after saving ``last``; the message says how to resume."""


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


@contextmanager
def restoring(run_dir: Path) -> Iterator[None]:
    """Turn a checkpoint state that does not fit the run being restored (a crafted or foreign
    state: wrong keys, types or shapes) into one clear :class:`CheckpointError`."""
    try:
        yield
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as e:
        detail = str(e).splitlines()[0][:120] if str(e) else "no detail"
        raise CheckpointError(
            f"the checkpoint state in {run_dir} does not fit this run ({type(e).__name__}: "
            f"{detail}); it was not written by metagrad for this config: resume from another "
            "copy of the run"
        ) from None


def start_run(cfg: ExperimentConfig, run_dir: Path) -> None:
    """Create ``run_dir`` with the resolved config; refuses to overwrite another run (config,
    metrics or any checkpoint: a run is replaced only with ``--overwrite``)."""
    check_new_run(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / CONFIG_FILE, config_to_toml(cfg, header=f"metagrad run {cfg.name}"))


def config_state(cfg: ExperimentConfig) -> dict[str, Any]:
    """What every checkpoint records of its config: the values that decide its steps, hashed."""
    identity = config_identity(cfg)
    return {"config_hash": config_hash(identity), "config": identity}


def load_resume_checkpoint(
    run_dir: Path, expected: dict, cfg: ExperimentConfig
) -> tuple[dict, dict] | None:
    """The ``last`` checkpoint, or ``last.prev`` when a kill interrupted the save of ``last``
    (a consistent state one checkpoint earlier: the resumed run replays the steps after it);
    ``None`` when the run stopped before its first ``last`` (it restarts from step 0).

    Raises:
        CheckpointError: ``last`` exists but neither it nor ``last.prev`` loads, or its state
            is out of range.
        UsageError: the checkpoint was trained with another config.
    """
    if not any(run_dir.glob("last*.safetensors")):
        print(f"{run_dir} has no checkpoint yet: restarting it from step 0", flush=True)
        return None
    try:
        found = load_checkpoint(run_dir, "last", expected=expected)
    except CheckpointError as error:
        try:
            found = load_checkpoint(run_dir, "last.prev", expected=expected)
        except CheckpointError:  # the message's --checkpoint advice is for `test`, not here
            why = str(error).split(". ")[0]
            raise CheckpointError(
                f"{why}, and 'last.prev' does not load either: {run_dir} cannot be resumed; "
                f"test its other checkpoints (metagrad test {run_dir} --checkpoint best), or "
                "train again into another --out"
            ) from None
        print(
            f"'last' is incomplete ({error}); resuming from 'last.prev' at step {found[1]['step']}",
            flush=True,
        )
    check_state(run_dir, found[1], cfg)
    check_same_config(run_dir, cfg, found[1])
    return found


def check_state(run_dir: Path, state: dict, cfg: ExperimentConfig) -> None:
    """Range-check the values a resume reads from a checkpoint's state.

    Raises:
        CheckpointError: a step outside 0..train.iterations, a non-finite best metric or wall
            time, or a missing entry.
    """
    step, best = state.get("step"), state.get("best_metric")
    problem = None
    if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step <= cfg.train.iterations:
        problem = f"step {step!r} is not in 0..{cfg.train.iterations} (train.iterations)"
    elif best is not None and (not isinstance(best, (int, float)) or not math.isfinite(best)):
        problem = f"best_metric {best!r} is not a finite number"
    elif (bad := _bad_seconds(state)) is not None:
        problem = bad
    elif "rng" not in state:
        problem = "it has no random number generator state"
    if problem:
        lowered = isinstance(step, int) and step > cfg.train.iterations
        remedy = (
            f"if {CONFIG_FILE}'s train.iterations was lowered by hand, put it back to at least "
            f"{step}; else the state was not written by metagrad"
            if lowered
            else "it was not written by metagrad"
        )
        raise CheckpointError(
            f"the checkpoint state in {run_dir} is invalid: {problem}; {remedy}: resume from "
            "another copy of the run"
        )


def _bad_seconds(state: dict) -> str | None:
    for key in ("wall_seconds", "train_seconds"):
        value = state.get(key)
        if value is not None and (not isinstance(value, (int, float)) or not 0 <= value < math.inf):
            return f"{key} {value!r} is not a finite number of seconds"
    return None


def intact_hint(run_dir: Path) -> str:
    """Which checkpoints of ``run_dir`` are intact after a divergence, as a clause of its
    error message (a resume would diverge again: the config must change)."""
    found = intact_checkpoints(run_dir)
    if not found:
        return "no checkpoint was saved yet: start again with the change and --overwrite"
    names = ", ".join(f"{n!r} (step {s})" for n, s in found.items())
    return f"intact checkpoints: {names}; none holds diverged weights"


@dataclass(frozen=True)
class SinceLog:
    """What the loop measured since the previous "train" log line (or its start).

    Attributes:
        steps: steps taken.
        seconds: seconds spent.
        wall: seconds since the run started, resumes included.
        training: seconds spent in training steps, resumes included, on the run's budget clock
            (:mod:`metagrad.train.clock`).
    """

    steps: int
    seconds: float
    wall: float
    training: float


# step index (steps done so far) -> (loss shown by the progress bar, the step's log record)
TrainStep = Callable[[int], tuple[float, Callable[[SinceLog], dict[str, Any]]]]
Validate = Callable[[], tuple[float, dict[str, Any]]]  # -> (metric, higher is better; summary)
Save = Callable[[str, int, float | None, Elapsed], None]  # name, step, best, durations


def run_loop(
    run_dir: Path,
    t: TrainConfig,
    step: int,
    best: float | None,
    train_step: TrainStep,
    validate: Validate,
    save: Save,
    max_steps: int | None = None,
    clock: RunClock | None = None,
    ranks: Ranks = ONE,
) -> tuple[int, float | None]:
    """Train from ``step`` to ``t.iterations`` (or ``max_steps``, or until ``clock``'s
    training-time budget is spent), validating and saving.

    After each step: a "train" line every ``t.log_every`` steps and at the stop (the record
    ``train_step`` returned, built only then); validation every ``t.val_every`` steps, at the
    last iteration and when the budget is spent, saving ``best`` when its metric beats
    ``best``; ``last`` every ``t.checkpoint_every`` steps and at the stop, after ``best``.

    Args:
        run_dir: the run directory (``metrics.jsonl``, TensorBoard events).
        t: the config's train section.
        step: the steps already done (0, or the resumed checkpoint's).
        best: the best validation metric so far (``None``: none yet).
        train_step: takes one step.
        validate: the validation metric and the summary logged as "val".
        save: saves a checkpoint ("best" or "last") at a step, with the best metric and the
            run's durations.
        max_steps: stop after this step (the run can be resumed).
        clock: counts the run's wall and training time from those before a resume, and holds
            the training-time budget ("val" lines carry ``wall_s`` and ``train_s``); ``None``:
            a new clock from zero, without a budget.
        ranks: this process's place among the run's processes. Every process runs the loop
            (the steps, validations and saves at the same steps; ``save`` writes on rank 0
            only); rank 0 alone logs, and a stop asked of any process stops all after the
            same step.

    Returns:
        The steps done and the best validation metric.
    """
    stop = min(t.iterations, max_steps or t.iterations)
    clock = clock or RunClock()
    t_last, step_last = time.perf_counter(), step
    if clock.spent() and step < stop:
        if ranks.leader:
            print(budget_spent(run_dir, clock, step, t.iterations, "was already"), flush=True)
        return step, best
    monitor = None
    try:
        monitor = Monitor(run_dir, t.iterations, step) if ranks.leader else Silent()
        with stop_requests() as stop_request:
            while step < stop:
                with clock.training_step():
                    loss, record = train_step(step)
                step += 1
                monitor.advance(step, loss)
                stopping, spent = stop_agreed(ranks, stop_request.signal is not None, clock.spent())
                end = step == stop or spent
                if ranks.leader and (step % t.log_every == 0 or end):
                    now, elapsed = time.perf_counter(), clock.now()
                    since = SinceLog(step - step_last, now - t_last, *astuple(elapsed))
                    monitor.log(step, "train", record(since))
                    t_last, step_last = now, step
                if t.val_every and (step % t.val_every == 0 or step == t.iterations or spent):
                    metric, summary = validate()
                    elapsed = clock.now()
                    durations = {"wall_s": elapsed.wall, "train_s": elapsed.training}
                    monitor.log(step, "val", {**summary, **durations})
                    if best is None or metric > best:
                        best = metric
                        save("best", step, best, elapsed)
                due = t.checkpoint_every and step % t.checkpoint_every == 0
                if due or end or stopping:  # a stop saves its steps
                    save("last", step, best, clock.now())
                if stopping and step < stop:
                    raise Interrupted(
                        f"{stop_request.signal or 'another process was asked to stop'}: stopped at "
                        f"step {step} and saved checkpoint 'last'; continue with `metagrad "
                        f"train --resume {run_dir}`"
                    )
                if spent and step < stop:
                    if ranks.leader:
                        print(budget_spent(run_dir, clock, step, t.iterations, "is"), flush=True)
                    break
    except FloatingPointError as e:  # raised before the optimizer step: no weights diverged
        raise FloatingPointError(f"{e} ({intact_hint(run_dir)})") from None
    except CheckpointWriteError as e:  # the message lists the intact checkpoints
        raise WriteFailure(
            f"{e}; free disk space, then continue with `metagrad train --resume {run_dir}`"
        ) from None
    except OSError as e:  # metrics.jsonl: the checkpoints are untouched
        found = intact_checkpoints(run_dir)
        kept = ", ".join(f"{n!r} (step {s})" for n, s in found.items()) or "none yet"
        raise WriteFailure(
            f"writing {e.filename or run_dir} failed ({e.strerror or e}); intact checkpoints: "
            f"{kept}; free disk space, then continue with `metagrad train --resume {run_dir}`"
        ) from None
    finally:
        if monitor is not None:
            monitor.close(failing=sys.exc_info()[0] is not None)
    return step, best


def budget_spent(run_dir: Path, clock: RunClock, step: int, iterations: int, tense: str) -> str:
    """The line saying that the training-time budget stopped the run, and how to go on."""
    return (
        f"the training-time budget (train.time_budget_s = {clock.budget:g}) {tense} spent at "
        f"step {step} of {iterations}; train further with `metagrad train --resume {run_dir} "
        "--set train.time_budget_s=MORE` (or =none)"
    )
