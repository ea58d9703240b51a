"""What the figures of a run draw, computed from its run directory (the face only draws).

- :func:`sinusoid_tasks`: a sinusoid run's first test tasks and their true curves.
- :func:`adapted_curves`: a run's predictions on a grid after 0, 1, ..., k inner steps.
- :func:`adaptation_paths`: 2D-navigation episodes before and after adaptation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from metagrad.config import SinusoidTaskConfig, load_config, resolve_eval
from metagrad.rl.adaptation import adaptation_rollouts
from metagrad.tasks.sinusoid import SinusoidTasks, fixed_tasks
from metagrad.train.build import build_experiment
from metagrad.train.checkpoint import intact_checkpoints, load_checkpoint
from metagrad.train.rl_build import build_rl_experiment
from metagrad.train.rl_testing import load_theta
from metagrad.types import TaskBatch


def sinusoid_tasks(run_dir: Path, tasks: int, points: int = 200):
    """The first ``tasks`` test tasks of a sinusoid run (its test's K support points), a grid
    over the input range, and each task's true curve on it ``[tasks, points]``."""
    cfg = load_config(run_dir / "config.toml")
    assert isinstance(cfg.task, SinusoidTaskConfig)
    family = SinusoidTasks(cfg.task.amplitude, cfg.task.phase, cfg.task.x_range)
    batch, true = fixed_tasks(family, cfg.eval.seed, 0, tasks, resolve_eval(cfg).shots, 0)
    grid = np.linspace(*cfg.task.x_range, points)
    return batch, grid, family.curve(true, grid)


ALGORITHM_TITLES = {
    "maml": "MAML",
    "fomaml": "FOMAML",
    "reptile": "Reptile",
    "anil": "ANIL",
    "boil": "BOIL",
    "metasgd": "Meta-SGD",
    "mamlpp": "MAML++",
    "maml_trpo": "MAML-TRPO",
}


def run_title(cfg) -> str:
    """A figure title a reader understands, e.g. "MAML, sinusoid, 10 shots" or "Reptile,
    Omniglot 5-way 1-shot" (the run's name is an identifier for directories, not a title)."""
    algorithm = cfg.algorithm.name
    title = ALGORITHM_TITLES.get(algorithm, f"{algorithm} baseline")
    task, family = cfg.task, cfg.task.family
    if family == "omniglot":
        return f"{title}, Omniglot {task.ways}-way {task.shots}-shot"
    if getattr(task, "shots", None) is not None:
        return f"{title}, {family}, trained on {task.shots} shots"
    return f"{title}, {family}"


def adapted_curves(
    run_dir: Path, x_grid: torch.Tensor, tasks: TaskBatch, steps=(0, 1, 10)
) -> tuple[str, list]:
    """Predictions on ``x_grid`` after each of ``steps`` inner steps, per task."""
    cfg = load_config(run_dir / "config.toml")
    exp = build_experiment(cfg)
    name = "best" if "best" in intact_checkpoints(run_dir) else "last"
    exp.model.load_state_dict(load_checkpoint(run_dir, name)[0])
    lr = resolve_eval(cfg).inner_lr
    curves = []
    for task in tasks:
        per_step = []
        for k in steps:
            phi = exp.learner.adapt(task.support_x, task.support_y, inner_steps=k, inner_lr=lr)
            per_step.append(exp.learner.predict(phi, x_grid)[:, 0].numpy())
        curves.append(per_step)
    return run_title(cfg), curves


def adaptation_paths(run: Path, shown: int = 3):
    """Goal and positions ``{steps: [episode [T, 2]]}`` of episodes on the first test goal,
    before adaptation, after 1 step and after the test's last step."""
    cfg = load_config(run / "config.toml")
    ev = resolve_eval(cfg)
    steps = sorted({0, min(1, ev.inner_steps), ev.inner_steps})
    with build_rl_experiment(cfg) as exp:
        checkpoints = intact_checkpoints(run)
        name = next((n for n in ("best", "last") if n in checkpoints), "untrained")
        theta = load_theta(exp, run, name)[0]
        generator = exp.fixed_generator("test")
        task = exp.family.sample_tasks(1, generator)
        u = exp.update
        settings = (cfg.task.trajectories, ev.inner_lr, ev.inner_steps, u.gamma, u.gae_lambda)
        rollouts = adaptation_rollouts(exp.env, exp.policy, theta, task, *settings, generator)
        paths = {}
        for r in rollouts:
            if r.step in steps:
                lengths = r.trajectories.lengths()[0].long().tolist()
                paths[r.step] = [
                    r.trajectories.obs[0, e, : lengths[e]].numpy() for e in range(shown)
                ]
    return task[0]["goal"], paths
