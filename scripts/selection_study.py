"""How well does validation pick the checkpoint the test would? (issue: the README's main job)

Trains the sinusoid main job (``configs/sinusoid/maml_10shot.toml``) with every 5,000-step
checkpoint kept, then scores each checkpoint on validation sets of several sizes and on the test
set (all with the test's protocol: K = 5, 10 steps) and writes the mean query MSE after each
step as JSON. This looks at the test set on purpose, to judge selection rules; a run never does.

    python scripts/selection_study.py --threads 1 --out /tmp/study.json   # ~5 minutes
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from metagrad.config import load_config
from metagrad.train.build import build_experiment
from metagrad.train.checkpoint import load_checkpoint
from metagrad.train.testing import evaluate_split
from metagrad.train.trainer import resume_run, train

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "sinusoid" / "maml_10shot.toml"


def checkpoints(threads: int, every: int, run: Path) -> dict[int, dict]:
    """Train in ``every``-step pieces (resume is exact) and keep each piece's weights."""
    cfg = load_config(CONFIG, [f"train.threads={threads}", "train.val_every=0"])
    kept = {}
    for stop in range(every, cfg.train.iterations + 1, every):
        if stop == every:
            train(cfg, run, test=False, max_steps=stop)
        else:
            resume_run(run, test=False, max_steps=stop)
        weights, state = load_checkpoint(run, "last")
        kept[state["step"]] = weights
    return kept


def scores(kept: dict[int, dict], split: str, tasks: int) -> list[dict]:
    """Mean query MSE after each inner step, per checkpoint (``None``: not finite)."""
    cfg = load_config(CONFIG, [f"train.val_tasks={tasks}", f"eval.tasks={tasks}"])
    exp = build_experiment(cfg)
    rows = []
    for step, weights in kept.items():
        exp.model.load_state_dict(weights)
        losses = evaluate_split(exp, split, tasks).losses.mean(axis=1)  # [inner steps + 1]
        rows.append({"split": split, "tasks": tasks, "step": step, "loss": losses.tolist()})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--every", type=int, default=5000)
    parser.add_argument("--val-tasks", type=int, nargs="+", default=[200, 2000, 5000])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        kept = checkpoints(args.threads, args.every, Path(tmp) / "run")
    torch.set_num_threads(1)
    rows = scores(kept, "test", 600)
    for tasks in args.val_tasks:
        rows += scores(kept, "val", tasks)
    args.out.write_text(json.dumps(rows) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
