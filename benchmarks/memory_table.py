"""Working memory of metagrad and the peers, every implementation in a process of its own.

Usage::

    python benchmarks/memory_table.py --settings all --keep-freed-memory --out memory.json
    python benchmarks/memory_table.py --settings k5 --models stride --impls 'metagrad-loop,l2l'

Memory only (no timing, so it can run beside other work): for each (setting, model) and each
implementation, one warm-up iteration and one measured iteration in a freshly spawned
interpreter (``benchmarks/memory.py``), reporting peak resident memory during the iteration
minus that before it. ``compare.py`` measures the same way after timing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import ``benchmarks`` from the repo root,
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # not its modules as top-level ones

from benchmarks import report
from benchmarks.memory import MemoryJob, isolated_working_memory
from benchmarks.models import metagrad_model
from benchmarks.peers import build_implementations, selected
from benchmarks.settings import (
    add_override_args,
    check_models,
    overridden,
    select_settings,
    wanted,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--settings", default="reference", help="comma list of settings, or all")
    p.add_argument(
        "--models",
        default=None,
        help="models to run, of max,stride,resnet12 (default: every model of each setting)",
    )
    p.add_argument(
        "--impls",
        default="metagrad-loop,metagrad-loop-recompute,metagrad-auto,metagrad-test,l2l,higher,"
        "torchopt",
        help="fnmatch patterns of implementation names",
    )
    add_override_args(p)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--keep-freed-memory", action="store_true", help="as compare.py")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the JSON record here")
    return p.parse_args(argv)


def measure_all(args: argparse.Namespace) -> list[dict]:
    """One row per (setting, model): MB by implementation name, and what was skipped."""
    rows = []
    patterns = args.impls.split(",")
    settings = overridden(select_settings(args.settings), args)
    check_models(args.models, settings)
    for setting in settings:
        for pool in setting.pools:
            if not wanted(pool, args.models):
                continue
            reference = metagrad_model(setting, pool, args.seed)
            impls, skipped = build_implementations(setting, pool, reference, patterns)
            names = [i.name for i in impls if selected(i.name, patterns)]
            mb = {}
            for name in names:
                kwargs = {"setting": setting, "pool": pool, "name": name, "seed": args.seed}
                job = MemoryJob(
                    "benchmarks.peers:build_one",
                    kwargs,
                    setting,
                    args.seed,
                    args.threads,
                    args.keep_freed_memory,
                )
                mb[name] = isolated_working_memory(job)[0] / 2**20
                print(f"# {setting.name}/{pool} {name}: {mb[name]:.1f} MB", file=sys.stderr)
            rows.append({"setting": setting.name, "model": pool, "mb": mb, "skipped": skipped})
    return rows


def markdown(rows: list[dict]) -> str:
    names = list(dict.fromkeys(n for r in rows for n in r["mb"]))
    lines = [
        "| setting | model | " + " | ".join(names) + " | best metagrad / lowest peer |",
        "| --- | --- |" + " --- |" * (len(names) + 1),
    ]
    for r in rows:
        peers = [v for n, v in r["mb"].items() if not n.startswith("metagrad")]
        ours = min(v for n, v in r["mb"].items() if n.startswith("metagrad"))
        cells = [f"{r['mb'][n]:.1f}" if n in r["mb"] else "" for n in names]
        ratio = f"{ours / min(peers):.2f}" if peers and min(peers) > 0 else ""
        lines.append(f"| {r['setting']} | {r['model']} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    rows = measure_all(args)
    print(markdown(rows))
    if args.out:
        report.write_json(
            {"machine": report.machine_info(), "config": vars(args), "rows": rows}, args.out
        )
    return rows


if __name__ == "__main__":
    main()
