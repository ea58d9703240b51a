"""Time to a validation accuracy on real Omniglot: metagrad against the peers, measured.

    python benchmarks/time_to_accuracy.py --root ../shared/data/omniglot --target 0.98 \\
        --impls 'metagrad-auto,l2l' --max-iters 8000 --out tta.json --figure tta.png

Every implementation trains the MAML paper's Omniglot 5-way 1-shot setting (strided Conv4,
1 query per class, meta-batch 32, inner step 0.4, Adam 1e-3, metagrad with the config's
``chunk_size``: ``configs/omniglot/maml_5w1s.toml``)
from the same initial weights on the same seeded stream of training episodes, one after the
other. Every ``--val-every`` iterations its weights are copied into metagrad's model and scored
on the same fixed validation episodes by the same evaluator (3 inner steps), which is not
counted as training time. The first implementation trains until the validation accuracy first
reaches ``--target`` (or ``--max-iters``); the others train exactly as many iterations, which is
the comparison asked for: the time a peer needs for the iterations that reach the target.
Reported: iterations, training seconds, seconds per iteration, the validation curve. Long: tens
of minutes per implementation; run it on a quiet machine (the foreign CPU load is reported).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(ROOT))

from benchmarks.measure import CpuSnapshot  # noqa: E402
from benchmarks.peers import Implementation, MetagradImpl, build_implementations  # noqa: E402
from benchmarks.settings import SETTINGS  # noqa: E402
from metagrad.config import load_config  # noqa: E402
from metagrad.runtime import keep_freed_memory  # noqa: E402
from metagrad.train.build import Experiment, build_experiment  # noqa: E402
from metagrad.train.testing import validation_metric  # noqa: E402

CONFIG = ROOT / "configs" / "omniglot" / "maml_5w1s.toml"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", required=True, help="Omniglot data (zips, folders or npz)")
    p.add_argument("--target", type=float, default=0.98, help="validation accuracy to reach")
    p.add_argument("--impls", default="metagrad-vec-grouped,l2l", help="comma-separated names")
    p.add_argument("--max-iters", type=int, default=8000)
    p.add_argument("--val-every", type=int, default=500)
    p.add_argument("--val-tasks", type=int, default=300)
    p.add_argument("--meta-batch", type=int, default=32, help="tasks per iteration (paper: 32)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the JSON record here")
    p.add_argument("--figure", default=None, help="draw validation against training minutes")
    p.add_argument("--from-json", default=None, help="draw --figure from a kept --out record")
    return p.parse_args(argv)


def plot(report: dict, path: str | Path) -> None:
    """Validation accuracy against training minutes, one line per implementation, the target
    dashed and each implementation's first point at it marked (matplotlib: the plot extra)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for run in report["runs"]:
        minutes = [p["train_seconds"] / 60 for p in run["curve"]]
        accuracy = [100 * p["accuracy"] for p in run["curve"]]
        (line,) = ax.plot(minutes, accuracy, marker="o", ms=3, label=run["name"])
        if run["reached"]:
            at = run["reached"]
            ax.plot(at["train_seconds"] / 60, 100 * at["accuracy"], "*", ms=12, c=line.get_color())
    ax.axhline(100 * report["target"], ls="--", c="grey", lw=1, label=f"{report['target']:.0%}")
    ax.set(xlabel="training minutes (validation not counted)", ylabel="validation accuracy (%)")
    ax.set_title(f"Omniglot 5-way 1-shot, MAML, {report['threads']} thread(s)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def load_weights(impl: Implementation, exp: Experiment) -> None:
    """Copy ``impl``'s weights into metagrad's model (same parameter order, see ``twin``)."""
    with torch.no_grad():
        for dst, src in zip(exp.model.parameters(), impl.model.parameters(), strict=True):
            dst.copy_(src)


def train_until(
    impl: Implementation, exp: Experiment, args: argparse.Namespace, iterations: int | None
) -> dict:
    """Train ``impl`` until validation reaches the target (``iterations=None``) or for
    exactly ``iterations`` iterations; the record of the run."""
    curve, seconds, start = [], 0.0, CpuSnapshot()
    reached = None
    for it in range(1, (iterations or args.max_iters) + 1):
        batch = exp.train_tasks.sample(exp.cfg.train.meta_batch_size)
        t0 = time.perf_counter()
        impl.step(batch)
        seconds += time.perf_counter() - t0
        if it % args.val_every == 0:
            load_weights(impl, exp)
            accuracy, _ = validation_metric(exp)
            curve.append({"iteration": it, "train_seconds": seconds, "accuracy": accuracy})
            print(f"{impl.name}: {it} its, {seconds:.0f} s, validation {accuracy:.4f}", flush=True)
            if accuracy >= args.target and reached is None:
                reached = curve[-1]
                if iterations is None:
                    break
    return {
        "name": impl.name,
        "detail": impl.detail,
        "reached": reached,
        "iterations": it,
        "train_seconds": seconds,
        "seconds_per_iteration": seconds / it,
        "foreign_cores": CpuSnapshot().foreign_since(start),
        "curve": curve,
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.from_json:
        report = json.loads(Path(args.from_json).read_text())
        if args.figure:
            plot(report, args.figure)
        return report
    keep_freed_memory()
    torch.set_num_threads(args.threads)
    cfg = load_config(
        CONFIG,
        [
            f"task.root={args.root}",
            f"seed={args.seed}",
            f"train.val_tasks={args.val_tasks}",
            f"train.meta_batch_size={args.meta_batch}",
        ],
    )
    exp = build_experiment(cfg)
    stream0 = exp.train_tasks.state_dict()
    setting = SETTINGS["q1"].replace(tasks=cfg.train.meta_batch_size)
    impls, skipped = build_implementations(setting, "stride", exp.model, args.impls.split(","))
    impls = [i for i in impls if i.name in args.impls.split(",")]  # drop the implicit reference
    for impl in impls:  # metagrad as the config runs it: its tasks per backward pass
        if isinstance(impl, MetagradImpl):
            impl.maml.chunk_size = cfg.algorithm.chunk_size
    records: list[dict] = []
    for impl in impls:
        exp.train_tasks.load_state_dict(stream0)  # the same episodes for every implementation
        iterations = records[0]["iterations"] if records else None  # the leader's count
        records.append(train_until(impl, exp, args, iterations))
    report = {"target": args.target, "threads": args.threads, "runs": records, "skipped": skipped}
    target = f"{args.target:.0%}"
    print(f"\n| implementation | iterations | training s | s / iteration | first at {target} |")
    print("| --- | --- | --- | --- | --- |")
    for r in records:
        first = r["reached"]["iteration"] if r["reached"] else "not reached"
        print(
            f"| {r['name']} | {r['iterations']} | {r['train_seconds']:.0f} "
            f"| {r['seconds_per_iteration']:.3f} | {first} |"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    if args.figure:
        plot(report, args.figure)
    return report


if __name__ == "__main__":
    main()
