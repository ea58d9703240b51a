"""How a new task's head should start, and what the deployment BatchNorm mode costs (issue 16).

Meta-tests a trained Omniglot run (``metagrad.load``) with ``metagrad.meta_test`` on its own
fixed test episodes (those of ``metagrad test``: the run's split, seed and test steps), once
per head initialisation (trained, zero, prototypes) and BatchNorm mode (transductive, support),
and on 20- or 30-way episodes of the same split with the per-task heads. Prints one JSON line
per measurement (accuracy after the first and last scored steps, mean ± 95% interval).

    python scripts/adapt_heads.py RUN_DIR --tasks 300 --queries 15 --ways 5,20
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import metagrad
from metagrad.config import load_config
from metagrad.train.build import build_experiment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--queries", type=int, default=15)
    parser.add_argument("--ways", default="5", help="comma-separated ways to test")
    parser.add_argument("--heads", default="trained,zero,prototypes")
    parser.add_argument("--modes", default="transductive,support")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    learner = metagrad.load(args.run_dir)
    for ways in map(int, args.ways.split(",")):
        overrides = [f"task.ways={ways}", f"eval.queries={args.queries}"]
        cfg = load_config(f"{args.run_dir}/config.toml", overrides)
        tasks = build_experiment(cfg).fixed("test", 0, args.tasks)
        for head in args.heads.split(","):
            if head == "trained" and ways != learner.config.task.ways:  # the head's units
                continue
            for mode in args.modes.split(","):
                start = time.perf_counter()
                chunks = tasks.chunks(50)
                result = metagrad.meta_test(learner, chunks, head=head, batch_norm=mode)
                line = {
                    "run": learner.source,
                    "ways": ways,
                    "head": head,
                    "batch_norm": mode,
                    "tasks": result.tasks,
                    "queries_per_class": args.queries,
                    "step0": vars(result.accuracy(0)),
                    f"step{result.steps[-1]}": vars(result.accuracy(-1)),
                    "seconds": round(time.perf_counter() - start, 1),
                }
                print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
