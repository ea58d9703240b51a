"""Meta-learning algorithms: pure objectives and their stateful shells."""

from metagrad.algorithms.learner import MetaLearner
from metagrad.algorithms.maml import (
    MetaOutput,
    maml_objective,
    meta_gradient,
    multi_step_objective,
)
from metagrad.algorithms.maml_learner import MAML
from metagrad.algorithms.paths import TaskExecutor, resolve_path
from metagrad.algorithms.reptile import Reptile, reptile_direction
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
    "multi_step_objective",
    "reptile_direction",
    "resolve_path",
]
