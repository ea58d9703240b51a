"""The pure functional core: parameter dicts, inner-loop adaptation, task-batched kernels."""

from metagrad.functional.inner import LossFn, adapt, gradients
from metagrad.functional.optim import SGD, Adam, lr_schedule, make_optimizer
from metagrad.functional.params import ModuleState, Params, expand_tasks, split_state

__all__ = [
    "SGD",
    "Adam",
    "LossFn",
    "ModuleState",
    "Params",
    "adapt",
    "expand_tasks",
    "gradients",
    "lr_schedule",
    "make_optimizer",
    "split_state",
]
