"""How metagrad's speed scales with the meta-batch and the inner steps, and checkpoint memory.

Usage::

    python benchmarks/scaling.py --paths auto,loop --iters 3 --out scaling.json
    python benchmarks/scaling.py --quick                       # a smoke run

Three sweeps over the reference setting (``--setting``, ``--model``), each point timed
interleaved with the others of its sweep:

- tasks/s against the meta-batch size (``--batches``, default 1..64);
- tasks/s against the number of inner steps (``--steps``, default 1..10);
- working memory of one meta-iteration at 1/5/20/50 inner steps with and without
  ``recompute_inner=True``, if ``metagrad.MAML`` has that option (skipped otherwise).
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import ``benchmarks`` from the repo root,
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # not its modules as top-level ones

import torch

import metagrad
from benchmarks import measure, report
from benchmarks.memory import MemoryJob, isolated_working_memory
from benchmarks.models import metagrad_model
from benchmarks.peers import MetagradImpl
from benchmarks.settings import SETTINGS, Setting, make_batch


def ints(text: str) -> list[int]:
    """``"1,2,4"`` -> ``[1, 2, 4]``."""
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--setting", default="reference", choices=list(SETTINGS))
    p.add_argument("--model", default="max", help="Conv4 variant: max or stride")
    p.add_argument(
        "--paths", default="auto", help="metagrad paths[:conv], e.g. auto,loop,vectorized:grouped"
    )
    p.add_argument("--batches", default="1,2,4,8,16,32,64", help="meta-batch sizes")
    p.add_argument("--steps", default="1,2,3,4,5,6,7,8,9,10", help="inner step counts")
    p.add_argument("--ckpt-steps", default="1,5,20,50", help="inner steps of the memory sweep")
    p.add_argument(
        "--tasks", type=int, default=None, help="meta-batch of the steps and memory sweeps"
    )
    p.add_argument("--sweeps", default="batch,steps,checkpoint", help="which sweeps to run")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="smoke run: tiny sweeps, 1 iteration")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the JSON record here")
    args = p.parse_args(argv)
    if args.quick:
        args.iters, args.warmup = 1, 0
        args.batches, args.steps, args.ckpt_steps = "1,2", "1,2", "1,2"
        args.tasks = args.tasks or 2
    return args


def checkpoint_supported() -> bool:
    """Whether ``metagrad.MAML`` exposes a ``recompute_inner`` option."""
    return hasattr(metagrad.MAML, "recompute_inner") or (
        "recompute_inner" in inspect.signature(metagrad.MAML.__init__).parameters
    )


def make_impl(setting: Setting, pool: str, spec: str, seed: int, **options) -> MetagradImpl:
    """metagrad on ``spec`` = ``path`` or ``path:conv`` (e.g. ``vectorized:grouped``)."""
    path, _, conv = spec.partition(":")
    model = metagrad_model(setting, pool, seed)
    name = f"metagrad-{spec}"
    in_signature = "recompute_inner" in inspect.signature(metagrad.MAML.__init__).parameters
    if "recompute_inner" in options and not in_signature:  # an attribute, not an argument
        impl = MetagradImpl(name, model, setting, path, conv or None)
        impl.maml.recompute_inner = options["recompute_inner"]
        return impl
    return MetagradImpl(name, model, setting, path, conv or None, **options)


def sweep(
    base: Setting, pool: str, field: str, values: list[int], args: argparse.Namespace
) -> list[dict]:
    """tasks/s of every path at every value of ``field`` ("tasks" or "steps"), interleaved."""
    runners, points = {}, {}
    for value in values:
        setting = base.replace(**{field: value})
        batch = make_batch(setting, args.seed)
        for path in args.paths.split(","):
            impl = make_impl(setting, pool, path, args.seed)
            key = f"{field}={value} {path}"
            runners[key] = lambda i=impl, b=batch: i.step(b)
            points[key] = (value, path, setting)
    timings = measure.time_interleaved(runners, args.iters, args.warmup)
    rows = []
    for key, (value, path, setting) in points.items():
        med, over = timings[key].median()
        rows.append(
            {
                field: value,
                "path": path,
                "median_s": med,
                "median_over": over,
                "tasks_per_s": setting.tasks / med,
                "busy_iterations": len(timings[key].seconds) - len(timings[key].quiet),
            }
        )
    return rows


def checkpoint_memory(base: Setting, pool: str, args: argparse.Namespace) -> list[dict]:
    """Working memory at each ``--ckpt-steps`` with and without ``recompute_inner``."""
    rows = []
    for steps in ints(args.ckpt_steps):
        setting = base.replace(steps=steps)
        for path in args.paths.split(","):
            for ckpt in (False, True):
                job = MemoryJob(  # in a process of its own: see benchmarks/memory.py
                    "benchmarks.scaling:make_impl",
                    {
                        "setting": setting,
                        "pool": pool,
                        "spec": path,
                        "seed": args.seed,
                        "recompute_inner": ckpt,
                    },
                    setting,
                    args.seed,
                    args.threads,
                )
                used, how = isolated_working_memory(job)
                rows.append(
                    {
                        "steps": steps,
                        "path": path,
                        "variant": f"{path} recompute_inner={ckpt}",
                        "recompute_inner": ckpt,
                        "tasks": setting.tasks,
                        "memory_bytes": used,
                        "memory_method": how,
                    }
                )
    return rows


def table(rows: list[dict], key: str, value: str, fmt: str, col: str = "path") -> str:
    """A Markdown table with one row per ``key`` value and one column per ``col`` value."""
    cols = list(dict.fromkeys(r[col] for r in rows))
    lines = [f"| {key} | " + " | ".join(cols) + " |", "| --- |" + " --- |" * len(cols)]
    for k in dict.fromkeys(r[key] for r in rows):
        cells = [format(r[value], fmt) for c in cols for r in rows if r[key] == k and r[col] == c]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    """Run the selected sweeps; prints Markdown and returns (and writes) the JSON record."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    base = SETTINGS[args.setting]
    fixed = base.replace(tasks=args.tasks) if args.tasks else base  # steps and memory sweeps
    pool = "mlp" if base.net == "mlp" else args.model
    sweeps = args.sweeps.split(",")
    foreign_before = measure.foreign_load(1.0)
    result: dict = {"machine": report.machine_info(), "config": vars(args), "warnings": []}
    out = [f"## metagrad scaling ({base.name}, {pool}; tasks/s, {args.iters} iterations)", ""]
    if "batch" in sweeps:
        result["batch"] = sweep(base, pool, "tasks", ints(args.batches), args)
        out += [
            "### tasks/s vs meta-batch",
            "",
            table(result["batch"], "tasks", "tasks_per_s", ".2f"),
        ]
    if "steps" in sweeps:
        result["steps"] = sweep(fixed, pool, "steps", ints(args.steps), args)
        out += ["", "### tasks/s vs inner steps", ""]
        out.append(table(result["steps"], "steps", "tasks_per_s", ".2f"))
    if "checkpoint" in sweeps:
        if checkpoint_supported():
            rows = checkpoint_memory(fixed, pool, args)
            result["checkpoint"] = rows
            for r in rows:
                r["memory_mb"] = r["memory_bytes"] / 2**20
            out += ["", "### working memory (MB) vs inner steps", ""]
            out.append(table(rows, "steps", "memory_mb", ".0f", col="variant"))
        else:
            result["checkpoint"] = "skipped: metagrad.MAML has no recompute_inner option"
            out += ["", f"checkpoint sweep {result['checkpoint']}"]
    foreign_after = measure.foreign_load(1.0)
    busy = sum(r["busy_iterations"] for k in ("batch", "steps") for r in result.get(k, []))
    for when, cores in (("before", foreign_before), ("after", foreign_after)):
        if cores >= measure.QUIET_CORES:
            result["warnings"].append(f"other processes used {cores:.2f} cores {when} the run")
    if busy:
        result["warnings"].append(f"{busy} timed iterations ran while other processes were busy")
    out += ["", *[f"- **WARNING**: {w}" for w in result["warnings"]]]
    print("\n".join(out))
    if args.out:
        report.write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
