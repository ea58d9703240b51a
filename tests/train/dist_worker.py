"""One process of a gloo run started by tests/train/test_distributed.py (``RANK``,
``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` set, one thread): runs the jobs given as
JSON, one after the other, in one process group, as ``torchrun`` would run ``metagrad train``.

Jobs (``{"kind": ..., **arguments}``):

- ``train``: ``metagrad.train.trainer.train(load_config(config, overrides), out, test=test)``;
- ``resume``: ``resume_run(out, overrides, test=False)``;
- ``gradient``: the meta-gradient of one meta-batch (``reduce``), written by rank 0 to ``out``
  (safetensors);
- ``evaluate``: the query losses of ``evaluate_split`` on ``tasks`` test tasks, written by
  rank 0 to ``out`` (.npy).

A ``train`` job with ``seconds`` (a plan's label -> seconds) measures ``path = "auto"`` with
that injected clock on rank 0 (any other rank that measures fails) and writes each rank's
plans to ``out/plans-rank<r>.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import safetensors.torch
import torch

from metagrad.config import load_config
from metagrad.train.build import build_experiment
from metagrad.train.distributed import process_group
from metagrad.train.sharding import sharded_backward
from metagrad.train.testing import evaluate_split
from metagrad.train.trainer import resume_run, train


def main(jobs: list[dict]) -> None:
    torch.set_num_threads(1)
    with process_group(60.0) as ranks:
        for job in jobs:
            kind, out = job["kind"], Path(job["out"])
            if kind == "train" and "seconds" in job:
                _train_measuring(ranks.rank, job, out)
            elif kind == "train":
                cfg = load_config(job["config"], job.get("overrides", []))
                train(cfg, out, test=job.get("test", False))
            elif kind == "resume":
                resume_run(out, job.get("overrides", []), test=False)
            else:
                cfg = load_config(job["config"], job.get("overrides", []))
                exp = build_experiment(cfg, ranks)
                if kind == "gradient":
                    batch = exp.train_tasks.sample(cfg.train.meta_batch_size)
                    sharded_backward(exp.learner, batch, ranks, job["reduce"])
                    named = exp.model.named_parameters()
                    grads = {k: p.grad.contiguous() for k, p in named}
                    if ranks.leader:
                        safetensors.torch.save_file(grads, out)
                else:
                    result = evaluate_split(exp, "test", job["tasks"])
                    if ranks.leader:
                        np.save(out, result.losses)


def _train_measuring(rank: int, job: dict, out: Path) -> None:
    import os

    from metagrad.algorithms import learner as learner_module
    from metagrad.algorithms.autotune import MEASURE_ENV, Autotuner
    from metagrad.train import supervised

    def timer(plan, fn):
        if rank != 0:
            raise RuntimeError(f"rank {rank} measured")
        fn()
        return job["seconds"][plan.label]

    learners = []
    record = supervised.record_paths

    def keep(learner, *args):
        learners.append(learner)
        record(learner, *args)

    kept = os.environ.get(MEASURE_ENV), learner_module.Autotuner
    os.environ[MEASURE_ENV] = "1"
    learner_module.Autotuner = lambda budget: Autotuner(budget, timer=timer, memory=timer)
    supervised.record_paths = keep
    try:  # the next jobs of this process run as before
        train(load_config(job["config"], job.get("overrides", [])), out, test=False)
    finally:
        supervised.record_paths, learner_module.Autotuner = record, kept[1]
        if kept[0] is None:
            del os.environ[MEASURE_ENV]
        else:
            os.environ[MEASURE_ENV] = kept[0]
    plans = {k: p.label for k, p in learners[0].plans.items()}
    (out / f"plans-rank{rank}.json").write_text(json.dumps(plans))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
