"""The MAML paper's Figure 5 from the committed meta-RL run directories: average test return
against the number of gradient steps for half-cheetah and ant (velocity, direction), MAML
against the pretrained (multi-task) policy and a random initialisation, the paper's MAML points
and oracle marked.

    python scripts/figure5.py [--results results/rl] [--out docs/figures/figure5_locomotion.png]

Each panel draws, of ``RESULTS/<family>``, ``RESULTS/pretrained_<family>`` and
``RESULTS/random_<family>``, those holding a ``results.json`` (a run's meta-test, or
``metagrad test CONFIG --out DIR`` of an untrained policy); a family none of them has is
drawn as an empty panel that says so, so the figure's layout is the paper's whatever has run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from metagrad.cli.figures import pyplot, save_figure
from metagrad.cli.rl_plots import draw_return_vs_steps
from metagrad.train.results import RESULTS_FILE

# Panel order of the paper's Figure 5: run-directory name -> task family.
FAMILIES = {
    "cheetah_vel": "half-cheetah-vel",
    "cheetah_dir": "half-cheetah-dir",
    "ant_vel": "ant-vel",
    "ant_dir": "ant-dir",
}


def tested_runs(results: Path, name: str) -> list[Path]:
    """MAML's, the pretrained policy's and the random initialisation's tested run directories."""
    runs = [results / name, results / f"pretrained_{name}", results / f"random_{name}"]
    return [run for run in runs if (run / RESULTS_FILE).exists()]


def figure5(results: Path, out: Path) -> Path:
    """Draw the four panels into ``out``; returns it."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(FAMILIES), figsize=(4.2 * len(FAMILIES), 4.6))
    for ax, (name, family) in zip(axes, FAMILIES.items()):
        runs = tested_runs(results, name)
        draw_return_vs_steps(ax, runs, family)
        if not runs:
            ax.text(0.5, 0.5, "not run yet", transform=ax.transAxes, ha="center", color="0.4")
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, plt, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results/rl"))
    parser.add_argument("--out", type=Path, default=Path("docs/figures/figure5_locomotion.png"))
    args = parser.parse_args()
    if not args.results.is_dir():
        raise SystemExit(f"{args.results} is not a directory: give --results the folder of runs")
    print(f"wrote {figure5(args.results, args.out)}")


if __name__ == "__main__":
    main()
