"""Supervised meta-training (sinusoid regression, Omniglot): what one step of the shared
:func:`metagrad.train.loop.run_loop` does, and what its checkpoints hold.

A step samples a meta-batch, lets the meta-learner write the meta-gradient into ``.grad`` and
takes the outer optimizer's step (learning rate constant or annealed linearly to 0, gradient
norm optionally clipped); a loss that is no longer finite stops the run. A checkpoint holds the
model's weights and the optimizer, sampler, learner and random-number-generator states, so a
resumed run is bit-identical to an uninterrupted one on CPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

from metagrad.algorithms.mamlpp import schedule_point
from metagrad.algorithms.paths import has_running_stats
from metagrad.config import ExperimentConfig
from metagrad.errors import UsageError
from metagrad.train.build import Experiment, build_experiment
from metagrad.train.checkpoint import (
    capture_rng_state,
    on_device,
    restore_rng_state,
    save_checkpoint,
)
from metagrad.train.clock import Elapsed, RunClock
from metagrad.train.distributed import ONE, Ranks, share, together
from metagrad.train.loop import (
    SinceLog,
    TrainResult,
    config_state,
    load_resume_checkpoint,
    restoring,
    run_loop,
    start_run,
)
from metagrad.train.path_record import record_paths
from metagrad.train.preprocessing import record_preprocessing
from metagrad.train.rundir import check_new_run
from metagrad.train.sharding import autocasting, sharded_backward
from metagrad.train.testing import run_test, validation_metric


def make_outer_optimizer(cfg: ExperimentConfig, params) -> torch.optim.Optimizer:
    """The outer optimizer of ``cfg.train`` (Adam or SGD at ``train.outer_lr``) on ``params``."""
    t = cfg.train
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.outer_lr)
    return torch.optim.SGD(params, lr=t.outer_lr)


def outer_lr(cfg: ExperimentConfig, step: int) -> float:
    """The outer learning rate at ``step``: constant, annealed linearly to 0 (Reptile), or
    cosine-annealed from ``outer_lr`` to ``min_outer_lr`` over ``train.iterations`` (MAML++'s
    CA), moving once every ``train.schedule_every`` iterations (MAML++'s code: once per
    500-iteration epoch)."""
    t = cfg.train
    step = schedule_point(step, t.schedule_every)
    if t.outer_lr_schedule == "linear":
        return t.outer_lr * (1 - step / t.iterations)
    if t.outer_lr_schedule == "cosine":
        cosine = (1 + math.cos(math.pi * step / t.iterations)) / 2
        return t.min_outer_lr + (t.outer_lr - t.min_outer_lr) * cosine
    return t.outer_lr


def train_supervised(
    cfg: ExperimentConfig,
    run_dir: Path,
    resume: bool,
    test: bool,
    max_steps: int | None,
    ranks: Ranks = ONE,
) -> TrainResult:
    """Meta-train the supervised experiment ``cfg`` into ``run_dir`` (or resume it), then test.

    Arguments as :func:`metagrad.train.trainer.train`'s; ``ranks``: this process's place
    among the run's processes, which split each meta-batch's tasks
    (:mod:`metagrad.train.sharding`) and the evaluations' chunks; rank 0 alone writes.
    """
    if not resume and ranks.leader:
        check_new_run(run_dir)
    with together(ranks):  # before the run directory: missing data leaves no run behind
        exp = build_experiment(cfg, ranks)
        check_shardable(exp)
    if not resume:
        with together(ranks):
            if ranks.leader:
                start_run(cfg, run_dir)
                record_preprocessing(cfg, run_dir)  # how images become inputs, for metagrad.load
    # The learner's parameters: the model's, then what it learns itself (learnable inner
    # learning rates, per-step BatchNorm weights), which its state_dict checkpoints.
    opt = make_outer_optimizer(cfg, exp.learner.parameters()) if _trainable(exp) else None
    step, best, elapsed = 0, None, Elapsed(0.0, 0.0)
    if resume:
        step, best, elapsed = _restore(exp, opt, run_dir, cfg)
    record_paths(exp.learner, run_dir, ranks, resume)  # "auto": measured once, kept in path.json
    t = cfg.train
    clock = RunClock(elapsed, t.budget_clock, t.time_budget_s)
    if opt is None:  # nothing to learn (the mean predictor): straight to the test
        step = t.iterations

    def train_step(done: int) -> tuple[float, Callable[[SinceLog], dict[str, Any]]]:
        for group in opt.param_groups:
            group["lr"] = outer_lr(cfg, done)
        # The whole meta-batch, drawn alike by every process, which keeps its block of tasks.
        batch = exp.train_tasks.sample(t.meta_batch_size)
        opt.zero_grad(set_to_none=True)
        with autocasting(exp.device, t.precision):
            got = sharded_backward(
                exp.learner, batch, ranks, t.reduce, exp.classification, exp.device
            )
        loss = got.loss
        # Checked before the optimizer's step, so diverged weights never reach a checkpoint.
        if not math.isfinite(loss) and batch.query_x.shape[1] > 0:
            raise FloatingPointError(
                f"the meta-training loss became {loss} at step {done + 1}, so training stopped "
                "before that step: lower train.outer_lr or algorithm.inner_lr, or set "
                "train.grad_clip"
            )
        if t.grad_clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(list(exp.learner.parameters()), t.grad_clip)
        else:
            norm = _grad_norm(exp.learner.parameters())
        if not math.isfinite(norm):
            raise FloatingPointError(
                f"the meta-gradient became {norm} at step {done + 1}, so training stopped "
                "before that step: lower train.outer_lr or algorithm.inner_lr, or set "
                "train.grad_clip"
            )
        opt.step()

        def record(since: SinceLog) -> dict[str, Any]:
            rate = since.steps * t.meta_batch_size / since.seconds  # every process's tasks
            metrics = {"loss": loss, "lr": outer_lr(cfg, done), "tasks_per_s": rate}
            metrics["wall_s"] = since.wall  # since the run started, validation included
            metrics["train_s"] = since.training  # in training steps only (the budget's clock)
            if exp.classification:
                metrics["accuracy"] = got.accuracy
            return metrics

        return loss, record

    save = partial(_save, exp, opt, run_dir, config_state(cfg))
    validate = partial(validation_metric, exp)
    step, best = run_loop(
        run_dir, t, step, best, train_step, validate, save, max_steps, clock, ranks
    )
    result = None
    if test and (step >= t.iterations or clock.spent()):
        result = run_test(run_dir, "best" if best is not None else "last", exp=exp)
    return TrainResult(run_dir, step, best, result)


def _grad_norm(params) -> float:
    grads = [p.grad.detach().norm() for p in params if p.grad is not None]
    return torch.stack(grads).norm().item() if grads else 0.0


def _trainable(exp: Experiment) -> bool:
    return hasattr(exp.learner, "backward")


def _save(
    exp: Experiment,
    opt,
    run_dir: Path,
    config: dict[str, Any],
    name: str,
    step: int,
    best: float | None,
    elapsed: Elapsed,
) -> None:
    if not exp.ranks.leader:  # the state is the same in every process: rank 0 writes it
        return
    generators = {"reptile": exp.learner.generator} if _reptile_gen(exp) else {}
    state = {
        "step": step,
        "optimizer": opt.state_dict(),
        "rng": capture_rng_state(),
        "sampler": exp.train_tasks.state_dict(),
        "best_metric": best,
        **elapsed.state(),
        "torch_generators": {k: g.get_state() for k, g in generators.items()},
        "learner": exp.learner.state_dict(),
        **config,
    }
    save_checkpoint(run_dir, name, exp.model.state_dict(), state)


def _reptile_gen(exp: Experiment) -> bool:
    return getattr(exp.learner, "generator", None) is not None


def _restore(
    exp: Experiment, opt, run_dir: Path, cfg: ExperimentConfig
) -> tuple[int, float | None, Elapsed]:
    expected = exp.model.state_dict()
    # Rank 0 reads the checkpoint; every process restores the same state from it (on its own
    # device: a checkpoint holds CPU tensors), whatever the number of processes that saved it.
    found = share(exp.ranks, lambda: load_resume_checkpoint(run_dir, expected, cfg))
    if found is None:  # stopped before its first checkpoint: start again
        return 0, None, Elapsed(0.0, 0.0)
    weights, state = found
    with together(exp.ranks), restoring(run_dir):
        exp.model.load_state_dict(weights)
        if opt is not None:
            opt.load_state_dict(state["optimizer"])  # moved to the parameters' device
        restore_rng_state(state["rng"])
        exp.train_tasks.load_state_dict(state["sampler"])
        for name, s in state.get("torch_generators", {}).items():
            if name == "reptile" and _reptile_gen(exp):
                exp.learner.generator.set_state(s)
        exp.learner.load_state_dict(on_device(state.get("learner", {}), exp.device))
    return state["step"], state["best_metric"], Elapsed.from_state(state)


def check_shardable(exp: Experiment) -> None:
    """Refuse to split the meta-batches of ``exp`` over processes when its model cannot.

    Raises:
        UsageError: the model's BatchNorm keeps running statistics, updated in place task by
            task in the meta-batch's order: each process would see its own tasks only.
    """
    if exp.ranks.many and has_running_stats(exp.model):
        raise UsageError(
            "the model's BatchNorm keeps running statistics, updated task by task in the "
            "meta-batch's order, which several processes cannot reproduce: use model.norm = "
            '"transductive" (the papers\' policy), or train on one process'
        )
