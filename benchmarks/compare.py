"""Run metagrad and its peers side by side on the named settings.

Usage::

    python benchmarks/compare.py --settings reference,k5 --iters 10 --warmup 2 --out results.json
    python benchmarks/compare.py --quick --tasks 2           # a 1-iteration smoke run
    python benchmarks/compare.py --settings b105,test-5w1s --quick --size 16 --widths 4,8,8,8
    python benchmarks/compare.py --settings 5w1s-q1,20w1s-q1,5w5s-q5   # the MAML paper's own

Per (setting, model): every implementation's meta-gradient from the same weights is checked
against metagrad's loop in float64 (fresh copies of every implementation, ``--exact-tol``), and
its float32 meta-gradient is measured against that float64 one (the float32 error column:
rounding, not correctness; test episodes: the float32 query predictions against the loop's);
the loop's FLOPs are counted during that check; then all are timed interleaved; then the
working memory of one more iteration of each is measured. ``metagrad-auto`` measures the
paths in its first step (the check): the report names the plan it picked, the JSON keeps what
it measured (its memory is measured in a process of its own, which measures again and may pick
otherwise under load). Prints a Markdown report and writes the JSON record to ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import ``benchmarks`` from the repo root,
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # not its modules as top-level ones

import torch
from torch import nn

from benchmarks import measure, report
from benchmarks.memory import MemoryJob, isolated_working_memory
from benchmarks.models import metagrad_model
from benchmarks.peers import Implementation, MetagradImpl, build_implementations
from benchmarks.settings import (
    SETTINGS,
    Setting,
    add_override_args,
    check_models,
    make_batch,
    overridden,
    select_settings,
    wanted,
)
from metagrad.types import TaskBatch

REFERENCE = "metagrad-loop"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--settings", default="reference", help=f"comma list of {list(SETTINGS)}, or all"
    )
    p.add_argument(
        "--models",
        default=None,
        help="models to run, of max,stride,resnet12 (default: every model of each setting)",
    )
    p.add_argument(
        "--impls",
        default=None,
        help="fnmatch patterns, e.g. 'metagrad-*,higher' (metagrad-loop always runs)",
    )
    p.add_argument("--iters", type=int, default=10, help="timed iterations per implementation")
    p.add_argument("--warmup", type=int, default=2, help="untimed iterations first")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 iteration, no warm-up")
    add_override_args(p)
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument(
        "--grad-tol",
        type=float,
        default=1e-4,
        help="relative tolerance of the test episodes' float32 predictions",
    )
    p.add_argument(
        "--exact-tol",
        type=float,
        default=1e-8,
        help="relative tolerance of the float64 meta-gradients against metagrad's loop",
    )
    p.add_argument("--matmul-size", type=int, default=4096, help="n of the ceiling matmul")
    p.add_argument("--no-memory", action="store_true", help="skip the working-memory pass")
    p.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="process-wide glibc tuning of metagrad.runtime (applies to every implementation)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the JSON record here")
    args = p.parse_args(argv)
    if args.iters < 1 or args.warmup < 0:
        p.error("--iters must be >= 1 and --warmup >= 0")
    if args.quick:
        args.iters, args.warmup, args.matmul_size = 1, 0, min(args.matmul_size, 2048)
    return args


def run_one(
    setting: Setting, pool: str, args: argparse.Namespace, ceiling: float
) -> tuple[dict, list[str]]:
    """Check, time and measure every implementation of one (setting, model)."""
    patterns = args.impls.split(",") if args.impls else None
    batch = make_batch(setting, args.seed)
    reference = metagrad_model(setting, pool, args.seed)
    impls, skipped = build_implementations(setting, pool, reference, patterns)
    by_name: dict[str, Implementation] = {i.name: i for i in impls}
    ref, flops = measure.with_flops(lambda: by_name[REFERENCE].outputs(batch))
    test = setting.mode == "test"
    float32_error: dict[str, float] = {}
    if test:
        checks = measure.check_gradients(
            {n: (lambda i=i: i.outputs(batch)) for n, i in by_name.items()},
            REFERENCE,
            args.grad_tol,
            compare=measure.compare_predictions,
            ref=ref,
        )
    else:  # float32 once each (it warms up, and "auto" measures), then exact in float64
        outputs = {n: ref if n == REFERENCE else i.outputs(batch) for n, i in by_name.items()}
        exact = exact_meta_gradients(setting, pool, reference, patterns, batch)
        checks = measure.check_gradients(
            {n: (lambda n=n: exact[n]) for n in by_name}, REFERENCE, args.exact_tol
        )
        truth = exact[REFERENCE]
        for n, out in outputs.items():
            float32_error[n] = measure.compare_grads(out, truth, float("inf")).worst_rel
    checked = "predictions" if test else "meta-gradient"
    picked = _auto_picks(by_name)  # the checks ran a first step: "auto" has measured
    timings = measure.time_interleaved(
        {n: (lambda i=i: i.step(batch)) for n, i in by_name.items()}, args.iters, args.warmup
    )
    warnings = [
        f"{setting.name}/{pool}: {n} {checked} differs from {REFERENCE}'s "
        f"(worst relative error {c.worst_rel:.2e} in {c.worst_tensor})"
        for n, c in checks.items()
        if not c.ok
    ]
    results = {}
    for name, impl in by_name.items():
        r = measure.summarize(timings[name], setting.tasks, flops, ceiling)
        r.update(family=impl.family, detail=impl.detail, grad=vars(checks[name]))
        r["float32_error"] = float32_error.get(name)
        if name in picked:
            r["detail"] += f", picked {picked[name][0]['label']}"
            r["auto_decisions"] = picked[name]
        if not args.no_memory:  # in a process of its own: see benchmarks/memory.py
            job = MemoryJob(
                "benchmarks.peers:build_one",
                {"setting": setting, "pool": pool, "name": name, "seed": args.seed},
                setting,
                args.seed,
                args.threads,
                args.keep_freed_memory,
            )
            r["memory_bytes"], r["memory_method"] = isolated_working_memory(job)
        results[name] = r
    peers = [n for n, r in results.items() if r["family"] == "peer"]
    ratios = {
        n: {p: results[p]["median_s"] / r["median_s"] for p in peers}
        for n, r in results.items()
        if r["family"] == "metagrad"
    }
    run = {
        "setting": setting.name,
        "model": pool,
        "description": setting.description,
        "tasks": setting.tasks,
        "mode": setting.mode,
        "checked": checked,
        "setting_fields": vars(setting),
        "flops": flops,
        "skipped": skipped,
        "impls": results,
        "ratios": ratios,
    }
    return run, warnings


def exact_meta_gradients(
    setting: Setting, pool: str, reference: nn.Module, patterns: list[str] | None, batch
) -> dict[str, dict[str, torch.Tensor]]:
    """Every implementation's meta-gradient in float64: fresh implementations from the same
    weights, their models and the batch converted, so the timed ones keep their float32 state.

    Float32 meta-gradients cannot decide correctness here: in the MAML paper's 5-way 5-shot
    setting (32 tasks) PyTorch's BatchNorm gives the first convolution's meta-gradient with a
    1.9e-3 relative error against float64, while a correct implementation with other rounding
    (metagrad's folded first block) is within 5e-7 of it.
    """
    impls, _ = build_implementations(setting, pool, reference, patterns)
    batch64 = TaskBatch(
        *(
            t.double() if t.is_floating_point() else t
            for t in (batch.support_x, batch.support_y, batch.query_x, batch.query_y)
        )
    )
    exact = {}
    for impl in impls:
        impl.model.double()  # in place: every wrapper keeps its parameters
        exact[impl.name] = impl.outputs(batch64)
    return exact


def _auto_picks(impls: dict[str, Implementation]) -> dict[str, list[dict]]:
    """Each ``path="auto"`` implementation's decisions (printed to standard error): what it
    measured of every path and chunk size, and the plan it runs."""
    picked = {}
    for name, impl in impls.items():
        decisions = impl.auto_decisions() if isinstance(impl, MetagradImpl) else []
        for d in decisions:
            print(f"# {name}: {d.line()}", file=sys.stderr, flush=True)
        if decisions:
            picked[name] = [{**d.to_dict(), "label": d.plan.label} for d in decisions]
    return picked


def main(argv: list[str] | None = None) -> dict:
    """Run the comparison; returns the JSON record (also printed as Markdown)."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.keep_freed_memory:
        from metagrad.runtime import keep_freed_memory

        keep_freed_memory()
    settings = overridden(select_settings(args.settings), args)
    check_models(args.models, settings)
    warnings: list[str] = []
    load_before, foreign_before = measure.load_average(), measure.foreign_load(1.0)
    if load_before[0] > 0.5:
        warnings.append(f"load average {load_before[0]:.2f} before the run (> 0.5)")
    if foreign_before >= measure.QUIET_CORES:
        warnings.append(f"other processes used {foreign_before:.2f} cores before the run")
    for w in warnings:
        print(f"# WARNING: {w}", file=sys.stderr, flush=True)
    ceiling_before = measure.matmul_gflops(args.matmul_size, 1 if args.quick else 3)
    runs = []
    for setting in settings:
        for pool in setting.pools:
            if not wanted(pool, args.models):
                continue
            print(f"# running {setting.name} / {pool} ...", file=sys.stderr, flush=True)
            run, warn = run_one(setting, pool, args, ceiling_before)
            runs.append(run)
            warnings += warn
    ceiling_after = measure.matmul_gflops(args.matmul_size, 1 if args.quick else 3)
    ceiling = max(ceiling_before, ceiling_after)
    for run in runs:  # fractions of the better of the two ceilings
        for r in run["impls"].values():
            r["ceiling_fraction"] = r["gflops"] / ceiling
    load_after, foreign_after = measure.load_average(), measure.foreign_load(1.0)
    if load_after[0] > args.threads + 0.5:  # this run itself adds about --threads
        warnings.append(f"load average {load_after[0]:.2f} after the run (> threads + 0.5)")
    if foreign_after >= measure.QUIET_CORES:
        warnings.append(f"other processes used {foreign_after:.2f} cores after the run")
    busy = sum(r["busy_iterations"] for run in runs for r in run["impls"].values())
    total = sum(r["iterations"] for run in runs for r in run["impls"].values())
    if busy:
        warnings.append(
            f"{busy} of {total} timed iterations ran while other processes were busy "
            f"(>= {measure.QUIET_CORES} core); medians exclude them where >= 3 quiet remain"
        )
    result = {
        "machine": report.machine_info(),
        "config": {k: v for k, v in vars(args).items()},
        "ceiling_gflops": {"before": ceiling_before, "after": ceiling_after, "used": ceiling},
        "load": {
            "before": [round(x, 2) for x in load_before],
            "after": [round(x, 2) for x in load_after],
            "foreign_before": foreign_before,
            "foreign_after": foreign_after,
        },
        "warnings": warnings,
        "runs": runs,
    }
    print(report.markdown(result))
    if args.out:
        report.write_json(result, args.out)
        print(f"wrote {args.out}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
