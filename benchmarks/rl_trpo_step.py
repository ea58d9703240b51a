"""The conjugate gradient of a MAML-TRPO meta-iteration (issue 20): its cost and its levers.

One meta-iteration's episodes of a shipped config are sampled once (meta-batch x trajectories x
horizon as in the config, in this process, one torch thread); then, on those same episodes, the
TRPO direction is computed as :func:`metagrad.rl.trpo.trpo_step` does (gradient of the
surrogate, the KL's Hessian-vector product through the adaptation built once, ``cg_iters``
conjugate-gradient products plus one for the step's scale) for each variant, the variants
interleaved round by round (ratios stay meaningful on a loaded machine):

- ``fisher_tasks=all`` (the paper's), ``=10``, ``=5``: the Hessian on the first k tasks only
  (not exact: reported with the direction's cosine to the all-tasks direction);
- ``cg_iters=5``: fewer iterations (not exact; same report);
- ``unpacked``: the padded steps of ended episodes kept in the batches (the code before
  :meth:`metagrad.rl.objectives.Batch.packed`; the same numbers up to rounding).

Also timed: one Hessian-vector product's passes (the inner loss's curvature, twice per product
for one inner step, and the KL's, once), to show where a product's time goes.

Usage::

    python benchmarks/rl_trpo_step.py --config maml_trpo_cheetah_vel --rounds 2
    python benchmarks/rl_trpo_step.py --quick   # seconds: horizon 10, 8 tasks x 2 trajectories
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from metagrad.config import load_config
from metagrad.config.rl_schema import LocomotionTaskConfig
from metagrad.rl.adaptation import adaptation_rollouts
from metagrad.rl.fisher import _Curvature, adaptation_fisher_product
from metagrad.rl.objectives import (
    adapt_policy,
    old_policy,
    process,
    reinforce_loss,
    surrogate_and_kl,
)
from metagrad.rl.sampler import per_task
from metagrad.rl.trpo import conjugate_gradient, flatten
from metagrad.train.rl_build import build_rl_experiment

CONFIGS = Path(__file__).resolve().parents[1] / "src" / "metagrad" / "configs" / "rl"


def sample(exp, seed: int = 0):
    """One meta-iteration's adaptation and validation episodes, processed."""
    u, g = exp.update, torch.Generator().manual_seed(seed)
    tasks = exp.family.sample_tasks(exp.cfg.train.meta_batch_size, g)
    theta = exp.initial_theta()
    rolls = list(
        adaptation_rollouts(
            exp.env, exp.policy, theta, tasks, u.trajectories, u.inner_lr, 1, u.gamma,
            u.gae_lambda, g,
        )
    )  # fmt: skip
    steps = float(rolls[0].trajectories.mask.sum() + rolls[1].trajectories.mask.sum())
    return theta, [rolls[0].batch], process(rolls[1].trajectories, u.gamma, u.gae_lambda), steps


def direction(
    exp, theta, train, valid, fisher_tasks=None, cg_iters=10, pack=True
) -> dict[str, Any]:
    """The TRPO direction as trpo_step computes it; seconds of each part."""
    u, policy = exp.update, exp.policy
    start = time.perf_counter()
    if pack:
        train, valid = [b.packed() for b in train], valid.packed()
    theta = {k: v.detach().requires_grad_() for k, v in theta.items()}
    adapted = adapt_policy(policy, theta, train, u.inner_lr, u.first_order)
    old = old_policy(policy, adapted, valid)
    loss = surrogate_and_kl(policy, adapted, valid, old)[0]
    grad = flatten(dict(zip(theta, torch.autograd.grad(loss, list(theta.values())))))
    graded = time.perf_counter()
    k = slice(fisher_tasks)
    product = adaptation_fisher_product(
        policy, theta, [b.select(k) for b in train], valid.select(k), old.select(k),
        u.inner_lr, u.first_order, u.cg_damping,
    )  # fmt: skip
    built = time.perf_counter()
    d = conjugate_gradient(product, grad, cg_iters)
    shs = d @ product(d)
    end = time.perf_counter()
    return {
        "gradient_s": graded - start,
        "build_s": built - graded,
        "products_s": end - built,
        "total_s": end - start,
        "direction": d.detach(),
        "step_norm": float(torch.sqrt(2 * u.max_kl / (shs + 1e-8)) * d.norm()),
    }


