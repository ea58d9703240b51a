"""metagrad: fast, exact, model-agnostic meta-learning for PyTorch.

The public API::

    from metagrad import MAML, Reptile, TaskBatch, adapt
    from metagrad.models import MLP, Conv4
"""

from metagrad.algorithms import MAML, InnerLoop, MetaLearner, MetaOutput, Reptile
from metagrad.functional import Params, adapt, split_state
from metagrad.types import Task, TaskBatch

__version__ = "0.1.0"

__all__ = [
    "MAML",
    "InnerLoop",
    "MetaLearner",
    "MetaOutput",
    "Params",
    "Reptile",
    "Task",
    "TaskBatch",
    "__version__",
    "adapt",
    "split_state",
]
