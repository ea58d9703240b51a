"""Validation during training and the final meta-test of a run's checkpoint."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from metagrad.algorithms import InnerLoop
from metagrad.algorithms.learner import MetaLearner
from metagrad.config import (
    ExperimentConfig,
    load_config,
    resolve_eval,
    selection_score,
    val_metric,
)
from metagrad.evaluate.mean import MeanPredictor
from metagrad.evaluate.protocol import EvalResult, evaluate
from metagrad.train.build import Experiment, build_experiment
from metagrad.train.checkpoint import on_device
from metagrad.train.distributed import (
    Ranks,
    gather_rows,
    launched,
    process_group,
    same_config,
    share,
    together,
)
from metagrad.train.results import RESULTS_FILE, load_named_checkpoint, write_report

if TYPE_CHECKING:
    from metagrad.train.rl_testing import RLEvalResult


def _inner(exp: Experiment) -> tuple[InnerLoop, int | None]:
    """Test-time inner loop, the same for validation and test: validation asks the test's
    question (its episodes, steps, step sizes and batch size), so that it predicts the test."""
    ev = resolve_eval(exp.cfg)
    # eval.inner_lr, or the learner's own rates (learned ones included: Meta-SGD, MAML++).
    inner = exp.learner.inner_loop(ev.inner_steps, exp.cfg.eval.inner_lr)
    return inner, exp.cfg.eval.inner_batch_size or getattr(exp.learner, "inner_batch_size", None)


def evaluate_split(exp: Experiment, split: str, tasks: int) -> EvalResult:
    """Adapt to ``tasks`` fixed tasks of ``split`` and score them after each inner step.

    Several processes score the chunks of tasks round robin and gather the scores, so every
    task is adapted in the chunk it would be in one process (the same numbers).
    """
    cfg = exp.cfg
    chunk = cfg.eval.chunk_size or getattr(exp.learner, "chunk_size", None) or 50
    batches = exp.eval_batches(split, tasks, chunk)
    if isinstance(exp.learner, MeanPredictor):
        return exp.learner.evaluate(batches, resolve_eval(cfg).inner_steps or 0)
    assert isinstance(exp.learner, MetaLearner)
    inner, batch_size = _inner(exp)
    first = next(batches)  # the tasks' sizes choose the "auto" path, as in training
    training = exp.model.training
    exp.model.eval()  # test-time behaviour: running statistics where the policy keeps them
    ranks = exp.ranks
    try:
        mine = evaluate(
            exp.learner.executor_for(first),
            exp.learner.loss,
            exp.learner.params,
            itertools.chain([first], batches),
            inner,
            exp.classification,
            transductive=cfg.eval.transductive,
            inner_batch_size=batch_size,
            seed=cfg.eval.seed,
            score_every=cfg.eval.score_every,
            owned=ranks.owns if ranks.many else None,
        )
    finally:
        exp.model.train(training)
    return gather_chunks(ranks, mine, [min(chunk, tasks - s) for s in range(0, tasks, chunk)])


def gather_chunks(ranks: Ranks, mine: EvalResult, sizes: list[int]) -> EvalResult:
    """The scores of every chunk (of ``sizes`` tasks each), in chunk order, on every process,
    from each process's scores of its own chunks (:meth:`Ranks.owns`)."""
    if not ranks.many:
        return mine
    parts = [mine.losses] + ([mine.accuracies] if mine.accuracies is not None else [])
    rows = torch.from_numpy(np.concatenate(parts, axis=0).T.astype(np.float64))  # [tasks, ..]
    counts = [
        sum(n for i, n in enumerate(sizes) if i % ranks.world == r) for r in range(ranks.world)
    ]
    every = gather_rows(ranks, rows, counts).numpy()  # the ranks' rows, in rank order
    starts = np.cumsum([0, *counts])
    taken, columns = [0] * ranks.world, []
    for i, n in enumerate(sizes):  # chunk i is rank i % world's next
        r = i % ranks.world
        begin = starts[r] + taken[r]
        columns.append(every[begin : begin + n])
        taken[r] += n
    table = np.concatenate(columns).T.astype(mine.losses.dtype)  # [rows, tasks]
    steps = mine.losses.shape[0]
    accuracies = table[steps:] if mine.accuracies is not None else None
    return EvalResult(table[:steps], accuracies, mine.steps)