def passes(exp, theta, train, valid) -> dict[str, float]:
    """One Hessian-vector pass of the inner loss and of the KL, all tasks (seconds)."""
    policy, tasks = exp.policy, valid.obs.shape[0]
    phi = per_task(policy, {k: v.detach() for k, v in theta.items()}, tasks)
    inner = _Curvature(lambda p: reinforce_loss(policy, p, train[0]), phi, "inner loss")
    adapted = adapt_policy(policy, phi, train, exp.update.inner_lr, first_order=True)
    adapted = {k: v.detach() for k, v in adapted.items()}
    old = old_policy(policy, adapted, valid)
    kl = _Curvature(lambda p: surrogate_and_kl(policy, p, valid, old)[1], adapted, "mean KL")
    u = {k: torch.randn_like(v) for k, v in phi.items()}
    out = {}
    for name, curvature in (("inner_pass_s", inner), ("kl_pass_s", kl)):
        start = time.perf_counter()
        curvature(u)
        out[name] = time.perf_counter() - start
    return out


VARIANTS: dict[str, dict[str, Any]] = {
    "fisher_tasks=all": {},
    "unpacked": {"pack": False},
    "fisher_tasks=10": {"fisher_tasks": 10},
    "fisher_tasks=5": {"fisher_tasks": 5},
    "cg_iters=5": {"cg_iters": 5},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="maml_trpo_cheetah_vel")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--set", action="append", default=[], help="config override, repeatable")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, of: "
                   + ", ".join(VARIANTS))  # fmt: skip
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run in seconds")
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    args = p.parse_args()
    torch.set_num_threads(1)
    overrides = list(args.set)
    if args.quick:
        overrides += ["task.horizon=10", "task.trajectories=2", "train.meta_batch_size=8"]
        args.rounds = 1
    cfg = load_config(CONFIGS / f"{args.config}.toml", overrides)
    if isinstance(cfg.task, LocomotionTaskConfig):  # MuJoCo: stepped in this process
        cfg = dataclasses.replace(cfg, task=dataclasses.replace(cfg.task, workers=0))
    with build_rl_experiment(cfg) as exp:
        start = time.perf_counter()
        theta, train, valid, steps = sample(exp)
        print(f"{args.config}: sampled {steps:.0f} steps in {time.perf_counter() - start:.1f} s")
        per_task = valid.mask[0].numel()
        packed = valid.packed().mask[0].numel()
        print(f"validation episodes packed: {packed} of {per_task} steps per task")
        chosen = args.variants.split(",")
        samples: dict[str, list[dict[str, Any]]] = {v: [] for v in chosen}
        split: list[dict[str, float]] = []
        two = slice(2)  # warm-up: first calls on two tasks, untimed
        for name in chosen:
            direction(
                exp, theta, [b.select(two) for b in train], valid.select(two), **VARIANTS[name]
            )
        for _ in range(args.rounds):
            for name in chosen:
                samples[name].append(direction(exp, theta, train, valid, **VARIANTS[name]))
            split.append(passes(exp, theta, train, valid))
    reference = next(iter(samples.values()))[0]["direction"]
    rows = []
    for name, got in samples.items():
        row: dict[str, Any] = {"config": args.config, "variant": name, "rounds": len(got)}
        row.update({k: statistics.median(s[k] for s in got) for k in got[0] if k != "direction"})
        row["rounds_total_s"] = [round(s["total_s"], 2) for s in got]
        d = got[0]["direction"]
        row["cosine_to_first"] = float(d @ reference / (d.norm() * reference.norm()))
        rows.append(row)
        print(
            f"{name:18s} total {row['total_s']:7.2f} s = gradient {row['gradient_s']:5.2f} + "
            f"build {row['build_s']:5.2f} + products {row['products_s']:7.2f}; "
            f"cosine to {chosen[0]}'s direction {row['cosine_to_first']:.3f}; "
            f"rounds {row['rounds_total_s']}"
        )
    med = {k: statistics.median(s[k] for s in split) for k in split[0]}
    rows.append({"config": args.config, "variant": "passes", **med})
    print(f"one product's passes: inner loss {med['inner_pass_s']:.2f} s (x2), KL "
          f"{med['kl_pass_s']:.2f} s (x1)")  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
