"""Where metagrad's time goes: ``torch.profiler`` table of one meta-iteration.

    python benchmarks/profile_loop.py --tasks 8 --path loop --pool max
    python benchmarks/profile_loop.py --tasks 16 --ways 20 --queries 1 --steps 5 \
        --path vectorized --pool stride --threads 1        # MAML's 20-way 1-shot

Random Omniglot-shaped episodes (default 5-way 1-shot, 15 queries per class), Conv4 with 64
filters, second-order inner steps; prints ms per task and the top ops by self CPU time.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from metagrad import MAML, TaskBatch
from metagrad.models import Conv4
from metagrad.runtime import keep_freed_memory


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=8)
    p.add_argument("--ways", type=int, default=5)
    p.add_argument("--shots", type=int, default=1)
    p.add_argument("--queries", type=int, default=15)
    p.add_argument("--steps", type=int, default=1, help="inner steps")
    p.add_argument("--inner-lr", type=float, default=0.4)
    p.add_argument("--path", default="loop")
    p.add_argument("--pool", default="max", choices=["max", "stride"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rows", type=int, default=25)
    args = p.parse_args()
    keep_freed_memory()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t, ways, k, q = args.tasks, args.ways, args.shots, args.queries
    batch = TaskBatch(
        torch.randn(t, ways * k, 1, 28, 28),
        torch.arange(ways).repeat_interleave(k).repeat(t, 1),
        torch.randn(t, ways * q, 1, 28, 28),
        torch.arange(ways).repeat_interleave(q).repeat(t, 1),
    )
    maml = MAML(
        Conv4(ways, pool=args.pool), inner_lr=args.inner_lr, inner_steps=args.steps, path=args.path
    )
    maml.backward(batch)  # warm-up
    start = time.perf_counter()
    maml.backward(batch)
    print(f"{(time.perf_counter() - start) / t * 1e3:.1f} ms per task")
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        maml.backward(batch)
    averages = prof.key_averages(group_by_input_shape=True)
    print(averages.table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
