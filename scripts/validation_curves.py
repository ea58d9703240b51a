"""Validation curves of several runs in one figure (RESULTS.md's Omniglot learning curves and
issue 17's same-budget comparisons), and when each run first reached given levels.

    python scripts/validation_curves.py RUN_DIR [RUN_DIR ...] --out curves.png \\
        [--metric accuracy] [--x step|train_s|wall_s] [--reach 0.95,0.98] [--title "..."]

Each run is labelled by its algorithm (its config name with ``--label name``). The x axis is
the meta-iteration (``step``), the minutes spent in training steps on the run's budget clock
(``train_s``: validation not counted, see ``metagrad.train.clock``) or the minutes since the
run started (``wall_s``). ``--reach`` prints a Markdown table: for each run and level, the first
validation at or above it (its x value and iteration), "not reached" otherwise.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from metagrad.cli.figures import pyplot
from metagrad.config import load_config
from metagrad.train.curves import ALGORITHM_TITLES
from metagrad.train.io import read_jsonl

AXES = {"step": "meta-iteration", "train_s": "training minutes", "wall_s": "minutes since start"}


def validation_rows(run: Path, metric: str, x: str) -> list[dict]:
    """The run's "val" records that carry ``metric`` and ``x``; exits with a clear line if none."""
    rows = [r for r in read_jsonl(run / "metrics.jsonl") if r.get("split") == "val"]
    if not rows or metric not in rows[0]:
        raise SystemExit(f"{run} has no validation {metric!r} records")
    rows = [r for r in rows if x in r]
    if not rows:
        raise SystemExit(f"{run}'s validation records have no {x!r}: draw it with --x step")
    return rows


def x_value(row: dict, x: str) -> float:
    return row[x] if x == "step" else row[x] / 60.0


def label(run: Path, by: str) -> str:
    cfg = load_config(run / "config.toml")
    return cfg.name if by == "name" else ALGORITHM_TITLES.get(cfg.algorithm.name, cfg.name)


def reach_table(curves: dict[str, list[dict]], levels: list[float], metric: str, x: str) -> str:
    """A Markdown table: when each run's validation ``metric`` first reached each level."""
    head = " | ".join(f"first at {level:g}" for level in levels)
    lines = [f"| run | {head} |", "| --- |" + " --- |" * len(levels)]
    for name, rows in curves.items():
        cells = []
        for level in levels:
            hit = next((r for r in rows if r[metric] >= level), None)
            if hit is None:
                cells.append("not reached")
            elif x == "step":
                cells.append(f"iteration {hit['step']:,}")
            else:
                cells.append(f"{x_value(hit, x):.1f} min (iteration {hit['step']:,})")
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--metric", default="accuracy")
    p.add_argument("--x", choices=tuple(AXES), default="step")
    p.add_argument("--label", choices=("algorithm", "name"), default="algorithm")
    p.add_argument("--reach", default="", help="comma-separated levels, e.g. 0.95,0.98")
    p.add_argument("--title", default="")
    args = p.parse_args(argv)
    curves: dict[str, list[dict]] = {}
    for run in args.runs:
        name = label(run, args.label)
        curves[name if name not in curves else f"{name} ({run})"] = validation_rows(
            run, args.metric, args.x
        )
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, rows in curves.items():
        xs = [x_value(r, args.x) for r in rows]
        ax.plot(xs, [r[args.metric] for r in rows], "o-", ms=3, label=name)
    ax.set_xlabel(AXES[args.x])
    ax.set_ylabel(f"validation {args.metric}")
    ax.set_title(args.title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    if args.reach:
        levels = [float(v) for v in args.reach.split(",")]
        print(reach_table(curves, levels, args.metric, args.x))
    print(args.out)
    return args.out


if __name__ == "__main__":
    main()
