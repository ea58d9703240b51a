"""Figures of RL runs (``metagrad plot RUN_DIR [--baseline RUN ...]``), as MAML's Figures 4, 5.

- ``return_vs_iteration.png``: average return before and after adaptation against the
  meta-iteration (training episodes; validation tasks as markers); a baseline run's training
  return is drawn alongside.
- ``return_vs_steps.png``: average return on the 40 test tasks against the number of
  adaptation steps (from each run's ``results.json``, with 95% intervals): MAML and the
  baselines (pretrained, random initialisation: ``metagrad test CONFIG --out DIR`` writes one),
  with the paper's MAML curve and oracle where REFERENCE.md has them.
- ``timing.png``: where each meta-iteration's time goes (sampling, adaptation, conjugate
  gradient, line search).
- ``trajectories.png`` (2D navigation): the paths of a few episodes to the first test goal before
  adaptation and after 1 and 3 steps (``eval.inner_steps``), for the run and each baseline run
  (the lower half of Figure 4).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from metagrad.cli.figures import pyplot, save_figure
from metagrad.config import load_config
from metagrad.train.curves import adaptation_paths, run_title
from metagrad.train.io import read_jsonl
from metagrad.train.results import RESULTS_FILE

# The paper's average returns after 0..3 steps and the oracle's (REFERENCE.md; Figures 4, 5).
PAPER: dict[str, tuple[tuple[float, ...], float]] = {
    "navigation-2d": ((-40.41, -11.68, -3.33, -3.23), -2.29),
    "half-cheetah-vel": ((-129.53, -78.57, -66.62, -60.78), -54.47),
    "half-cheetah-dir": ((-50.69, 293.19, 313.48, 315.65), 442.69),
    "ant-vel": ((30.58, 96.74, 100.06, 101.41), 107.89),
    "ant-dir": ((8.66, 499.15, 500.68, 499.11), 524.80),
}
PHASES = ("sampling", "adaptation", "processing", "conjugate_gradient", "line_search")


def plot_rl_run(run_dir: Path, baselines: Sequence[Path] = ()) -> list[Path]:
    """Draw the figures of the RL run ``run_dir`` into it; returns the files written."""
    cfg = load_config(run_dir / "config.toml")
    written = [return_vs_iteration(run_dir, baselines), timing(run_dir)]
    runs = [r for r in [run_dir, *baselines] if (r / RESULTS_FILE).exists()]
    if runs:
        written.append(return_vs_steps(runs, cfg.task.family, run_dir))
    if cfg.task.family == "navigation-2d":
        written.append(trajectories(run_dir, baselines))
    return written


# Legend names of the figures' curves, by what a run is (not its internal run name).
KINDS = {"maml_trpo": "MAML", "pretrained_rl": "pretrained (multi-task)"}
RANDOM = "random initialisation"
# One colour per kind in every figure (Figure 5's panels show whichever runs exist).
KIND_COLORS = {"MAML": "C0", KINDS["pretrained_rl"]: "C1", RANDOM: "C2"}


def _kind(report: dict) -> str:
    """What a tested run is: "random initialisation" for an untrained policy, else its algorithm."""
    if str(report.get("checkpoint", "")).startswith("untrained"):
        return RANDOM
    algorithm = str(report.get("algorithm", "?"))
    return KINDS.get(algorithm, algorithm)


def _labels(runs: Sequence[Path]) -> list[str]:
    """Readable legend names ("MAML", "pretrained (multi-task)", "random initialisation"); the
    run's name is added only where two runs would otherwise share one."""
    kinds = []
    for run in runs:
        results = run / RESULTS_FILE
        kinds.append(_kind(json.loads(results.read_text())) if results.exists() else run.name)
    return [
        f"{kind} ({run.name})" if kinds.count(kind) > 1 else kind for kind, run in zip(kinds, runs)
    ]


def _records(run: Path, split: str) -> list[dict]:
    path = run / "metrics.jsonl"
    return [r for r in read_jsonl(path) if r.get("split") == split] if path.exists() else []


