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
from metagrad.train.curves import adapted_curves, run_title, sinusoid_tasks
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
    """Training loss and validation metric against the meta-iteration, one panel per metric
    (regression runs have no accuracy, so they get one panel and no blank half)."""
    plt = pyplot()
    records = read_jsonl(run_dir / "metrics.jsonl")
    series = {
        split: [r for r in records if r.get("split") == split and "loss" in r]
        for split in ("train", "val")
    }
    metrics = ["loss"] + (["accuracy"] if any("accuracy" in r for r in records) else [])
    labels = {"loss": "query loss after adaptation", "accuracy": "query accuracy"}
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for split, style, name in (("train", "-", "training"), ("val", "o-", "validation")):
            rows = [r for r in series[split] if metric in r]
            if rows:
                xs, ys = [r["step"] for r in rows], [r[metric] for r in rows]
                ax.plot(xs, ys, style, label=name, markersize=4)
        ax.set(xlabel="meta-iteration", ylabel=labels[metric])
        if metric == "loss":
            _loss_scale(ax)
        ax.grid(alpha=0.3)
        if ax.lines:  # beneath the axes, never over the data
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    fig.suptitle(run_title(load_config(run_dir / "config.toml")))
    fig.tight_layout()
    return save_figure(fig, plt, run_dir / "learning_curve.png")


def _loss_scale(ax) -> None:
    """A log axis for losses spanning a decade or more, with ticks at 1, 2 and 5 times each
    power of ten in plain numbers (the default showed two ticks as 10^0 and 4x10^0); a
    linear axis for a narrower range."""
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    values = [v for line in ax.lines for v in line.get_ydata() if v > 0]
    if not values or max(values) < 10 * min(values):
        return
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())


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
            ax.set_title(f"{name}: test task {col + 1}", fontsize=9)
            ax.set_ylim(-6, 6)
    # One legend for all panels, beneath them: inside a panel it hid the curves.
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.07 / len(runs), 1, 1))
    return save_figure(fig, plt, run_dir / "adaptation.png")
