"""Meta-testing of RL runs: the average return on fixed tasks after 0, 1, ..., k adaptation steps.

The paper's protocol (MAML §5.3): ``task.test_tasks`` (40) tasks drawn with a fixed seed
(``eval.seed``); for each task, sample ``task.test_trajectories`` episodes with the current
parameters, record their mean return, take one policy-gradient step on them (step sizes
``eval.inner_lr``, e.g. 0.1 then 0.05) and repeat, ``eval.inner_steps`` times. Reported: the
mean over tasks of each task's mean return after each step, with a 95% interval
``1.96 * std / sqrt(tasks)`` over tasks. The same fixed generator gives the same tasks and
episodes to every run, so MAML, the pretrained policy and a random initialisation are compared
on identical tasks.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metagrad.config import ExperimentConfig, load_config, resolve_eval
from metagrad.evaluate.protocol import Summary, summarize
from metagrad.functional.optim import LearningRate, lr_schedule
from metagrad.functional.params import Params
from metagrad.rl.adaptation import adaptation_returns
from metagrad.train.results import RESULTS_FILE, load_named_checkpoint, write_report
from metagrad.train.rl_build import RLExperiment, build_rl_experiment


@dataclass(frozen=True)
class RLEvalResult:
    """Per-task mean episode return after each adaptation step.

    Attributes:
        returns: ``[steps + 1, tasks]``: row ``s`` after ``s`` adaptation steps.
        trajectories: episodes per task per step.
        seconds: wall time of the evaluation.
    """

    returns: np.ndarray
    trajectories: int
    seconds: float = 0.0

    @property
    def tasks(self) -> int:
        return self.returns.shape[1]

    def mean_return(self, step: int = -1) -> Summary:
        """Mean over tasks and 95% interval after ``step`` adaptation steps."""
        return summarize(self.returns[step])

    def to_dict(self) -> dict:
        """JSON-able: per step, mean and 95% interval of the return."""
        steps = [
            {"step": s, "return": vars(self.mean_return(s))} for s in range(self.returns.shape[0])
        ]
        return {
            "tasks": self.tasks,
            "trajectories": self.trajectories,
            "seconds": self.seconds,
            "steps": steps,
        }

    def table(self) -> str:
        """A Markdown table: one row per adaptation step."""
        rows = ["| step | average return |", "| --- | --- |"]
        rows += [f"| {s} | {self.mean_return(s)} |" for s in range(self.returns.shape[0])]
        return "\n".join(rows) + (
            f"\n\n({self.tasks} tasks x {self.trajectories} episodes, mean ± 95% interval)"
        )


def evaluate_split(
    exp: RLExperiment,
    theta: Params,
    split: str,
    tasks: int,
    steps: int,
    inner_lr: LearningRate | Sequence[LearningRate],
    trajectories: int,
) -> RLEvalResult:
    """Adapt to ``tasks`` fixed tasks of ``split`` ("val" or "test") and score each step."""
    start = time.perf_counter()
    g = exp.fixed_generator(split)
    fixed = exp.family.sample_tasks(tasks, g)
    u = exp.update
    returns = adaptation_returns(
        exp.env, exp.policy, theta, fixed, trajectories, inner_lr, steps, u.gamma, u.gae_lambda, g
    )
    return RLEvalResult(returns, trajectories, time.perf_counter() - start)


def validate(exp: RLExperiment, theta: Params) -> RLEvalResult:
    """Returns on ``train.val_tasks`` fixed validation tasks after 0..K adaptation steps.

    The steps, step sizes and episodes per step are the test's, so that validation predicts it:
    a policy whose first step is good but whose later steps degrade is not the best one.
    """
    ev = resolve_eval(exp.cfg)
    assert ev.inner_lr is not None and ev.trajectories  # RL algorithms always adapt
    return evaluate_split(
        exp, theta, "val", exp.cfg.train.val_tasks, ev.inner_steps, ev.inner_lr, ev.trajectories
    )


def load_theta(exp: RLExperiment, run_dir: Path, checkpoint: str) -> tuple[Params, str]:
    """The parameters of ``checkpoint`` ("best", "last", "last.prev", a ``.safetensors``
    path, or "untrained" for the seeded initialisation) and a description of them."""
    expected = exp.policy.state_dict()
    weights, _, source = load_named_checkpoint(run_dir, checkpoint, expected, exp.cfg.seed)
    return exp.initial_theta() if weights is None else exp.as_theta(weights), source


def run_rl_test(
    run_dir: Path,
    checkpoint: str = "best",
    cfg: ExperimentConfig | None = None,
    exp: RLExperiment | None = None,
    results: str = RESULTS_FILE,
) -> RLEvalResult:
    """Meta-test an RL run's checkpoint; writes ``results.json`` and prints the table.

    Args:
        run_dir: the run directory (the results file goes there).
        checkpoint: see :func:`load_theta`.
        cfg: the config to test with (default: the run's own ``config.toml``).
        exp: an already built experiment of ``cfg`` (kept open); else one is built and closed.
        results: the results file's name in ``run_dir``.
    """
    cfg = cfg or (exp.cfg if exp else load_config(run_dir / "config.toml"))
    owned = exp is None
    exp = exp or build_rl_experiment(cfg)
    try:
        theta, source = load_theta(exp, run_dir, checkpoint)
        ev = resolve_eval(cfg)
        assert ev.inner_lr is not None and ev.trajectories  # RL algorithms always adapt
        result = evaluate_split(
            exp, theta, "test", cfg.task.test_tasks, ev.inner_steps, ev.inner_lr, ev.trajectories
        )
    finally:
        if owned:
            exp.close()
    lrs = lr_schedule(ev.inner_lr, ev.inner_steps)
    report = {
        "name": cfg.name,
        "checkpoint": source,
        "family": cfg.task.family,
        "algorithm": cfg.algorithm.name,
        "inner_lr": [float(lr) for lr in lrs],
        **result.to_dict(),
    }
    write_report(run_dir, results, report, result.table())
    return result
