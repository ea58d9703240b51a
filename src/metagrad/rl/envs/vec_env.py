"""Batched environments over gymnasium task families: stepped in this process or in workers.

The ``tasks x trajs`` episodes of a meta-batch are run by a stepper
(:mod:`metagrad.rl.envs.stepping`: MuJoCo called directly, or each gymnasium environment's
``step``), either

- in this process (:class:`InProcessVecEnv`, ``workers=0``): no inter-process cost at all; or
- split into contiguous shares over worker processes (:class:`SubprocVecEnv`), each running a
  stepper over its share. Actions, observations, rewards and terminations live in one shared
  memory block: a time step costs one small message per worker each way (``"step"`` out, the
  worker's stepping seconds back), whatever the number of episodes, and no array is pickled.

Which is faster depends on the free cores: on 2 cores that other work keeps busy, stepping in
this process beats workers (BENCHMARKS.md, "Meta-RL sampling (issue 20)"). Workers run one torch
thread each; reset noise is seeded per episode (``seed + index``), so a rollout is reproducible
given its seed, whatever the number of workers and in process or not.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing as mp
import os
import time
import traceback
from collections.abc import Sequence
from multiprocessing import resource_tracker, shared_memory
from typing import Any

import numpy as np
import torch
from torch import Tensor

from metagrad.rl.envs.base import Task
from metagrad.rl.envs.stepping import Stepper, make_stepper


class _Buffers:
    """``actions [n, act]``, ``obs [n, obs]``, ``reward [n]``, ``done [n]`` in one memory block."""

    def __init__(self, n: int, obs_dim: int, act_dim: int, name: str | None = None) -> None:
        sizes = [n * act_dim * 8, n * obs_dim * 8, n * 8, n]
        if name is None:
            self.shm = shared_memory.SharedMemory(create=True, size=max(1, sum(sizes)))
        else:  # a worker attaches; the parent owns the block and unlinks it once all have
            # (workers share the parent's resource tracker, which counts the name once)
            self.shm = shared_memory.SharedMemory(name=name)
        offsets = np.cumsum([0, *sizes])
        buf = self.shm.buf

        def view(k: int, dtype, shape):
            return np.ndarray(shape, dtype=dtype, buffer=buf, offset=int(offsets[k]))

        self.actions = view(0, np.float64, (n, act_dim))
        self.obs = view(1, np.float64, (n, obs_dim))
        self.reward = view(2, np.float64, (n,))
        self.done = view(3, np.bool_, (n,))
        self.name, self.n = self.shm.name, n

    def close(self) -> None:
        self.actions = self.obs = self.reward = self.done = None  # type: ignore[assignment]
        with contextlib.suppress(BufferError):
            self.shm.close()


def _worker(conn, name: str, env_kwargs: dict[str, Any], stepper: str) -> None:
    torch.set_num_threads(1)
    try:
        steps = make_stepper(name, env_kwargs, stepper)
        conn.send(("ok", (steps.obs_dim, steps.act_dim)))
    except Exception:
        conn.send(("error", traceback.format_exc()))
        return
    buffers, rows = None, slice(0, 0)
    while True:
        cmd, payload = conn.recv()
        if cmd == "close":
            break
        try:
            start = time.perf_counter()
            if cmd == "reset":
                block, n, a, b, tasks, seeds = payload
                if buffers is None or buffers.name != block:
                    if buffers is not None:
                        buffers.close()
                    buffers = _Buffers(n, steps.obs_dim, steps.act_dim, name=block)
                rows = slice(a, b)
                buffers.obs[rows] = steps.reset(tasks, seeds)
            elif cmd == "step":
                assert buffers is not None, "step before reset"
                obs, reward, done = steps.step(buffers.actions[rows])
                buffers.obs[rows], buffers.reward[rows], buffers.done[rows] = obs, reward, done
            else:
                raise ValueError(f"unknown command {cmd!r}")
            conn.send(("ok", time.perf_counter() - start))
        except Exception:
            conn.send(("error", traceback.format_exc()))


class _TorchFace:
    """The :class:`metagrad.rl.envs.base.BatchedEnv` side: shapes, checks, numpy <-> torch.

    Attributes:
        stats: cumulative ``steps``, ``round_trip_s`` (time from handing the actions over to
            having every result) and ``worker_s`` (stepping time: in process, or the slowest
            worker's, summed over steps): ``round_trip_s - worker_s`` is the inter-process cost.
    """

    name: str
    horizon: int
    obs_dim: int
    act_dim: int

    def _start(self) -> None:
        self.stats = {"steps": 0, "round_trip_s": 0.0, "worker_s": 0.0}
        self._shape: tuple[int, int] = (0, 0)

    def _flat_episodes(self, tasks: Sequence[Task], trajs: int, seed: int):
        n = len(tasks) * trajs
        if n == 0:
            raise ValueError(
                f"need at least one task and one trajectory, got {len(tasks)}, {trajs}"
            )
        self._shape = (len(tasks), trajs)
        copies = [dict(t) for t in tasks]  # one object per task: steppers compare identities
        return [copies[i] for i in range(len(tasks)) for _ in range(trajs)], [
            seed + i for i in range(n)
        ]

    def _check(self, actions: Tensor) -> np.ndarray:
        expected = (*self._shape, self.act_dim)
        if tuple(actions.shape) != expected:
            raise ValueError(
                f"actions must be [tasks, trajs, act] = {expected}, got {tuple(actions.shape)}"
            )
        return actions.detach().reshape(-1, self.act_dim).to(torch.float64).numpy()

    def _out(self, obs: np.ndarray, reward: np.ndarray, done: np.ndarray):
        # Copies: the arrays are overwritten at the next step.
        return (
            torch.from_numpy(obs).float().reshape(*self._shape, self.obs_dim),
            torch.from_numpy(reward).float().reshape(self._shape),
            torch.from_numpy(done).clone().reshape(self._shape),
        )

    def _count(self, round_trip: float, worker: float) -> None:
        self.stats["round_trip_s"] += round_trip
        self.stats["worker_s"] += worker
        self.stats["steps"] += 1

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()  # type: ignore[attr-defined]


class InProcessVecEnv(_TorchFace):
    """Every episode stepped in this process (``workers=0``): no inter-process cost.

    Args:
        name: task family (``"half-cheetah-vel"``, ...; see :mod:`metagrad.rl.envs`).
        horizon: episode length.
        env_kwargs: constructor arguments of the environment (e.g. ``{"frame_skip": 5}``).
        stepper: ``"mujoco"`` (default) or ``"gymnasium"`` (:mod:`metagrad.rl.envs.stepping`).
    """

    def __init__(
        self,
        name: str,
        *,
        horizon: int,
        env_kwargs: dict[str, Any] | None = None,
        stepper: str = "mujoco",
    ) -> None:
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        self.name, self.horizon = name, horizon
        self._stepper: Stepper = make_stepper(name, dict(env_kwargs or {}), stepper)
        self.obs_dim, self.act_dim = self._stepper.obs_dim, self._stepper.act_dim
        self._start()

    def reset(self, tasks: Sequence[Task], trajs: int, seed: int = 0) -> Tensor:
        flat, seeds = self._flat_episodes(tasks, trajs, seed)
        obs = self._stepper.reset(flat, seeds)
        return torch.from_numpy(obs).float().reshape(*self._shape, self.obs_dim)

    def step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        flat = self._check(actions)
        start = time.perf_counter()
        result = self._stepper.step(flat)
        spent = time.perf_counter() - start
        self._count(spent, spent)
        return self._out(*result)

    def close(self) -> None:
        pass


class SubprocVecEnv(_TorchFace):
    """Episodes split into contiguous shares over worker processes, one stepper each.

    Args:
        name: task family (``"half-cheetah-vel"``, ...; see :mod:`metagrad.rl.envs`).
        horizon: episode length.
        workers: number of worker processes (default: the CPU count).
        env_kwargs: constructor arguments of the environment (e.g. ``{"frame_skip": 5}``).
        start_method: multiprocessing start method (``"spawn"`` is safe with torch threads;
            ``"fork"`` starts faster on Linux).
        stepper: ``"mujoco"`` (default) or ``"gymnasium"`` (:mod:`metagrad.rl.envs.stepping`).
    """

    def __init__(
        self,
        name: str,
        *,
        horizon: int,
        workers: int | None = None,
        env_kwargs: dict[str, Any] | None = None,
        start_method: str = "spawn",
        stepper: str = "mujoco",
    ) -> None:
        workers = workers or os.cpu_count() or 1
        if workers < 1 or horizon < 1:
            raise ValueError(f"workers and horizon must be >= 1, got {workers} and {horizon}")
        self.name, self.horizon = name, horizon
        ctx = mp.get_context(start_method)
        # Workers inherit this process's resource tracker (started now, before any fork), so
        # the shared blocks they attach to are tracked, and unlinked, once: by this process.
        resource_tracker.ensure_running()
        self._conns, self._procs = [], []
        for _ in range(workers):
            parent, child = ctx.Pipe()
            args = (child, name, dict(env_kwargs or {}), stepper)
            proc = ctx.Process(target=_worker, args=args, daemon=True)
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        specs = [self._receive(c) for c in self._conns]
        self.obs_dim, self.act_dim = specs[0]
        self._buffers: _Buffers | None = None
        self._busy: list[Any] = []  # the workers with a non-empty share
        self._start()

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
        flat, seeds = self._flat_episodes(tasks, trajs, seed)
        n = len(flat)
        if self._buffers is None or self._buffers.n != n:
            if self._buffers is not None:
                self._buffers.close()
            self._buffers = _Buffers(n, self.obs_dim, self.act_dim)
            new = True
        else:
            new = False
        cuts = np.linspace(0, n, len(self._conns) + 1).round().astype(int)
        self._busy = []
        for conn, (a, b) in zip(self._conns, itertools.pairwise(cuts)):
            if b > a:
                block = self._buffers.name
                conn.send(("reset", (block, n, int(a), int(b), flat[a:b], seeds[a:b])))
                self._busy.append(conn)
        for conn in self._busy:
            self._receive(conn)
        if new:  # every worker has mapped it: no name left to leak if a process dies
            self._buffers.shm.unlink()
        return torch.from_numpy(self._buffers.obs).float().reshape(*self._shape, self.obs_dim)

    def step(self, actions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        flat = self._check(actions)
        buffers = self._buffers
        assert buffers is not None, "step before reset"
        start = time.perf_counter()
        buffers.actions[:] = flat
        for conn in self._busy:
            conn.send(("step", None))
        worker = max(self._receive(conn) for conn in self._busy)
        self._count(time.perf_counter() - start, worker)
        return self._out(buffers.obs, buffers.reward, buffers.done)

    def close(self) -> None:
        for conn in self._conns:
            with contextlib.suppress(BrokenPipeError, OSError):
                conn.send(("close", None))
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
        self._conns, self._procs = [], []
        if getattr(self, "_buffers", None) is not None:
            self._buffers.close()  # type: ignore[union-attr]
            self._buffers = None

    def __del__(self) -> None:
        if getattr(self, "_procs", None):
            self.close()
