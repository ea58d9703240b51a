"""metagrad: fast, exact, model-agnostic meta-learning for PyTorch.

The public API::

    from metagrad import MAML, Reptile, TaskBatch, adapt
    from metagrad.models import MLP, Conv4

    learner = metagrad.load("runs/o5")           # a trained run (or a pretrained name)
    adapted = learner.adapt(images, labels)      # any number of classes
    adapted.predict(more_images).classes
    metagrad.meta_test(learner, task_batches)    # mean and 95% interval per inner step
"""

from metagrad.algorithms import MAML, InnerLoop, MetaLearner, MetaOutput, Reptile
from metagrad.functional import Params, adapt, split_state
from metagrad.types import Task, TaskBatch

__version__ = "0.1.0"

# Loading a run needs the runner (configs, checkpoints): imported on first use, so that
# `import metagrad` stays as light as the core.
_RUNNER = {
    "load": "metagrad.train.deploy",
    "meta_test": "metagrad.train.meta_test",
    "PRETRAINED": "metagrad.train.pretrained",
}


def __getattr__(name: str):
    if name in _RUNNER:
        import importlib

        return getattr(importlib.import_module(_RUNNER[name]), name)
    raise AttributeError(f"module 'metagrad' has no attribute {name!r}")


__all__ = [
    "MAML",
    "PRETRAINED",
    "InnerLoop",
    "MetaLearner",
    "MetaOutput",
    "Params",
    "Reptile",
    "Task",
    "TaskBatch",
    "__version__",
    "adapt",
    "load",
    "meta_test",
    "split_state",
]
