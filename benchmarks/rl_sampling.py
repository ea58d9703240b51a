"""Meta-RL sampling throughput (issue 20): environment steps per second, and an iteration's split.

Two measurements, each on the shipped configs' sizes (``configs/rl/maml_trpo_*.toml``: meta-batch
40, 20 trajectories per task, horizon 200; one torch thread per process):

- **rollouts**: one :func:`metagrad.rl.sampler.rollout` of the whole meta-batch per stepping
  mode, the modes interleaved round by round in this process (ratios stay meaningful on a loaded
  machine). Reported: environment steps per second and the rollout's split into simulation
  (the environment's ``stats["worker_s"]``: the slowest worker's stepping time, or the in-process
  stepping time), inter-process communication (``round_trip_s - worker_s``) and the rest of the
  rollout (the policy evaluated once per step for all episodes, sampling the actions, padding).
- **iteration** (``--iteration``): one MAML-TRPO meta-iteration of a config, split as the run loop
  logs it (``time_sampling``, ``time_adaptation``, ``time_conjugate_gradient``,
  ``time_line_search``; sampling split as above).

A mode is ``workers=N`` (``0``: stepped in this process) with an optional ``,stepper=S``
(``mujoco``: MuJoCo called directly, the default; ``gymnasium``: each episode through its
gymnasium environment's ``step``, the reference) -- modes that the installed metagrad lacks are
reported as such.

Usage::

    python benchmarks/rl_sampling.py --families half-cheetah-vel,ant-vel \
        --modes 'workers=0;workers=1;workers=2' --rounds 2 --out rl_sampling.json
    python benchmarks/rl_sampling.py --iteration maml_trpo_cheetah_vel --modes 'workers=0'
    python benchmarks/rl_sampling.py --quick   # seconds: horizon 10, 4 tasks x 2 trajectories
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from metagrad.rl.envs import get_family, make_batched_env
from metagrad.rl.policy import GaussianMLPPolicy
from metagrad.rl.sampler import rollout

CONFIGS = Path(__file__).resolve().parents[1] / "src" / "metagrad" / "configs" / "rl"
FRAME_SKIP = {"half-cheetah-vel": 1, "half-cheetah-dir": 1, "ant-vel": 2, "ant-dir": 2}


def parse_mode(text: str) -> dict[str, Any]:
    """``"workers=2,stepper=gymnasium"`` -> ``{"workers": 2, "stepper": "gymnasium"}``."""
    out: dict[str, Any] = {}
    for part in filter(None, text.split(",")):
        key, _, value = part.partition("=")
        out[key.strip()] = int(value) if value.strip().isdigit() else value.strip()
    return out


def make_env(family: str, horizon: int, mode: dict[str, Any]):
    return make_batched_env(
        family, horizon=horizon, env_kwargs={"frame_skip": FRAME_SKIP[family]}, **mode
    )


def time_rollout(env, policy, tasks, trajs: int, seed: int) -> dict[str, float]:
    """One rollout of every task; seconds by phase and steps per second."""
    before = dict(env.stats)
    start = time.perf_counter()
    traj = rollout(
        env,
        policy,
        dict(policy.named_parameters()),
        tasks,
        trajs,
        torch.Generator().manual_seed(seed),
    )
    total = time.perf_counter() - start
    sim = env.stats["worker_s"] - before["worker_s"]
    trip = env.stats["round_trip_s"] - before["round_trip_s"]
    steps = float(traj.mask.sum())
    return {
        "total_s": total,
        "simulation_s": sim,
        "ipc_s": trip - sim,
        "policy_and_rest_s": total - trip,
        "env_steps": steps,
        "steps_per_s": steps / total,
    }


def rollouts(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for family in args.families.split(","):
        tasks = get_family(family).sample_tasks(args.tasks, torch.Generator().manual_seed(0))
        envs = {}
        for text in args.modes.split(";"):
            try:
                envs[text] = make_env(family, args.horizon, parse_mode(text))
            except TypeError as e:  # a mode this version of metagrad does not have
                print(f"{family} {text}: unavailable ({e})")
        first = next(iter(envs.values()))
        torch.manual_seed(0)
        policy = GaussianMLPPolicy(first.obs_dim, first.act_dim, (100, 100))
        try:
            for env in envs.values():  # warm-up: first calls, and one MjData per episode
                time_rollout(env, policy, tasks[:2], 2, seed=0)  # allocated by the full reset
                env.reset(tasks, args.trajs, 0)
            samples: dict[str, list[dict[str, float]]] = {t: [] for t in envs}
            for r in range(args.rounds):  # interleaved, round by round
                for text, env in envs.items():
                    samples[text].append(time_rollout(env, policy, tasks, args.trajs, r + 1))
        finally:
            for env in envs.values():
                env.close()
        for text, got in samples.items():
            row = {"family": family, "mode": text, "rounds": len(got)}
            row.update({k: statistics.median(s[k] for s in got) for k in got[0]})
            rows.append(row)
            print(
                f"{family:17s} {text:28s} {row['steps_per_s']:8.0f} steps/s  total "
                f"{row['total_s']:6.2f} s = sim {row['simulation_s']:6.2f} + ipc "
                f"{row['ipc_s']:5.2f} + policy/rest {row['policy_and_rest_s']:5.2f}"
            )
    return rows


def iteration(args: argparse.Namespace) -> list[dict[str, Any]]:
    from metagrad.config import load_config
    from metagrad.train.rl_build import build_rl_experiment

    rows = []
    for text in args.modes.split(";"):
        mode = parse_mode(text)
        overrides = [
            f"task.{k}={v!r}" if isinstance(v, str) else f"task.{k}={v}" for k, v in mode.items()
        ]
        overrides = [o.replace("'", '"') for o in overrides]
        if args.quick:
            overrides += ["task.horizon=10", "task.trajectories=2", "train.meta_batch_size=4"]
        cfg = load_config(CONFIGS / f"{args.iteration}.toml", overrides)
        with build_rl_experiment(cfg) as exp:
            theta = exp.initial_theta()
            generator = torch.Generator().manual_seed(0)
            tasks = exp.family.sample_tasks(cfg.train.meta_batch_size, generator)
            env_before = dict(exp.env.stats)
            _, stats = exp.iteration(theta, tasks, generator)
            sim = exp.env.stats["worker_s"] - env_before["worker_s"]
            ipc = exp.env.stats["round_trip_s"] - env_before["round_trip_s"] - sim
        row = {"config": args.iteration, "mode": text, **stats["time"]}
        row.update(simulation=sim, ipc=ipc, policy_and_rest=stats["time"]["sampling"] - sim - ipc)
        rows.append(row)
        print(
            f"{args.iteration} {text}: "
            + ", ".join(f"{k} {v:.2f}" for k, v in row.items() if isinstance(v, float))
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--families", default="half-cheetah-vel,ant-vel")
    p.add_argument(
        "--modes",
        default="workers=0;workers=1;workers=2",
        help="';'-separated modes, e.g. 'workers=0;workers=2,stepper=gymnasium'",
    )
    p.add_argument("--tasks", type=int, default=40)
    p.add_argument("--trajs", type=int, default=20)
    p.add_argument("--horizon", type=int, default=200)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument(
        "--iteration",
        default=None,
        help="time one meta-iteration of this config (e.g. maml_trpo_cheetah_vel)",
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run in seconds")
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.quick:
        args.tasks, args.trajs, args.horizon, args.rounds = 4, 2, 10, 1
    rows = iteration(args) if args.iteration else rollouts(args)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
