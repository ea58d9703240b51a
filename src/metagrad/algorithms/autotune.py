"""``path="auto"``: measure the execution paths on the real training step, keep the fastest that
fits a memory budget (as cuDNN's benchmark mode does for convolution algorithms).

On the first meta-batch of each distinct task shape, a learner with ``path="auto"`` runs its
own training step (forward and meta-gradient, the real batch, the real thread count) on every
:func:`candidates` plan: the per-task loop, the batched path with a few chunk sizes, and
``torch.func.vmap`` only for models that do not batch tasks natively. Each plan first runs once
under :func:`tensor_memory`, on one backward pass's worth of tasks (a chunk; one task for the
loop), which also warms it up; the plans within the budget are then timed ``repeats`` times,
interleaved, and the fastest (least time of its runs) is kept. Over budget, a plan is never
timed. If none fits, the one with the least memory runs, and the decision says so.

Working memory is counted in tensor bytes, not resident memory: the peak, during the step, of
the bytes of the tensor storages it created and still holds (activations kept for the
backward pass, gradients, the graph's saved tensors). Resident memory in the training process
depends on what ran before: with :func:`metagrad.runtime.keep_freed_memory` glibc keeps freed
buffers for reuse, so a plan measured after another one barely grows the resident set
(BENCHMARKS.md measures each implementation in a fresh process for that reason, which a
training run cannot afford). Tensor bytes do not depend on the order, the allocator or the
machine's other processes. They leave out the allocator's overhead and the kernels' scratch
space, so they are a lower bound of the resident growth (the vectorised step of Omniglot
5-way 1-shot with 1 query, meta-batch 32: 136 MB of tensors; issue 19's table: 258 MB
resident in a fresh process).

Nothing here knows a run directory: a learner caches its decisions per shape
(:meth:`metagrad.algorithms.MetaLearner.plan_for`); the trainer records them
(:mod:`metagrad.train.path_record`).
"""

from __future__ import annotations

import logging
import os
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

from metagrad.algorithms.paths import has_running_stats
from metagrad.errors import UsageError
from metagrad.types import TaskBatch, TaskBatchedModule

log = logging.getLogger(__name__)

CHUNKS = (None, 16, 8)  # chunk sizes tried on a batched path (None: the whole meta-batch)
DEFAULT_BUDGET = 0.5  # half the memory available when the decision is made
# "0" turns measuring off: "auto" then runs the model's rule (``preferred_path``), the same in
# every run. Separate runs that measure may choose differently (as cuDNN's benchmark mode), and
# different paths round differently; the test suite sets it for runs it compares bit for bit.
MEASURE_ENV = "METAGRAD_MEASURE_PATHS"
SLOWER = 2.0  # a plan this many times slower than the fastest in its first run is timed once


@dataclass(frozen=True)
class Plan:
    """How a training step runs its tasks: a resolved path and its tasks per backward pass."""

    path: str  # "loop", "vectorized" (native) or "vmap"
    chunk_size: int | None = None  # None: the whole meta-batch (the loop: one task)

    @property
    def label(self) -> str:
        return self.path if self.chunk_size is None else f"{self.path}/{self.chunk_size}"


@dataclass(frozen=True)
class Trial:
    """What one plan measured: tensor bytes (None: out of memory) and seconds per step (None:
    not timed, being over the budget or the only plan within it)."""

    plan: Plan
    bytes: int | None
    seconds: float | None = None


@dataclass(frozen=True)
class Decision:
    """The plan ``"auto"`` chose for one task shape (``key``), and why."""

    key: str
    plan: Plan
    budget: int
    trials: tuple[Trial, ...] = ()
    fits: bool = True

    def line(self) -> str:
        """One readable line: the choice, each plan's time and memory, the budget."""

        def one(t: Trial) -> str:
            time_ = "not timed" if t.seconds is None else f"{t.seconds:.3f} s"
            over = t.bytes is not None and t.bytes > self.budget
            return f"{t.plan.label} {time_}, {_mb(t.bytes)}" + (" (over budget)" if over else "")

        head = f"path auto ({self.key}): {self.plan.label}"
        if not self.fits:
            head += (
                f"; every plan is over algorithm.memory_budget ({_mb(self.budget)}), so it "
                "runs the one with the least memory: lower train.meta_batch_size, or raise "
                "algorithm.memory_budget"
            )
        return f"{head} [{'; '.join(one(t) for t in self.trials)}; budget {_mb(self.budget)}]"

    def to_dict(self) -> dict:
        trials = [
            {**_plan_dict(t.plan), "bytes": t.bytes, "seconds": t.seconds} for t in self.trials
        ]
        return {
            "key": self.key,
            **_plan_dict(self.plan),
            "budget_bytes": self.budget,
            "fits": self.fits,
            "trials": trials,
        }

    @classmethod
    def from_dict(cls, d: dict, where: str = "the record") -> Decision:
        """Read :meth:`to_dict`'s output back.

        Raises:
            UsageError: a field is missing or of the wrong kind, naming ``where``.
        """
        try:
            trials = tuple(
                Trial(_plan(t), _opt(t["bytes"], int), _opt(t["seconds"], float))
                for t in d["trials"]
            )
            return cls(str(d["key"]), _plan(d), int(d["budget_bytes"]), trials, bool(d["fits"]))
        except (KeyError, TypeError, ValueError) as e:
            raise UsageError(
                f"{where} holds a path decision metagrad cannot read ({type(e).__name__}: {e}); "
                "delete it to measure the paths again"
            ) from None


