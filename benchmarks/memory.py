"""Working memory of one implementation, measured in a process of its own.

Resident memory depends on the state of the C heap: measured one after another in a single
process, an implementation inherits the holes that the previous ones left (measured: the
checkpointed loop at 50 inner steps took 58 MB on its own and 85 MB right after the plain loop
at 50 steps). Each measurement therefore runs in a freshly spawned interpreter with the same
threads and allocator settings: build, one warm-up iteration, then the measured iteration.
"""

from __future__ import annotations

import importlib
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from benchmarks.settings import Setting


@dataclass(frozen=True)
class MemoryJob:
    """How to build the implementation to measure, by reference (it crosses a process).

    Attributes:
        builder: ``"module:function"`` returning an ``Implementation`` from ``kwargs``.
        kwargs: the builder's keyword arguments (picklable).
        setting: the setting whose meta-batch the iteration runs.
        seed: the meta-batch's seed.
        threads: ``torch.set_num_threads`` in the child.
        keep_freed_memory: apply :func:`metagrad.runtime.keep_freed_memory` in the child.
    """

    builder: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    setting: Setting | None = None
    seed: int = 0
    threads: int = 2
    keep_freed_memory: bool = False


def _measure(job: MemoryJob) -> tuple[int, str]:
    import torch

    from benchmarks import measure
    from benchmarks.settings import make_batch

    torch.set_num_threads(job.threads)
    if job.keep_freed_memory:
        from metagrad.runtime import keep_freed_memory

        keep_freed_memory()
    module, _, name = job.builder.partition(":")
    impl = getattr(importlib.import_module(module), name)(**job.kwargs)
    batch = make_batch(job.setting, job.seed)
    impl.step(batch)  # warm-up: first-call allocations (kernel caches, Adam state) are not work
    return measure.working_memory(lambda: impl.step(batch))


def isolated_working_memory(job: MemoryJob) -> tuple[int, str]:
    """:func:`benchmarks.measure.working_memory` of one iteration of ``job``, in a new process.

    Returns the bytes and the method used (as ``working_memory``).
    """
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(_measure, job).result()
