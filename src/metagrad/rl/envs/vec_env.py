"""Gymnasium task environments stepped in worker processes, all of a worker's episodes per message.

The ``tasks x trajs`` episodes of a meta-batch are split into contiguous shares, one per worker.
Each time step costs one message per worker in each direction (actions out; observations,
rewards and terminations back), whatever the number of episodes, so the inter-process cost
is a few tens of microseconds per step against milliseconds of simulation (see the numbers in
``SubprocVecEnv.stats``). One message per episode would cost that latency hundreds of times per
step.

A MuJoCo worker keeps ONE environment object and one ``MjData`` (the full simulator state,
~0.5 MB) per episode, and points the environment's ``data`` at an episode's before stepping
it: a gymnasium ``MujocoEnv`` holds its whole simulation in ``model`` and ``data`` (the task
is set on the environment each time), so this steps exactly as independent environments would,
at half the memory of one environment per episode and without building hundreds of models.
Other gymnasium environments get one instance per episode.

Workers run one torch thread each; reset noise is seeded per episode (``seed + index``), so a
rollout is reproducible given its seed, whatever the number of workers.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing as mp
import os
import time
import traceback
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from metagrad.rl.envs.base import Task


class _EnvSlots:
    """One environment instance per episode (any gymnasium environment with ``set_task``)."""

    def __init__(self, make, first) -> None:
        self.make, self.envs, self.tasks = make, [first], [None]

    def activate(self, i: int, task: Task):
        while len(self.envs) <= i:
            self.envs.append(self.make())
            self.tasks.append(None)
        if task is not self.tasks[i]:
            self.envs[i].set_task(task)
            self.tasks[i] = task
        return self.envs[i]


class _DataSlots:
    """One MuJoCo ``MjData`` per episode, stepped through a single environment object."""

    def __init__(self, env) -> None:
        import mujoco

        self.env, self.datas, self._new = env, [], lambda: mujoco.MjData(env.model)
        self._task: Task | None = None

    def activate(self, i: int, task: Task):
        while len(self.datas) <= i:
            self.datas.append(self._new())
        self.env.data = self.datas[i]
        if task is not self._task:  # a task's episodes are contiguous: set it once per run
            self.env.set_task(task)
            self._task = task
        return self.env


def _worker(conn, name: str, env_kwargs: dict[str, Any], per_episode_data: bool | None) -> None:
    torch.set_num_threads(1)
    from metagrad.rl.envs import make_env

    try:
        env = make_env(name, **env_kwargs)
        mujoco_env = hasattr(env, "model") and hasattr(env, "data")
        if per_episode_data is None:
            per_episode_data = mujoco_env
        if per_episode_data:
            slots = _DataSlots(env)
        else:
            slots = _EnvSlots(lambda: make_env(name, **env_kwargs), env)
        low, high = env.action_space.low, env.action_space.high
        conn.send(("ok", (env.observation_space.shape[0], env.action_space.shape[0], low, high)))
    except Exception:
        conn.send(("error", traceback.format_exc()))
        return
    tasks: list[Task] = []
    alive = np.zeros(0, dtype=bool)
    obs = np.zeros((0, env.observation_space.shape[0]))
    while True:
        cmd, payload = conn.recv()
        if cmd == "close":
            break
        try:
            start = time.perf_counter()
            if cmd == "reset":
                tasks, seeds = payload
                alive = np.ones(len(tasks), dtype=bool)
                obs = (
                    np.stack(
                        [
                            slots.activate(i, t).reset(seed=int(s))[0]
                            for i, (t, s) in enumerate(zip(tasks, seeds))
                        ]
                    )
                    if tasks
                    else obs[:0]
                )
                conn.send(("ok", (obs, time.perf_counter() - start)))
            elif cmd == "step":
                reward = np.zeros(len(tasks))
                done = ~alive
                for i in np.flatnonzero(alive):
                    o, r, terminated, _, _ = slots.activate(i, tasks[i]).step(payload[i])
                    obs[i], reward[i] = o, r
                    if terminated:
                        alive[i], done[i] = False, True
                conn.send(("ok", (obs, reward, done, time.perf_counter() - start)))
            else:
                raise ValueError(f"unknown command {cmd!r}")
        except Exception:
            conn.send(("error", traceback.format_exc()))


class SubprocVecEnv:
    """A :class:`metagrad.rl.envs.base.BatchedEnv` over gymnasium task environments in workers.

    Args:
        name: task family (``"half-cheetah-vel"``, ...; see :mod:`metagrad.rl.envs`).
        horizon: episode length.
        workers: number of worker processes (default: the CPU count).
        env_kwargs: constructor arguments of the environment (e.g. ``{"frame_skip": 5}``).
        start_method: multiprocessing start method (``"spawn"`` is safe with torch threads;
            ``"fork"`` starts faster on Linux).
        per_episode_data: one ``MjData`` per episode in one environment (``True``; default for
            MuJoCo environments) or one environment per episode (``False``).

    Attributes:
        stats: cumulative ``steps``, ``round_trip_s`` (time to send actions and receive all
            results) and ``worker_s`` (the slowest worker's stepping time, summed over steps):
            ``round_trip_s - worker_s`` is the inter-process overhead.
    """

    def __init__(
        self,
        name: str,
        *,
        horizon: int,
        workers: int | None = None,
        env_kwargs: dict[str, Any] | None = None,
        start_method: str = "spawn",
        per_episode_data: bool | None = None,
    ) -> None:
        workers = workers or os.cpu_count() or 1
        if workers < 1 or horizon < 1:
            raise ValueError(f"workers and horizon must be >= 1, got {workers} and {horizon}")
        self.name, self.horizon = name, horizon
        ctx = mp.get_context(start_method)
        self._conns, self._procs = [], []
        for _ in range(workers):
            parent, child = ctx.Pipe()
            args = (child, name, dict(env_kwargs or {}), per_episode_data)
            proc = ctx.Process(target=_worker, args=args, daemon=True)
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        specs = [self._receive(c) for c in self._conns]
        self.obs_dim, self.act_dim, self.action_low, self.action_high = specs[0]
        self.stats = {"steps": 0, "round_trip_s": 0.0, "worker_s": 0.0}
        self._bounds: list[tuple[int, int]] = []
        self._shape: tuple[int, int] = (0, 0)

    def _receive(self, conn):
        try:
            status, payload = conn.recv()
        except EOFError:
            self.close()
            raise RuntimeError(
                f"a {self.name} environment worker exited unexpectedly. With start_method="
                "'spawn' (the default) the script that creates the environment must guard its "
                "entry point with `if __name__ == '__main__':`; otherwise check the worker's "
                "output above for the error"
            ) from None
        if status != "ok":
            self.close()
            raise RuntimeError(f"a {self.name} environment worker failed:\n{payload}")
        return payload

    def reset(self, tasks: Sequence[Task], trajs: int, seed: int = 0) -> Tensor:
        n = len(tasks) * trajs
        if n == 0:
            raise ValueError(
                f"need at least one task and one trajectory, got {len(tasks)}, {trajs}"
            )
        cuts = np.linspace(0, n, len(self._conns) + 1).round().astype(int)
        self._bounds = [(int(a), int(b)) for a, b in itertools.pairwise(cuts)]
        self._shape = (len(tasks), trajs)
        copies = [dict(t) for t in tasks]  # one object per task: workers compare identities
        flat = [copies[i] for i in range(len(tasks)) for _ in range(trajs)]
        for conn, (a, b) in zip(self._conns, self._bounds):
            conn.send(("reset", (flat[a:b], [seed + i for i in range(a, b)])))
        obs = np.concatenate([self._receive(c)[0] for c in self._conns])
        return torch.from_numpy(obs).float().reshape(*self._shape, self.obs_dim)

    def step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        expected = (*self._shape, self.act_dim)
        if tuple(actions.shape) != expected:
            raise ValueError(
                f"actions must be [tasks, trajs, act] = {expected}, got {tuple(actions.shape)}"
            )
        flat = actions.detach().reshape(-1, self.act_dim).to(torch.float64).numpy()
        start = time.perf_counter()
        for conn, (a, b) in zip(self._conns, self._bounds):
            conn.send(("step", flat[a:b]))
        parts = [self._receive(c) for c in self._conns]
        self.stats["round_trip_s"] += time.perf_counter() - start
        self.stats["worker_s"] += max(p[3] for p in parts)
        self.stats["steps"] += 1
        obs, reward, done = (np.concatenate([p[k] for p in parts]) for k in range(3))
        return (
            torch.from_numpy(obs).float().reshape(*self._shape, self.obs_dim),
            torch.from_numpy(reward).float().reshape(self._shape),
            torch.from_numpy(done).reshape(self._shape),
        )

    def close(self) -> None:
        for conn in self._conns:
            with contextlib.suppress(BrokenPipeError, OSError):
                conn.send(("close", None))
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
        self._conns, self._procs = [], []

    def __enter__(self) -> SubprocVecEnv:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_procs", None):
            self.close()