def _plan_dict(plan: Plan) -> dict:
    return {"path": plan.path, "chunk_size": plan.chunk_size}


def _plan(d: dict) -> Plan:
    if d["path"] not in ("loop", "vectorized", "vmap"):
        raise ValueError(f"path {d['path']!r} is not 'loop', 'vectorized' or 'vmap'")
    chunk = _opt(d["chunk_size"], int)
    if chunk is not None and chunk < 1:
        raise ValueError(f"chunk_size {chunk} is below 1")
    return Plan(d["path"], chunk)


def _opt(value, kind):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{value!r} is not a number")
    return kind(value)


def _mb(n: int | None) -> str:
    return "out of memory" if n is None else f"{n / 1e6:.0f} MB"


def candidates(
    model: nn.Module, tasks: int, chunks: Sequence[int | None], running_stats: bool
) -> list[Plan]:
    """The plans that can run ``model`` on ``tasks`` tasks, the loop first.

    Args:
        model: the model; a :class:`~metagrad.types.TaskBatchedModule` runs batched natively,
            any other under ``vmap``.
        tasks: tasks of the meta-batch (chunks of at least this many are the whole batch).
        chunks: the chunk sizes to try on the batched path (the user's ``chunk_size`` alone
            if given, else :data:`CHUNKS`).
        running_stats: the model's BatchNorm updates running statistics in place: the loop
            alone can run it.
    """
    if running_stats:
        return [Plan("loop")]
    path = "vectorized" if isinstance(model, TaskBatchedModule) else "vmap"
    kept = dict.fromkeys(None if c is None or c >= tasks else c for c in chunks)
    return [Plan("loop"), *(Plan(path, c) for c in kept)]


def available_memory() -> int | None:
    """Bytes of memory available to new work: ``MemAvailable`` of ``/proc/meminfo``, else
    psutil's (if installed), else None (unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.virtual_memory().available)  # pragma: no cover - non-Linux


def budget_bytes(budget: float, available: Callable[[], int | None] = available_memory) -> int:
    """``algorithm.memory_budget`` in bytes: a number in (0, 1] is a fraction of the memory
    available now, a larger one is bytes. Unknown available memory: no limit."""
    if budget > 1:
        return int(budget)
    free = available()
    return int(budget * free) if free is not None else 2**63 - 1


class _LiveTensors(TorchDispatchMode):
    """Counts the bytes of the tensor storages created under it that are still alive."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self.seen: WeakIdKeyDictionary = WeakIdKeyDictionary()

    def _freed(self, n: int) -> None:
        self.live -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                storage = t.untyped_storage()
                if storage not in self.seen:  # views and in-place results count once
                    self.seen[storage] = n = storage.nbytes()
                    weakref.finalize(storage, self._freed, n)
                    self.live += n
                    self.peak = max(self.peak, self.live)
        return out


def tensor_memory(plan: Plan, fn: Callable[[], object]) -> int:
    """Peak bytes of the tensors ``fn()`` creates and holds at once (module docstring)."""
    mode = _LiveTensors()
    with mode:
        fn()
    return mode.peak


def wall_time(plan: Plan, fn: Callable[[], object]) -> float:
    """Seconds ``fn()`` takes by :func:`time.perf_counter`, its GPU work included."""
    _synchronize()
    start = time.perf_counter()
    fn()
    _synchronize()
    return time.perf_counter() - start


