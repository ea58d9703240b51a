"""Validation curves of several runs in one figure (RESULTS.md's Omniglot learning curves).

    python scripts/validation_curves.py RUN_DIR [RUN_DIR ...] --out curves.png \
        [--metric accuracy] [--title "Omniglot"]

Each run's label is its config name; the x axis is the meta-iteration.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from metagrad.cli.figures import pyplot
from metagrad.config import load_config
from metagrad.train.io import read_jsonl


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--metric", default="accuracy")
    p.add_argument("--title", default="")
    args = p.parse_args(argv)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for run in args.runs:
        rows = [r for r in read_jsonl(run / "metrics.jsonl") if r.get("split") == "val"]
        if not rows or args.metric not in rows[0]:
            raise SystemExit(f"{run} has no validation {args.metric!r} records")
        name = load_config(run / "config.toml").name
        ax.plot([r["step"] for r in rows], [r[args.metric] for r in rows], "o-", ms=3, label=name)
    ax.set_xlabel("meta-iteration")
    ax.set_ylabel(f"validation {args.metric}")
    ax.set_title(args.title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(args.out)
    return args.out


if __name__ == "__main__":
    main()
