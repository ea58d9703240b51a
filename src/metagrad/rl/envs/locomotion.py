"""What the MuJoCo locomotion task families share, and how they differ from the paper.

The environments subclass gymnasium 1.x's ``HalfCheetah-v5`` / ``Ant-v5`` and replace only the
reward (``_get_rew``, which v5's ``step`` calls with the forward velocity it measured) and the
action clipping. Requires the ``[rl]`` extra (``gymnasium[mujoco]``); this module and the
environment modules are imported lazily, never by ``import metagrad``.

Rewards (REFERENCE.md, as MAML's rllab code; ``a`` is the action clipped to the action space):

- half-cheetah velocity: ``-|v_x - goal| - 0.05 * sum(a^2)``; direction:
  ``direction * v_x - 0.05 * sum(a^2)``; never terminates.
- ant velocity: ``-|v_x - goal| + 1.0 - 0.005 * sum(a^2) - 0.0005 * sum(clip(cfrc_ext, -1, 1)^2)
  + 0.05``; direction: ``direction * v_x`` instead of ``-|v_x - goal| + 1.0``; terminates when
  the state is not finite or the torso height leaves ``[0.2, 1.0]`` (v5's own rule).

``v_x`` is v5's ``x_velocity``: the change of the torso's x position over one environment step
divided by ``dt`` (half-cheetah: ``qpos[0]``; ant: the torso body's ``xpos``). rllab used the
torso's centre-of-mass velocity at the end of the step; both measure forward speed.

Where gymnasium v5 differs from the paper's simulator (rllab):

- Frame skip / ``dt``. rllab stepped half-cheetah with frame skip 1 (``dt = 0.01``); v5 uses
  frame skip 5 (``dt = 0.05``). Returns are comparable with the paper's only with frame skip 1,
  which is therefore the default here (``frame_skip=5`` gives v5's dynamics). rllab's ant
  model has ``timestep = 0.02`` with frame skip 1; v5's has ``timestep = 0.01`` and frame
  skip 5 (``dt = 0.05``). The default here is frame skip 2, the paper's control period
  ``dt = 0.02`` (on a finer integration step); ``frame_skip=5`` gives v5's.
- Ant actuators. rllab: gear 1, control range ``+-150``, and its ``normalize`` wrapper maps
  policy outputs in ``[-1, 1]`` to that range (the control cost uses the normalised action).
  v5: gear 150, control range ``+-1``. The applied torques and the control cost are the same
  for the same normalised action; other details of the two XML models (masses, contacts) are
  not guaranteed equal.
- Observations. Half-cheetah: v5 gives ``qpos[1:], qvel`` (17); rllab appended the torso's
  centre of mass (20). Ant: v5 gives ``qpos[2:], qvel, clip(cfrc_ext[1:])`` (105); rllab also
  appended the torso's rotation matrix and centre of mass. The policy's input size follows the
  environment, so this only changes what the policy sees.
- Reset noise: v5's (uniform ``+-0.1`` on ``qpos``, Gaussian ``0.1`` on ``qvel``, scaled by
  ``reset_noise_scale``); rllab's was Gaussian ``0.01`` on ``qpos`` and ``0.1`` on ``qvel``.
"""

from __future__ import annotations

import numpy as np

from metagrad.rl.envs.base import Task, check_tasks


class LocomotionTask:
    """Mixin for a gymnasium MuJoCo environment with a task: ``set_task`` and action clipping.

    Subclasses set ``task_key`` (``"velocity"`` or ``"direction"``) and read the task's value
    from ``self.target`` in their ``_get_rew``.
    """

    task_key: str = ""
    family: str = ""
    target: float = 0.0
    reads_contact_forces: bool = False  # the batched twins need ``cfrc_ext`` after each step

    # Batched twins of ``step`` for :class:`metagrad.rl.envs.mujoco_stepper.MujocoStepper`:
    # ``n`` episodes' states in, the numbers ``step`` would return out, by the same arithmetic
    # in the same order (equal to the bit: tests/rl/test_rl_stepping.py).

    def x_source(self, data):
        """The array whose element 0 is the x position the forward velocity is measured on."""
        raise NotImplementedError

    def batch_observation(self, qpos, qvel, cfrc_ext):
        """Observations ``[n, obs]`` of states ``qpos [n, nq]``, ``qvel [n, nv]``,
        ``cfrc_ext [n, nbody, 6]`` (filled only if ``reads_contact_forces``)."""
        raise NotImplementedError

    def batch_reward(self, x_velocity, action, target, cfrc_ext):
        """Rewards ``[n]`` of forward velocities ``[n]``, clipped actions ``[n, act]`` and task
        values ``[n]``."""
        raise NotImplementedError

    def batch_terminated(self, qpos, qvel):
        """Whether each of ``n`` states ends its episode ``[n]`` (never, by default)."""
        return np.zeros(len(qpos), dtype=bool)

    def set_task(self, task: Task) -> None:
        """Switch to ``task`` (e.g. ``{"velocity": 1.2}``); takes effect at the next step."""
        check_tasks([task], self.task_key, self.family)
        self.task = dict(task)
        self.target = float(task[self.task_key])

    def step(self, action):
        # As rllab's ``normalize`` wrapper: the simulator and the control cost see the action
        # clipped to the action space (the policy's Gaussian sample is unbounded).
        space = self.action_space  # type: ignore[attr-defined]
        clipped = np.clip(np.asarray(action, dtype=np.float64), space.low, space.high)
        return super().step(clipped)  # type: ignore[misc]


def velocity_term(x_velocity, task_key: str, target):
    """The task's forward term: ``-|v - goal|`` (velocity) or ``direction * v`` (direction).

    Scalars or arrays (the batched twins pass ``[n]`` velocities and task values).
    """
    if task_key == "velocity":
        return -abs(x_velocity - target)
    return target * x_velocity