def _synchronize() -> None:
    """Wait for queued GPU work (a step returns before its kernels finish)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    if torch.backends.mps.is_available():
        torch.mps.synchronize()


# A learner's step on a plan: run(plan, tasks) with tasks the number of the batch's first tasks
# to run (None: all), leaving the learner as it was.
Run = Callable[[Plan, "int | None"], object]
Probe = Callable[[Plan, Callable[[], object]], float]


def _out_of_memory(error: RuntimeError) -> bool:
    text = str(error).lower()
    return "out of memory" in text or "can't allocate memory" in text


@dataclass
class Autotuner:
    """Chooses a :class:`Plan` by measuring (module docstring).

    Attributes:
        memory_budget: a fraction of the available memory (0, 1] or bytes (> 1).
        repeats: timed runs per plan (the least counts; a plan :data:`SLOWER` times slower
            than the fastest after the first round is not timed again).
        timer: ``timer(plan, fn) -> seconds`` of running ``fn`` (tests inject a clock).
        memory: ``memory(plan, fn) -> bytes`` of working memory of ``fn`` (tests inject one).
        available: the available memory in bytes (None: unknown).
    """

    memory_budget: float = DEFAULT_BUDGET
    repeats: int = 2
    timer: Probe = wall_time
    memory: Probe = tensor_memory
    available: Callable[[], int | None] = available_memory
    decisions: list[Decision] = field(default_factory=list)

    def __call__(self, key: str, plans: Sequence[Plan], run: Run) -> Decision:
        """Measure ``plans`` with ``run`` and decide (logged at INFO, kept in ``decisions``)."""
        budget = budget_bytes(self.memory_budget, self.available)
        used: dict[Plan, int | None] = {}
        for plan in plans:  # one backward pass's tasks: the peak of a whole step
            tasks = 1 if plan.path == "loop" else plan.chunk_size
            try:
                used[plan] = int(self.memory(plan, lambda p=plan, n=tasks: run(p, n)))
            except RuntimeError as e:
                if not _out_of_memory(e):
                    raise
                used[plan] = None
        fitting = [p for p in plans if used[p] is not None and used[p] <= budget]
        seconds: dict[Plan, float] = {}
        for repeat in range(self.repeats if len(fitting) > 1 else 0):
            for plan in fitting:  # interleaved: a load that comes and goes hits all alike
                if repeat and seconds[plan] > SLOWER * min(seconds.values()):
                    continue  # no noise makes it the fastest: spare the machine its runs
                t = self.timer(plan, lambda p=plan: run(p, None))
                seconds[plan] = min(t, seconds.get(plan, t))
        if fitting:
            plan = min(fitting, key=lambda p: (seconds.get(p, 0.0), used[p]))
        else:
            known = [p for p in plans if used[p] is not None]
            plan = min(known, key=lambda p: used[p]) if known else plans[0]
        trials = tuple(Trial(p, used[p], seconds.get(p)) for p in plans)
        decision = Decision(key, plan, budget, trials, bool(fitting))
        self.decisions.append(decision)
        log.log(logging.INFO if decision.fits else logging.WARNING, decision.line())
        return decision


@contextmanager
def untouched(learner) -> Iterator[None]:
    """Run a measuring step of ``learner`` and leave everything a training run computes as it
    was: ``.grad`` of its parameters, what its steps count or draw (:meth:`_side_state`:
    schedules, generators, Reptile's carried state) and the global random generators. Inside,
    ``.grad`` starts from None, as after ``zero_grad``."""
    params = list(learner.parameters())
    kept = [p.grad for p in params]
    side = learner._side_state()
    devices = sorted({p.device.index or 0 for p in params if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices):
        try:
            for p in params:
                p.grad = None
            yield
        finally:
            for p, g in zip(params, kept, strict=True):
                p.grad = g
            learner._set_side_state(side)


def measured_plan(learner, key: str, batch: TaskBatch, meta_batch_size: int | None) -> Plan:
    """The plan ``learner.decide`` chooses for ``batch`` (module docstring), running the
    learner's own ``backward`` on each candidate without changing what it computes next."""
    chunks = (learner.chunk_size,) if learner.chunk_size is not None else CHUNKS
    if not learner.chunked:
        chunks = (None,)
    plans = candidates(learner.model, batch.num_tasks, chunks, has_running_stats(learner.model))
    if len(plans) == 1:  # nothing to choose
        return plans[0]
    tasks = meta_batch_size or batch.num_tasks

    def run(plan: Plan, first: int | None) -> None:
        part = batch if first is None else next(batch.chunks(first))
        with untouched(learner):
            learner._forced = plan
            try:
                learner.backward(part, meta_batch_size=tasks)
            finally:
                learner._forced = None

    return learner.decide(key, plans, run).plan


def measuring() -> bool:
    """Whether ``"auto"`` measures (:data:`MEASURE_ENV` is not ``"0"``)."""
    return os.environ.get(MEASURE_ENV, "1") != "0"


def plan_key(batch: TaskBatch, variant: str = "") -> str:
    """What a decision depends on, as readable text: the tasks and their sizes, the input
    shape, dtype, device and thread count (and ``variant``: e.g. first or second order)."""
    x, q = batch.support_x, batch.query_x
    dtype = str(x.dtype).removeprefix("torch.")
    key = (
        f"{batch.num_tasks} tasks of {x.shape[1]}+{q.shape[1]} examples {list(x.shape[2:])}, "
        f"{dtype}, {x.device.type}, {torch.get_num_threads()} threads"
    )
    return f"{key}, {variant}" if variant else key
