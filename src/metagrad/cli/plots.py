"""Figures of a run (matplotlib, imported lazily: the ``[plot]`` extra).

- ``learning_curve.png``: training loss and validation metric against the step.
- ``adaptation.png`` (sinusoid runs): the MAML paper's Figure 2: for a few test sines, the true
  curve, the K support points, and the prediction before adaptation and after 1 and 10 steps;
  with ``--baseline RUN`` the baseline run (e.g. pretrained) is drawn beside it.
- RL runs: the figures of :mod:`metagrad.cli.rl_plots` (MAML's Figures 4 and 5).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from metagrad.cli.figures import pyplot, save_figure
from metagrad.config import SinusoidTaskConfig, load_config
from metagrad.train.curves import adapted_curves, sinusoid_tasks
from metagrad.train.io import read_jsonl


def plot_run(run_dir: Path, baseline: Path | Sequence[Path] | None = None) -> list[Path]:
    """Draw the figures of ``run_dir`` into it (with baseline runs); returns the files written."""
    baselines = [baseline] if isinstance(baseline, Path) else list(baseline or [])
    cfg = load_config(run_dir / "config.toml")
    if cfg.task.kind == "rl":
        from metagrad.cli.rl_plots import plot_rl_run

        return plot_rl_run(run_dir, baselines)
    written = [learning_curve(run_dir)]
    if isinstance(cfg.task, SinusoidTaskConfig):
        written.append(sinusoid_adaptation(run_dir, baselines))
    return written


def learning_curve(run_dir: Path) -> Path:
    plt = pyplot()
    records = read_jsonl(run_dir / "metrics.jsonl")
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    for split, style in (("train", "-"), ("val", "o-")):
        rows = [r for r in records if r.get("split") == split]
        if rows:
            ax[0].plot([r["step"] for r in rows], [r["loss"] for r in rows], style, label=split)
            if "accuracy" in rows[0]:
                ax[1].plot(
                    [r["step"] for r in rows], [r["accuracy"] for r in rows], style, label=split
                )
    ax[0].set(xlabel="meta-iteration", ylabel="query loss after adaptation", yscale="log")
    ax[1].set(xlabel="meta-iteration", ylabel="query accuracy")
    for a in ax:
        a.grid(alpha=0.3)
        if a.lines:
            a.legend()
        else:  # regression: no accuracy to show
            a.set_visible(False)
    fig.suptitle(run_dir.name)
    fig.tight_layout()
    return save_figure(fig, plt, run_dir / "learning_curve.png")


def sinusoid_adaptation(run_dir: Path, baselines: Sequence[Path] = (), tasks: int = 3) -> Path:
    plt = pyplot()
    batch, grid, true = sinusoid_tasks(run_dir, tasks)
    shots = batch.support_x.shape[1]
    x_grid = torch.from_numpy(grid).float()[:, None]
    runs = [run_dir, *baselines]
    fig, axes = plt.subplots(len(runs), tasks, figsize=(4 * tasks, 3.2 * len(runs)), squeeze=False)
    for row, run in enumerate(runs):
        name, curves = adapted_curves(run, x_grid, batch)
        for col in range(tasks):
            ax = axes[row, col]
            ax.plot(grid, true[col], "r", label="ground truth")
            ax.plot(
                batch.support_x[col, :, 0],
                batch.support_y[col, :, 0],
                "^k",
                label=f"{shots} support points",
            )
            for k, c, style in zip((0, 1, 10), curves[col], (":", "--", "-")):
                ax.plot(grid, c, style, color="tab:green", label=f"after {k} steps")
            ax.set_title(f"{name}, test task {col}", fontsize=9)
            ax.set_ylim(-6, 6)
    axes[0, 0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return save_figure(fig, plt, run_dir / "adaptation.png")
