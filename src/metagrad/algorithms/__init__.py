"""Meta-learning algorithms: pure objectives and their stateful shells."""

from metagrad.algorithms.learner import MAML, MetaLearner, Reptile
from metagrad.algorithms.maml import MetaOutput, maml_objective, meta_gradient
from metagrad.algorithms.paths import TaskExecutor, resolve_path
from metagrad.algorithms.reptile import reptile_direction
from metagrad.functional.inner import InnerLoop
from metagrad.types import PATHS

__all__ = [
    "MAML",
    "PATHS",
    "InnerLoop",
    "MetaLearner",
    "MetaOutput",
    "Reptile",
    "TaskExecutor",
    "maml_objective",
    "meta_gradient",
    "reptile_direction",
    "resolve_path",
]