def validation_metric(exp: Experiment) -> tuple[float, dict]:
    """Validation score (higher is better) and a summary, on ``train.val_tasks`` fixed tasks
    with the test's protocol.

    The score is the accuracy (classification) or minus the query loss after the test's last
    inner step, or its mean over the adapted steps: see ``train.val_metric``.
    """
    result = evaluate_split(exp, "val", exp.cfg.train.val_tasks)
    summary = {"loss": result.loss().mean, "loss_step0": result.loss(0).mean}
    if exp.classification:
        summary["accuracy"] = result.accuracy().mean
        scores = {s: result.accuracy(s).mean for s in result.steps}
    else:
        scores = {s: -result.loss(s).mean for s in result.steps}
    rule = val_metric(exp.cfg)
    metric = selection_score(scores, rule)
    if rule == "mean":
        key = "accuracy_adapted_mean" if exp.classification else "loss_adapted_mean"
        summary[key] = metric if exp.classification else -metric
    return metric, summary


def run_test(
    run_dir: Path,
    checkpoint: str = "best",
    exp: Experiment | None = None,
    cfg: ExperimentConfig | None = None,
    results: str = RESULTS_FILE,
) -> EvalResult | RLEvalResult:
    """Meta-test a run's checkpoint; writes ``results.json`` and prints the table.

    Args:
        run_dir: the run directory.
        checkpoint: "best", "last", "last.prev", a path to a ``.safetensors`` checkpoint
            saved by metagrad, or "untrained" (see
            :func:`metagrad.train.results.load_named_checkpoint`).
        exp: an already built experiment (its model gets the checkpoint's weights).
        cfg: the config to test with (default: the run's own ``config.toml``).
        results: the results file's name in ``run_dir`` (see
            :func:`metagrad.train.results.results_file`).
    """
    cfg = cfg or (exp.cfg if exp else load_config(run_dir / "config.toml"))
    if cfg.task.kind == "rl":  # meta-RL: average return after each adaptation step
        from metagrad.train.rl_testing import run_rl_test

        return run_rl_test(run_dir, checkpoint, cfg=cfg, results=results)
    if exp is None and launched():  # under torchrun: the processes share out the tasks
        with process_group(cfg.train.dist_timeout_s) as ranks:
            same_config(ranks, cfg)
            with together(ranks):
                exp = build_experiment(cfg, ranks)
            return run_test(run_dir, checkpoint, exp, cfg, results)
    exp = exp or build_experiment(cfg)
    source = _load_weights(exp, run_dir, checkpoint)
    result = evaluate_split(exp, "test", cfg.eval.tasks)
    if exp.ranks.leader:
        report = {"name": cfg.name, "checkpoint": source, **result.to_dict()}
        write_report(run_dir, results, report, result.table())
    return result


def _load_weights(exp: Experiment, run_dir: Path, checkpoint: str) -> str:
    """Load ``checkpoint`` into the model and the learner (rank 0 reads it, every process of
    the run gets it) and describe it."""
    if isinstance(exp.learner, MeanPredictor):
        return "no weights (mean predictor)"
    expected = exp.model.state_dict()

    def read() -> dict:
        weights, state, source = load_named_checkpoint(run_dir, checkpoint, expected, exp.cfg.seed)
        return {"weights": weights, "learner": state.get("learner", {}), "source": source}

    found = share(exp.ranks, read)
    if found["weights"] is not None:
        exp.model.load_state_dict(found["weights"])
        exp.learner.load_state_dict(on_device(found["learner"], exp.device))
    return found["source"]
