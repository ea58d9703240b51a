"""Many episodes of a MuJoCo locomotion family stepped by calling MuJoCo directly (a stepper).

Gymnasium's ``step`` spends most of its time in Python around the simulator: on this machine
38 us per half-cheetah step of which MuJoCo's ``mj_step`` is 11, 171 us per ant step of which
``mj_step`` is 83 (BENCHMARKS.md, issue 20). This stepper keeps one ``MjData`` per episode
and, per step, only copies the action in, calls ``mj_step`` (and ``mj_rnePostConstraint`` when
the observation or the reward reads contact forces, as gymnasium does after every step), and
copies ``qpos``/``qvel``/``cfrc_ext`` out into preallocated arrays; the observations, rewards
and terminations of all episodes are then computed at once by the environment's batched twins
of its ``step`` (:class:`metagrad.rl.envs.locomotion.LocomotionTask`), the same arithmetic in
the same order, so the results equal gymnasium's to the bit (tests/rl/test_rl_stepping.py).

Resets go through the gymnasium environment (its seeded reset noise), pointed at the episode's
``MjData``: the same initial states as :class:`metagrad.rl.envs.stepping.GymnasiumStepper`.
"""

from __future__ import annotations

from collections.abc import Sequence

import mujoco
import numpy as np

from metagrad.rl.envs.base import Task


class MujocoStepper:
    """A :class:`metagrad.rl.envs.stepping.Stepper` over a MuJoCo locomotion environment.

    Args:
        env: the family's gymnasium environment (a ``LocomotionTask``); its model, frame skip,
            options and reset are used, its ``data`` is pointed at each episode's in turn.
    """

    def __init__(self, env) -> None:
        self.env, self.model = env, env.model
        self.frame_skip, self.dt = int(env.frame_skip), float(env.dt)
        self.obs_dim = env.observation_space.shape[0]
        self.act_dim = env.action_space.shape[0]
        self.low, self.high = env.action_space.low, env.action_space.high
        self.contact = bool(env.reads_contact_forces)
        self._datas: list[mujoco.MjData] = []
        self._views: list[tuple] = []  # per episode: (data, ctrl, qpos, qvel, cfrc_ext, x)
        self._resize(0)

    def _resize(self, n: int) -> None:
        m = self.model
        while len(self._datas) < n:
            d = mujoco.MjData(m)
            self._datas.append(d)
            self._views.append((d, d.ctrl, d.qpos, d.qvel, d.cfrc_ext, self.env.x_source(d)))
        self.n = n
        self.obs = np.zeros((n, self.obs_dim))
        self.reward = np.zeros(n)
        self.done = np.zeros(n, dtype=bool)
        self.alive = np.ones(n, dtype=bool)
        self.qpos, self.qvel = np.zeros((n, m.nq)), np.zeros((n, m.nv))
        self.cfrc = np.zeros((n, m.nbody, 6))
        self.x = np.zeros(n)  # the position the forward velocity is measured on
        self.target = np.zeros(n)

    def reset(self, tasks: Sequence[Task], seeds: Sequence[int]) -> np.ndarray:
        if len(tasks) != self.n:
            self._resize(len(tasks))
        self.alive[:] = True
        env, current = self.env, None
        for i, (task, seed) in enumerate(zip(tasks, seeds)):
            if task is not current:  # a task's episodes are contiguous: set it once
                env.set_task(task)
                current = task
            env.data = self._datas[i]
            self.obs[i] = env.reset(seed=int(seed))[0]
            self.x[i] = self._views[i][5][0]
            self.target[i] = env.target
        return self.obs

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if actions.shape != (self.n, self.act_dim):
            raise ValueError(f"actions must be [{self.n}, {self.act_dim}], got {actions.shape}")
        m, nstep, contact = self.model, self.frame_skip, self.contact
        action = np.clip(actions, self.low, self.high)  # as LocomotionTask.step
        live = np.flatnonzero(self.alive)
        self.reward[:] = 0.0
        self.done[:] = ~self.alive
        if live.size == 0:  # every episode has ended (a worker's share can end early)
            return self.obs, self.reward, self.done
        before = self.x[live]
        qpos, qvel, cfrc, x, views = self.qpos, self.qvel, self.cfrc, self.x, self._views
        for i in live:
            d, ctrl, qp, qv, cf, xs = views[i]
            ctrl[:] = action[i]
            mujoco.mj_step(m, d, nstep=nstep)
            if contact:
                mujoco.mj_rnePostConstraint(m, d)
                cfrc[i] = cf
            qpos[i], qvel[i], x[i] = qp, qv, xs[0]
        velocity = (x[live] - before) / self.dt
        env = self.env
        self.obs[live] = env.batch_observation(qpos[live], qvel[live], cfrc[live])
        self.reward[live] = env.batch_reward(velocity, action[live], self.target[live], cfrc[live])
        ended = env.batch_terminated(qpos[live], qvel[live])
        self.done[live[ended]] = True
        self.alive[live[ended]] = False
        return self.obs, self.reward, self.done
