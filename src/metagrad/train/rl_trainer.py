"""Meta-training of RL experiments: what one step of the shared
:func:`metagrad.train.loop.run_loop` does, and what its checkpoints hold.

``metagrad train configs/rl/maml_trpo_nav2d.toml`` lands here (through
:func:`metagrad.train.trainer.train`, which dispatches on ``cfg.task.kind == "rl"``). A step is
one MAML-TRPO meta-iteration (or, for the pretrained baseline, one multi-task TRPO iteration)
on a meta-batch of tasks. The run directory holds the same files as a supervised run's:

- ``config.toml``: the resolved config;
- ``metrics.jsonl`` and TensorBoard events: per logged meta-iteration ("train") the return
  before and after adaptation, the surrogate loss, the KL, the line search's outcome and the
  seconds spent ``time_sampling`` / ``time_adaptation`` / ``time_conjugate_gradient`` /
  ``time_line_search`` / ``time_total`` (for MuJoCo, ``time_env_workers`` simulating, in
  this process or the slowest worker's, and ``time_env_ipc`` talking to the workers, 0 in
  process, both within sampling); per validation ("val") the return before and after each of
  the test's adaptation steps on fixed validation tasks, their mean over the steps (the metric
  that picks ``best``) and its wall time;
- checkpoints ``last`` and ``best`` (highest validation return over the adaptation steps)
  holding the policy parameters as weights and the step, the best metric and the states of
  every random number generator (the global ones and the generator all sampling draws from);
- ``results.json`` after the final test (:mod:`metagrad.train.rl_testing`).

A stopped run resumes exactly: on CPU with one thread, N iterations, resume and N more give
bit-identical parameters to 2N uninterrupted ones (validation draws from its own fixed
generator, so it never shifts the training stream).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from metagrad.config import ExperimentConfig, selection_score, val_metric
from metagrad.functional.params import Params, detached
from metagrad.train.checkpoint import (
    capture_rng_state,
    restore_rng_state,
    save_checkpoint,
)
from metagrad.train.clock import Elapsed, RunClock
from metagrad.train.loop import (
    SinceLog,
    TrainResult,
    config_state,
    load_resume_checkpoint,
    restoring,
    run_loop,
    start_run,
)
from metagrad.train.rl_build import RLExperiment, build_rl_experiment
from metagrad.train.rl_testing import run_rl_test, validate

TIMED = ("sampling", "adaptation", "processing", "conjugate_gradient", "line_search", "total")


def iteration_metrics(stats: dict[str, Any], env_time: dict[str, float]) -> dict[str, Any]:
    """The flat ``metrics.jsonl`` record of one iteration's statistics.

    Args:
        stats: what :func:`metagrad.rl.maml_trpo.meta_iteration` (or the pretrained baseline's
            iteration) returned.
        env_time: seconds spent in the environment workers during the iteration, by name.
    """
    metrics: dict[str, Any] = {"return_before": stats["return_before"]}
    if "return_after" in stats:
        metrics["return_after"] = stats["return_after"]
    returns = stats.get("returns", [])
    if len(returns) > 2:  # several inner steps: the return after each
        metrics.update({f"return_step{k}": r for k, r in enumerate(returns)})
    for key in ("loss_before", "loss_after", "kl", "step_fraction", "accepted"):
        metrics[key] = stats[key]
    metrics.update({f"time_{k}": v for k, v in stats["time"].items() if k in TIMED})
    metrics.update({f"time_{k}": v for k, v in env_time.items()})
    return metrics


def _env_clock(exp: RLExperiment) -> dict[str, float]:
    """Cumulative seconds the environment workers spent simulating and communicating."""
    stats = getattr(exp.env, "stats", None)
    if not stats:
        return {}
    return {"env_workers": stats["worker_s"], "env_ipc": stats["round_trip_s"] - stats["worker_s"]}


def train_rl(
    cfg: ExperimentConfig, run_dir: Path, resume: bool, test: bool, max_steps: int | None
) -> TrainResult:
    """Meta-train the RL experiment ``cfg`` into ``run_dir`` (or resume it), then meta-test.

    Arguments and result as :func:`metagrad.train.trainer.train`'s; the test result is a
    :class:`metagrad.train.rl_testing.RLEvalResult`.
    """
    if not resume:
        start_run(cfg, run_dir)
    t = cfg.train
    with build_rl_experiment(cfg) as exp:
        theta = exp.initial_theta()
        generator = torch.Generator().manual_seed(cfg.seed)  # tasks, actions and resets
        step, best, elapsed = 0, None, Elapsed(0.0, 0.0)
        if resume:
            theta, step, best, elapsed = _restore(exp, generator, run_dir, cfg, theta)
        clock = RunClock(elapsed, t.budget_clock, t.time_budget_s)

        def train_step(done: int) -> tuple[float, Callable[[SinceLog], dict[str, Any]]]:
            nonlocal theta
            theta, stats = _iteration(exp, theta, generator)
            return stats["loss_after"], lambda since: stats

        def save(name: str, step: int, best: float | None, elapsed: Elapsed) -> None:
            state = {**config_state(cfg), **elapsed.state()}
            _save(run_dir, name, theta, generator, step, best, state)

        step, best = run_loop(
            run_dir,
            t,
            step,
            best,
            train_step,
            lambda: _validate(exp, theta),
            save,
            max_steps,
            clock,
        )
        result = None
        if test and (step >= t.iterations or clock.spent()):
            checkpoint = "best" if best is not None else "last"
            result = run_rl_test(run_dir, checkpoint, cfg=cfg, exp=exp)
    return TrainResult(run_dir, step, best, result)


def _iteration(
    exp: RLExperiment, theta: Params, generator: torch.Generator
) -> tuple[Params, dict[str, Any]]:
    clock = _env_clock(exp)
    tasks = exp.family.sample_tasks(exp.cfg.train.meta_batch_size, generator)
    theta, stats = exp.iteration(theta, tasks, generator)
    env_time = {k: v - clock[k] for k, v in _env_clock(exp).items()}
    metrics = iteration_metrics(stats, env_time)
    if not math.isfinite(metrics["return_before"]):
        raise FloatingPointError(
            f"the episode return became {metrics['return_before']}: lower algorithm.max_kl or "
            "the inner step size (algorithm.inner_lr)"
        )
    return theta, metrics


def _validate(exp: RLExperiment, theta: Params) -> tuple[float, dict[str, float]]:
    """The validation metric and its summary.

    The metric (higher is better) is the return after the test's last adaptation step or its
    mean over the steps 1..K (``train.val_metric``; "auto" is the mean for RL); the summary
    has the return after each step (``return_step1``...), ``return_after`` after the first
    (the quantity training monitors) and its interval.
    """
    result = validate(exp, theta)
    steps = result.returns.shape[0] - 1
    summary = {"return_before": result.mean_return(0).mean}
    adapted = [result.mean_return(k) for k in range(1, steps + 1)]
    for k, s in enumerate(adapted, 1):
        summary[f"return_step{k}"] = s.mean
    if adapted:
        summary.update(return_after=adapted[0].mean, return_after_ci95=adapted[0].ci95)
    scores = {k: result.mean_return(k).mean for k in range(steps + 1)}
    adapted_mean = selection_score(scores, "mean")
    summary.update(return_adapted_mean=adapted_mean, time=result.seconds)
    return selection_score(scores, val_metric(exp.cfg)), summary


def _save(
    run_dir: Path,
    name: str,
    theta: Params,
    generator: torch.Generator,
    step: int,
    best: float | None,
    recorded: dict[str, Any],
) -> None:
    state = {
        "step": step,
        "rng": capture_rng_state(),
        "generator": generator.get_state(),
        "best_metric": best,
        **recorded,
    }
    save_checkpoint(run_dir, name, detached(theta), state)


def _restore(
    exp: RLExperiment, generator: torch.Generator, run_dir: Path, cfg: ExperimentConfig, theta
) -> tuple[Params, int, float | None, Elapsed]:
    found = load_resume_checkpoint(run_dir, exp.policy.state_dict(), cfg)
    if found is None:  # stopped before its first checkpoint: start again
        return theta, 0, None, Elapsed(0.0, 0.0)
    weights, state = found
    with restoring(run_dir):
        restore_rng_state(state["rng"])
        generator.set_state(state["generator"])
    return exp.as_theta(weights), state["step"], state["best_metric"], Elapsed.from_state(state)
