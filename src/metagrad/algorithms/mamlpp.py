"""MAML++'s schedules (Antoniou et al., 2019, "How to train your MAML", section 4), as pure
functions of the meta-iteration (the number of outer steps taken).

- **MSL**, the multi-step loss: the meta-loss is the query loss after *every* inner step,
  weighted by an importance vector that starts uniform and anneals towards the last step over
  the first ``msl_iterations`` iterations; after them, only the last step's loss counts (plain
  MAML).
- **DA**, derivative-order annealing: first-order meta-gradients for the first
  ``first_order_iterations`` iterations, second order after them (the paper's code goes second
  order once the epoch exceeds ``first_order_to_second_order_epoch = k``, i.e.
  ``first_order_iterations = (k + 1) * 500``; its ``-1``, always second order, is ``0``).

The paper's code counts both in 500-iteration epochs and moves the importance vector once per
epoch (``get_per_step_loss_importance_vector``); here they are functions of the iteration along
the same line, so ``msl_iterations = 5000`` is its ``multi_step_loss_num_epochs = 10``, and the
learner evaluates them at the first iteration of each block of ``train.schedule_every`` (500 in
the Omniglot MAML++ configs: the paper's code exactly; 1: every iteration). (CA, cosine
annealing of the outer learning rate, is ``train.outer_lr_schedule = "cosine"``; LSLR is
:mod:`metagrad.algorithms.rates`; BNWB and BNRS are :mod:`metagrad.algorithms.per_step`.)
"""

from __future__ import annotations

# The paper's code keeps every non-final step's weight at least 0.03 / steps.
MIN_WEIGHT = 0.03


def msl_weights(steps: int, iteration: int, msl_iterations: int) -> list[float] | None:
    """The per-step importance of the query losses at ``iteration``, or ``None`` when only the
    last step's loss counts (MSL over, off, or a single step).

    The non-final weights start at ``1 / steps`` and fall linearly by ``1 / steps`` over
    ``msl_iterations`` (never below ``0.03 / steps``); the final weight takes up the rest, so
    the weights always sum to 1.
    """
    if steps <= 1 or iteration >= msl_iterations:
        return None
    decay = iteration / (steps * msl_iterations)  # the paper: epoch * decay_rate
    floor = MIN_WEIGHT / steps
    early = max(1.0 / steps - decay, floor)
    last = min(1.0 / steps + (steps - 1) * decay, 1.0 - (steps - 1) * floor)
    return [early] * (steps - 1) + [last]


def schedule_point(iteration: int, every: int) -> int:
    """Where a schedule that moves once every ``every`` iterations is at ``iteration``: the first
    iteration of its block (``train.schedule_every``; MAML++'s code: 500, one epoch)."""
    return iteration - iteration % every


def first_order_at(iteration: int, first_order_iterations: int) -> bool:
    """DA: whether the meta-gradient of ``iteration`` (counted from 0) is first order."""
    return iteration < first_order_iterations