def return_vs_iteration(run_dir: Path, baselines: Sequence[Path] = ()) -> Path:
    """Return before / after adaptation against the meta-iteration."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(11, 4.2))
    runs = [run_dir, *baselines]
    for i, (run, name) in enumerate(zip(runs, _labels(runs))):
        color = f"C{i}"
        train = _records(run, "train")
        if not train:  # e.g. the test of an untrained policy: nothing was trained
            continue
        steps = [r["step"] for r in train]
        before = [r["return_before"] for r in train]
        ax.plot(steps, before, ":", color=color, label=f"{name}: before adaptation")
        if "return_after" in train[0]:
            after = [r["return_after"] for r in train]
            ax.plot(steps, after, "-", color=color, label=f"{name}: after adaptation")
        val = _records(run, "val")
        keys = [f"return_step{k}" for k in range(1, 5) if val and f"return_step{k}" in val[0]]
        if not keys and val and "return_after" in val[0]:  # runs validated after one step
            keys = ["return_after"]
        for k, (key, marker) in enumerate(zip(keys, "o^sv"), 1):
            ax.plot(
                [r["step"] for r in val],
                [r[key] for r in val],
                marker,
                color=color,
                ms=4,
                label=f"{name}: validation tasks, after {k} step{'s' if k > 1 else ''}",
            )
    ax.set(xlabel="meta-iteration", ylabel="average return")
    ax.grid(alpha=0.3)
    # Beside the axes: its long labels, beneath them, ran off the figure's edges.
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    title = run_title(load_config(run_dir / "config.toml"))
    fig.suptitle(f"{title}: return before (dotted) and after adaptation", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, plt, run_dir / "return_vs_iteration.png")


def return_vs_steps(runs: Sequence[Path], family: str, out_dir: Path) -> Path:
    """Test return against the number of adaptation steps, each run with its 95% interval."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    draw_return_vs_steps(ax, runs, family)
    _legend_beneath(ax)
    fig.tight_layout()
    return save_figure(fig, plt, out_dir / "return_vs_steps.png")


def draw_return_vs_steps(ax, runs: Sequence[Path], family: str) -> None:
    """Draw onto ``ax`` each tested run's return after 0..K steps (95% intervals), and the
    paper's MAML points and oracle for ``family`` where REFERENCE.md has them."""
    reports = [json.loads((run / RESULTS_FILE).read_text()) for run in runs]
    kinds = [_kind(report) for report in reports]
    by_kind = len(set(kinds)) == len(kinds)  # two MAML runs would share the kind's colour
    for i, (label, report, kind) in enumerate(zip(_labels(runs), reports, kinds)):
        rows = report["steps"]
        color = KIND_COLORS.get(kind) if by_kind else None
        ax.errorbar(
            [r["step"] for r in rows],
            [r["return"]["mean"] for r in rows],
            yerr=[r["return"]["ci95"] for r in rows],
            marker="o",
            capsize=3,
            color=color or f"C{i + len(KIND_COLORS)}",
            label=label,
        )
    if family in PAPER:
        paper, oracle = PAPER[family]
        ax.plot(range(len(paper)), paper, "kx--", alpha=0.5, label="MAML (paper)")
        ax.axhline(oracle, color="k", ls=":", alpha=0.5, label="oracle (paper)")
    ax.set(xlabel="number of gradient steps", ylabel="average return", title=family)
    ax.set_xticks(range(max((len(r["steps"]) for r in reports), default=4)))
    ax.grid(alpha=0.3)


def _legend_beneath(ax) -> None:
    """The legend under the axes, where it hides no data (inside, it covered the curves)."""
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)


def timing(run_dir: Path) -> Path:
    """Seconds per meta-iteration, stacked by phase."""
    plt = pyplot()
    train = _records(run_dir, "train")
    fig, ax = plt.subplots(figsize=(7, 3.6))
    steps = [r["step"] for r in train]
    phases = [p for p in PHASES if train and f"time_{p}" in train[0]]
    if phases:
        stacks = [[r.get(f"time_{p}", 0.0) for r in train] for p in phases]
        ax.stackplot(steps, stacks, labels=[p.replace("_", " ") for p in phases], alpha=0.8)
        ax.plot(steps, [r["time_total"] for r in train], "k-", lw=0.8, label="total")
        means = ", ".join(f"{p} {sum(s) / len(s):.2f}" for p, s in zip(phases, stacks))
        ax.set_title(f"mean s/iteration: {means}", fontsize=8)
        ax.legend(fontsize=7, loc="upper left")
    ax.set(xlabel="meta-iteration", ylabel="seconds")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, plt, run_dir / "timing.png")


def trajectories(run_dir: Path, baselines: Sequence[Path] = ()) -> Path:
    """Episodes on the first test goal before and after adaptation (2D navigation)."""
    plt = pyplot()
    runs = [r for r in [run_dir, *baselines] if (r / "config.toml").exists()]
    fig, axes = plt.subplots(1, len(runs), figsize=(4 * len(runs), 4), squeeze=False)
    for ax, run, label in zip(axes[0], runs, _labels(runs)):
        goal, paths = adaptation_paths(run)
        for i, ((k, episodes), style) in enumerate(zip(paths.items(), (":", "--", "-"))):
            for e, path in enumerate(episodes):
                label = f"{k} steps" if e == 0 else None
                ax.plot(path[:, 0], path[:, 1], style, color=f"C{i}", label=label, lw=1)
        ax.plot(*goal, "r*", ms=12, label="goal")
        ax.plot(0, 0, "ko", ms=4)
        ax.set(xlim=(-0.6, 0.6), ylim=(-0.6, 0.6), aspect="equal", title=label)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, plt, run_dir / "trajectories.png")


__all__ = [
    "draw_return_vs_steps",
    "plot_rl_run",
    "return_vs_iteration",
    "return_vs_steps",
    "timing",
    "trajectories",
]
