"""Tasks per second of a meta-batch split over 1, 2, ... processes (issue 18).

Usage::

    python benchmarks/distributed.py --processes 1,2 --threads 1 --steps 30 --out dist.json
    python benchmarks/distributed.py --config omniglot/maml_5w1s \\
        --set task.root=../shared/data/omniglot --set train.meta_batch_size=32 --processes 1,2
    python benchmarks/distributed.py --quick                    # a smoke run, seconds

For each number of processes (and each ``--reduce``) the script starts that many copies of
itself as one gloo run (the variables ``torchrun`` sets: ``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``, ``MASTER_PORT``; one process runs without a process group, the plain
training step), each with ``--threads`` threads. Every process builds the experiment of the
config, takes ``--warmup`` steps, then ``--steps`` timed steps of exactly what
``metagrad train`` does (draw the meta-batch, :func:`metagrad.train.sharding.sharded_backward`,
the optimiser's step), between two barriers. Rank 0 reports the meta-batch's tasks per second
and the time of the exchange alone (the same collective on a gradient-sized vector, timed
separately), so the table shows the scaling of the sharding itself: on one machine with one
thread per process it is the CPU cores that are added, not threads.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", default="sinusoid/maml_10shot", help="a config file or name")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--processes", default="1,2", help="numbers of processes to time")
    p.add_argument("--reduce", default="all_reduce", help="all_reduce,ordered")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="smoke run: 3 steps, 1 warm-up")
    p.add_argument("--out", type=Path, help="write the rows as JSON")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.warmup = 3, 1
    return args


def worker(args: argparse.Namespace) -> None:
    """One process: the timed steps, rank 0's row written to ``args.result``."""
    import torch
    import torch.distributed as dist

    from metagrad.cli.configs import resolve_config
    from metagrad.config import load_config
    from metagrad.train.build import build_experiment
    from metagrad.train.distributed import all_sum, gather_rows, process_group
    from metagrad.train.sharding import sharded_backward
    from metagrad.train.supervised import make_outer_optimizer

    torch.set_num_threads(args.threads)
    cfg = load_config(resolve_config(Path(args.config)), args.overrides)
    with process_group(600.0) as ranks:
        exp = build_experiment(cfg, ranks)
        learner, tasks = exp.learner, cfg.train.meta_batch_size
        opt = make_outer_optimizer(cfg, learner.parameters())

        def step() -> None:
            batch = exp.train_tasks.sample(tasks)
            opt.zero_grad(set_to_none=True)
            sharded_backward(learner, batch, ranks, cfg.train.reduce, exp.classification)
            opt.step()

        def barrier() -> None:
            if ranks.many:
                dist.barrier()

        for _ in range(args.warmup):
            step()
        barrier()
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        barrier()
        seconds = time.perf_counter() - start
        # The exchange alone, on a vector of the gradient's size (+ 3 scores).
        size = sum(p.numel() for p in learner.parameters()) + 3
        flat = torch.zeros(size, dtype=next(learner.parameters()).dtype)
        counts = ranks.counts(tasks)
        barrier()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            if cfg.train.reduce == "ordered":
                gather_rows(ranks, flat.expand(counts[ranks.rank], size).clone(), counts)
            else:
                all_sum(ranks, flat)
        barrier()
        exchange = (time.perf_counter() - t0) / args.steps
    if ranks.leader:
        row = {
            "config": args.config,
            "processes": ranks.world,
            "threads": args.threads,
            "reduce": cfg.train.reduce,
            "meta_batch_size": tasks,
            "parameters": size - 3,
            "steps": args.steps,
            "seconds_per_step": seconds / args.steps,
            "tasks_per_s": tasks * args.steps / seconds,
            "exchange_ms": 1000 * exchange if ranks.many else 0.0,
        }
        args.result.write_text(json.dumps(row))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: argparse.Namespace, world: int, reduce: str, result: Path) -> dict:
    """Run ``world`` worker processes as one gloo run; rank 0's row."""
    port = _free_port()
    argv = [sys.executable, str(Path(__file__).resolve()), "--worker", "--result", str(result)]
    argv += ["--config", args.config, "--threads", str(args.threads)]
    argv += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
    for o in [*args.overrides, f"train.reduce={reduce}"]:
        argv += ["--set", o]
    procs = []
    for rank in range(world):
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
        if world > 1:
            env.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
            env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        procs.append(subprocess.Popen(argv, env=env))
    codes = [p.wait() for p in procs]
    if any(codes):
        sys.exit(f"a worker failed (exit codes {codes})")
    return json.loads(result.read_text())


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return
    rows = []
    for reduce in args.reduce.split(","):
        for world in [int(n) for n in args.processes.split(",")]:
            result = Path(os.environ.get("TMPDIR", "/tmp")) / f"metagrad-dist-{os.getpid()}.json"
            rows.append(launch(args, world, reduce, result))
            result.unlink(missing_ok=True)
    base = {r["reduce"]: r["tasks_per_s"] for r in rows if r["processes"] == 1}
    print(f"{args.config} {' '.join(args.overrides)}; {args.threads} thread(s) per process")
    print("| processes | reduce | tasks/s | speed-up | s/step | exchange ms/step |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        speedup = r["tasks_per_s"] / base.get(r["reduce"], r["tasks_per_s"])
        print(
            f"| {r['processes']} | {r['reduce']} | {r['tasks_per_s']:.1f} | {speedup:.2f}x | "
            f"{r['seconds_per_step']:.4f} | {r['exchange_ms']:.2f} |"
        )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
