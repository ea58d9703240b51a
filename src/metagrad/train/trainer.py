"""Meta-training: the outer loop, validation, best-checkpoint selection, exact resume.

A run directory holds ``config.toml`` (the resolved config), ``metrics.jsonl``, TensorBoard
events, checkpoints ``last`` and ``best`` and, after the final test, ``results.json``. A run
stopped at any point (even ``kill -9``) resumes from ``last`` exactly: on CPU, N steps, resume
and N more give bit-identical parameters to 2N uninterrupted steps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from metagrad.config import ExperimentConfig, config_to_toml, load_config
from metagrad.evaluate.protocol import EvalResult
from metagrad.train.build import Experiment, build_experiment
from metagrad.train.checkpoint import (
    CheckpointError,
    capture_rng_state,
    intact_checkpoints,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from metagrad.train.io import atomic_write_text
from metagrad.train.monitor import Monitor
from metagrad.train.testing import run_test, validation_metric

if TYPE_CHECKING:
    from metagrad.train.rl_testing import RLEvalResult

CONFIG_FILE = "config.toml"


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    steps: int
    best_metric: float | None
    test: EvalResult | RLEvalResult | None


def make_optimizer(cfg: ExperimentConfig, params) -> torch.optim.Optimizer:
    t = cfg.train
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.outer_lr)
    return torch.optim.SGD(params, lr=t.outer_lr)


def outer_lr(cfg: ExperimentConfig, step: int) -> float:
    """The outer learning rate at ``step`` (constant, or annealed linearly to 0 as Reptile)."""
    t = cfg.train
    if t.outer_lr_schedule == "linear":
        return t.outer_lr * (1 - step / t.iterations)
    return t.outer_lr


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


def train(
    cfg: ExperimentConfig,
    run_dir: Path,
    resume: bool = False,
    test: bool = True,
    max_steps: int | None = None,
) -> TrainResult:
    """Meta-train ``cfg`` into ``run_dir`` (or resume the run there), then meta-test.

    Args:
        cfg: the experiment.
        run_dir: the run directory (see module docstring).
        resume: continue from the ``last`` checkpoint of ``run_dir``.
        test: meta-test the best (else last) checkpoint at the end.
        max_steps: stop after this step (for tests and time-boxed runs); the run can resume.
    """
    if cfg.task.kind == "rl":  # meta-RL: its own loop, the same run directory
        from metagrad.train.rl_trainer import train_rl

        return train_rl(cfg, run_dir, resume=resume, test=test, max_steps=max_steps)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    if not resume:
        refuse_existing_run(run_dir)
    exp = build_experiment(cfg)  # before the run directory: missing data leaves no run behind
    if not resume:
        start_run(cfg, run_dir)
    opt = make_optimizer(cfg, exp.model.parameters()) if _trainable(exp) else None
    step, best, wall = 0, None, 0.0
    if resume:
        step, best, wall = _restore(exp, opt, run_dir)
    t = cfg.train
    if opt is None:  # nothing to learn (the mean predictor): straight to the test
        step = t.iterations
    stop = min(t.iterations, max_steps or t.iterations)
    monitor = Monitor(run_dir, t.iterations, step)
    t_last, step_last = time.perf_counter(), step
    t_start = t_last - wall  # wall-clock seconds of training carry over resumes

    def wall_s() -> float:
        return time.perf_counter() - t_start

    try:
        while step < stop:
            for group in opt.param_groups:
                group["lr"] = outer_lr(cfg, step)
            batch = exp.train_tasks.sample(t.meta_batch_size).to(t.device)
            opt.zero_grad(set_to_none=True)
            out = exp.learner.backward(batch)
            if t.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(exp.model.parameters(), t.grad_clip)
            opt.step()
            step += 1
            loss = out.loss.item()
            if not math.isfinite(loss) and batch.query_x.shape[1] > 0:
                raise FloatingPointError(
                    f"the meta-training loss became {loss} at step {step}: lower "
                    "train.outer_lr or algorithm.inner_lr, or set train.grad_clip"
                )
            monitor.advance(step, loss)
            if step % t.log_every == 0 or step == stop:
                now = time.perf_counter()
                rate = (step - step_last) * t.meta_batch_size / (now - t_last)
                metrics = {"loss": loss, "lr": outer_lr(cfg, step - 1), "tasks_per_s": rate}
                metrics["wall_s"] = wall_s()  # since the run started, validation included
                if exp.classification:
                    acc = (out.query_out.argmax(-1) == batch.query_y).float().mean().item()
                    metrics["accuracy"] = acc
                monitor.log(step, "train", metrics)
                t_last, step_last = now, step
            if t.val_every and (step % t.val_every == 0 or step == t.iterations):
                metric, summary = validation_metric(exp)
                monitor.log(step, "val", {**summary, "wall_s": wall_s()})
                if best is None or metric > best:
                    best = metric
                    _save(exp, opt, run_dir, "best", step, best, wall_s())
            if (t.checkpoint_every and step % t.checkpoint_every == 0) or step == stop:
                _save(exp, opt, run_dir, "last", step, best, wall_s())
    finally:
        monitor.close()
    result = None
    if test and step >= t.iterations:
        result = run_test(run_dir, "best" if best is not None else "last", exp=exp)
    return TrainResult(run_dir, step, best, result)


# What a resume may change: the budget and the bookkeeping, never what the steps compute.
RESUMABLE_CHANGES = (
    "train.iterations",
    "train.val_every",
    "train.log_every",
    "train.checkpoint_every",
    "train.threads",
)


def _flat(cfg: ExperimentConfig) -> dict[str, object]:
    return {
        f"{section.name}.{key}": value
        for section in fields(cfg)
        if is_dataclass(part := getattr(cfg, section.name))
        for key, value in asdict(part).items()
    }


def resumed_config(run_dir: Path, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """The config of the run in ``run_dir``, with ``overrides`` that only extend or re-log it.

    ``--set train.iterations=N`` continues a finished or stopped run to N iterations (the
    steps already taken are unchanged, so with a constant outer learning rate the result equals
    a run started with N). Anything that would change what a step computes is refused.

    Raises:
        FileNotFoundError: ``run_dir`` is not a run directory.
        ValueError: an override outside :data:`RESUMABLE_CHANGES`, an iteration count below the
            steps already done, or a new budget under a schedule that depends on it.
    """
    cfg_path = run_dir / CONFIG_FILE
    if not cfg_path.exists():
        raise FileNotFoundError(
            f"{run_dir} has no {CONFIG_FILE}: it is not a metagrad run directory. Start a run "
            "with `metagrad train CONFIG --out RUN_DIR`."
        )
    cfg = load_config(cfg_path)
    if not overrides:
        return cfg
    new = load_config(cfg_path, overrides)
    before, after = _flat(cfg), _flat(new)
    changed = sorted(k for k in after if before.get(k) != after[k])
    refused = [k for k in changed if k not in RESUMABLE_CHANGES]
    if refused:
        raise ValueError(
            f"--resume cannot change {', '.join(refused)}: it would change what the steps "
            f"already taken compute. A resume may only set {', '.join(RESUMABLE_CHANGES)}; "
            "start a new run (metagrad train CONFIG --set ...) for anything else."
        )
    if "train.iterations" in changed:
        done = read_step(run_dir)
        if new.train.iterations < done:
            raise ValueError(
                f"--set train.iterations={new.train.iterations}, but {run_dir} has already run "
                f"{done} iterations: give at least {done}."
            )
        if done and getattr(cfg.train, "outer_lr_schedule", "constant") != "constant":
            raise ValueError(
                f"{run_dir} anneals its outer learning rate over train.iterations="
                f"{cfg.train.iterations} (outer_lr_schedule = "
                f'"{cfg.train.outer_lr_schedule}"), so a new budget would change the steps '
                "already taken; start a new run with the budget you want."
            )
    if changed:
        atomic_write_text(cfg_path, config_to_toml(new, header=f"metagrad run {new.name}"))
        print(f"{run_dir}: {', '.join(f'{k} = {after[k]}' for k in changed)}", flush=True)
    return new


def read_step(run_dir: Path) -> int:
    """The step a resume of ``run_dir`` starts from (0 before the first checkpoint)."""
    found = intact_checkpoints(run_dir)
    return max((found[n] for n in ("last", "last.prev") if n in found), default=0)


def resume_run(run_dir: Path, overrides: Sequence[str] = (), **kw) -> TrainResult:
    """Resume the run in ``run_dir`` with the config it was started with.

    Args:
        run_dir: the run directory.
        overrides: ``--set`` values a resume may change (see :func:`resumed_config`), e.g.
            ``["train.iterations=20000"]`` to train a finished run further.
        **kw: passed to :func:`train`.
    """
    return train(resumed_config(run_dir, overrides), run_dir, resume=True, **kw)


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


def _trainable(exp: Experiment) -> bool:
    return hasattr(exp.learner, "backward")


def _save(
    exp: Experiment, opt, run_dir: Path, name: str, step: int, best: float | None, wall: float
):
    generators = {"reptile": exp.learner.generator} if _reptile_gen(exp) else {}
    state = {
        "step": step,
        "optimizer": opt.state_dict(),
        "rng": capture_rng_state(),
        "sampler": exp.train_tasks.state_dict(),
        "best_metric": best,
        "wall_seconds": wall,
        "torch_generators": {k: g.get_state() for k, g in generators.items()},
        "learner": exp.learner.state_dict(),
    }
    save_checkpoint(run_dir, name, exp.model.state_dict(), state)


def _reptile_gen(exp: Experiment) -> bool:
    return getattr(exp.learner, "generator", None) is not None


def _restore(exp: Experiment, opt, run_dir: Path) -> tuple[int, float | None, float]:
    weights, state = load_resume_checkpoint(run_dir, exp.model.state_dict())
    exp.model.load_state_dict(weights)
    if opt is not None:
        opt.load_state_dict(state["optimizer"])
    restore_rng_state(state["rng"])
    exp.train_tasks.load_state_dict(state["sampler"])
    for name, s in state.get("torch_generators", {}).items():
        if name == "reptile" and _reptile_gen(exp):
            exp.learner.generator.set_state(s)
    exp.learner.load_state_dict(state.get("learner", {}))
    return state["step"], state["best_metric"], state.get("wall_seconds", 0.0)
