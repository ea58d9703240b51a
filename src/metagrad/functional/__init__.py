"""The pure functional core: parameter dicts, the inner loop and its update rules."""

from metagrad.functional.inner import InnerLoop, adapt, gradients, inner_step, run_inner, trajectory
from metagrad.functional.optim import SGD, Adam, lr_schedule, make_inner_optimizer
from metagrad.functional.params import ModuleState, detached, expand_tasks, split_state
from metagrad.types import Objective, Params

__all__ = [
    "SGD",
    "Adam",
    "InnerLoop",
    "ModuleState",
    "Objective",
    "Params",
    "adapt",
    "detached",
    "expand_tasks",
    "gradients",
    "inner_step",
    "lr_schedule",
    "make_inner_optimizer",
    "run_inner",
    "split_state",
    "trajectory",
]
