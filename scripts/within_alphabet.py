"""Omniglot's hardest few-shot case through `metagrad adapt` (issue 16, RESULTS.md).

Each episode takes one evaluation alphabet and ``--ways`` of its characters (20 by default:
letters that look alike, unlike episodes mixing alphabets), writes one drawing of each as the
support set (``support/<character>/``) and ``--queries`` drawings of each by *other* drawers
as the query folder, all as 105x105 1-bit PNGs like the official files, then runs

    metagrad adapt MODEL --support support --query query --out predictions.csv

and scores the CSV. Episodes are fixed by their index (seeded); prints one line per episode
and the mean accuracy over episodes with its 95% interval.

    python scripts/within_alphabet.py omniglot-maml-20w --episodes 20 --ways 20 --queries 5
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import math
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from metagrad.cli.main import main as metagrad
from metagrad.data.alphabets import ALPHABETS

EVALUATION_FIRST_ID = 965  # row 0 of images_evaluation.npz (the npz's README)


def evaluation_alphabets(ways: int) -> list[tuple[str, range]]:
    """The evaluation alphabets with at least ``ways`` characters, as npz row ranges."""
    return [
        (name, range(first - EVALUATION_FIRST_ID, last - EVALUATION_FIRST_ID + 1))
        for name, first, last in ALPHABETS
        if first >= EVALUATION_FIRST_ID and last - first + 1 >= ways
    ]


def write_episode(root: Path, images: np.ndarray, index: int, ways: int, queries: int):
    """Episode ``index``'s folders under ``root``; returns its alphabet and the true class of
    each query file by name."""
    rng = np.random.default_rng(index)
    alphabets = evaluation_alphabets(ways)
    name, rows = alphabets[rng.integers(len(alphabets))]
    chosen = rng.choice(np.asarray(rows), ways, replace=False)
    drawers = rng.permutation(20)  # drawer 0 draws the support set, the next ones the queries
    truth = {}
    for row in chosen:
        label = f"char{row:03d}"
        (root / "support" / label).mkdir(parents=True)
        Image.fromarray(images[row, drawers[0]]).save(root / "support" / label / "0.png")
        for d in drawers[1 : 1 + queries]:
            file = f"{label}_{d:02d}.png"
            Image.fromarray(images[row, d]).save(root / "query" / file)
            truth[file] = label
    return name, truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a run directory, checkpoint or shipped name")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/omniglot"))
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--ways", type=int, default=20)
    parser.add_argument("--queries", type=int, default=5, help="query drawings per character")
    parser.add_argument("--extra", nargs="*", default=[], help="more `metagrad adapt` options")
    args = parser.parse_args()
    with np.load(args.data / "images_evaluation.npz") as f:
        images = f["images"]  # [659, 20, 105, 105] bool, True = paper
    scores = []
    for index in range(args.episodes):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "query").mkdir()
            alphabet, truth = write_episode(root, images, index, args.ways, args.queries)
            out = root / "predictions.csv"
            argv = ["adapt", args.model, "--support", str(root / "support")]
            argv += ["--query", str(root / "query"), "--out", str(out), *args.extra]
            shown = io.StringIO()
            with contextlib.redirect_stdout(shown):  # the per-query table: in the CSV
                failed = metagrad(argv) != 0
            if failed:
                raise SystemExit(f"metagrad adapt failed on episode {index}:\n{shown.getvalue()}")
            with open(out, newline="") as f:
                rows = list(csv.DictReader(f))
        right = [truth[Path(r["path"]).name] == r["predicted_class"] for r in rows]
        scores.append(float(np.mean(right)))
        print(f"episode {index:2d} {alphabet:40s} {scores[-1]:.1%} of {len(right)}", flush=True)
    mean = float(np.mean(scores))
    ci95 = 1.96 * float(np.std(scores, ddof=1)) / math.sqrt(len(scores)) if len(scores) > 1 else 0
    print(
        f"{args.model}: {args.ways}-way 1-shot within one alphabet, {args.episodes} episodes: "
        f"{mean:.2%} ± {ci95:.2%}"
    )


if __name__ == "__main__":
    main()
