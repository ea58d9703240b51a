"""Measurement: interleaved timing, foreign CPU load, working memory, FLOPs, matmul ceiling.

Pitfalls this module guards against (see ``shared/BASELINE.md``): on 2 shared cores one foreign
busy thread slows an iteration several times, so implementations are timed interleaved in one
process (A B C A B C ..., the order rotated every round), after warm-up, and every iteration
records how much CPU *other* processes used meanwhile; medians are taken over the quiet
iterations when there are enough of them. Throughput counts the FLOPs of the reference per-task
loop for every implementation, so wasted work never counts.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import re
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import torch
from torch.utils.flop_counter import FlopCounterMode

QUIET_CORES = 0.25  # foreign CPU (in cores) below which an iteration counts as quiet
MIN_QUIET = 3  # quiet iterations needed to take the median over quiet ones only
T = TypeVar("T")


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of ``fn()`` (matmuls and convolutions, forward and all backward passes)."""
    return with_flops(fn)[1]


def with_flops(fn: Callable[[], T]) -> tuple[T, int]:
    """``fn()`` and its FLOPs: the reference's check call counts them at no extra iteration
    (one second-order ResNet12 iteration at 84x84 takes about 40 s on 2 cores)."""
    with FlopCounterMode(display=False) as counter:
        result = fn()
    return result, int(counter.get_total_flops())


def matmul_gflops(n: int = 4096, reps: int = 3) -> float:
    """Best float32 ``n x n x n`` matmul rate in GFLOP/s: the machine's practical ceiling."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


# --- CPU load --------------------------------------------------------------------------------


def _busy_seconds() -> float:
    """CPU seconds all processes spent busy since boot (from /proc/stat; 0 if unavailable)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()[1:]
    except OSError:  # pragma: no cover - non-Linux
        return 0.0
    ticks = [int(x) for x in fields[:8]]
    busy = sum(ticks) - ticks[3] - ticks[4]  # minus idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system


@dataclass
class CpuSnapshot:
    """Wall clock, system-wide busy CPU and this process's CPU at one instant."""

    wall: float = field(default_factory=time.perf_counter)
    busy: float = field(default_factory=_busy_seconds)
    own: float = field(default_factory=_own_seconds)

    def foreign_since(self, start: CpuSnapshot) -> float:
        """Average number of cores other processes kept busy since ``start``."""
        wall = max(self.wall - start.wall, 1e-9)
        return max(0.0, (self.busy - start.busy) - (self.own - start.own)) / wall


def load_average() -> tuple[float, float, float]:
    """``os.getloadavg()`` (zeros where unsupported)."""
    try:
        return os.getloadavg()
    except OSError:  # pragma: no cover
        return (0.0, 0.0, 0.0)


def foreign_load(seconds: float = 1.0) -> float:
    """Cores other processes keep busy, measured over ``seconds`` of this process sleeping."""
    start = CpuSnapshot()
    time.sleep(seconds)
    return CpuSnapshot().foreign_since(start)


# --- timing ----------------------------------------------------------------------------------


@dataclass
class Timing:
    """Per-iteration seconds and foreign load of one implementation."""

    seconds: list[float] = field(default_factory=list)
    foreign: list[float] = field(default_factory=list)

    @property
    def quiet(self) -> list[float]:
        """Seconds of the iterations during which other processes stayed (almost) idle."""
        return [s for s, f in zip(self.seconds, self.foreign) if f < QUIET_CORES]

    def median(self) -> tuple[float, str]:
        """Median seconds per iteration, and over which iterations (``"quiet"`` or ``"all"``)."""
        quiet = self.quiet
        if len(quiet) >= min(MIN_QUIET, len(self.seconds)):
            return statistics.median(quiet), "quiet"
        return statistics.median(self.seconds), "all"


def time_interleaved(
    runners: dict[str, Callable[[], object]], iters: int, warmup: int
) -> dict[str, Timing]:
    """Run every callable ``warmup + iters`` times, interleaved, timing the last ``iters``.

    Round ``r`` runs them in an order rotated by ``r``, so no implementation always follows the
    same neighbour. Garbage is collected before every timed call, outside the timing.
    """
    names = list(runners)
    timings = {n: Timing() for n in names}
    for r in range(warmup + iters):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            gc.collect()
            start = CpuSnapshot()
            runners[name]()
            end = CpuSnapshot()
            if r >= warmup:
                timings[name].seconds.append(end.wall - start.wall)
                timings[name].foreign.append(end.foreign_since(start))
    return timings


# --- memory ----------------------------------------------------------------------------------


def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            text = f.read()
    except OSError:  # pragma: no cover - non-Linux
        return None
    m = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(m.group(1)) if m else None


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False if not permitted."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _release_free_memory() -> None:
    """Return freed heap memory to the OS, so RSS before a run is what is really in use."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _rss_bytes() -> int:
    kb = _status_kb("VmRSS")
    if kb is not None:
        return kb * 1024
    import psutil  # pragma: no cover - non-Linux fallback

    return psutil.Process().memory_info().rss  # pragma: no cover


def working_memory(fn: Callable[[], object]) -> tuple[int, str]:
    """Peak resident memory during ``fn()`` minus the resident memory before it, in bytes.

    Uses VmHWM reset through ``/proc/self/clear_refs`` where permitted, else samples RSS every
    millisecond from a background thread (psutil). Returns the bytes and the method used.
    """
    _release_free_memory()
    before = _rss_bytes()
    if _reset_peak() and _status_kb("VmHWM") is not None:
        fn()
        return max(0, _status_kb("VmHWM") * 1024 - before), "VmHWM"
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.001)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        fn()
    finally:
        done.set()
        thread.join()
    return max(0, max(peak[0], _rss_bytes()) - before), "sampled RSS"


# --- gradient agreement ----------------------------------------------------------------------


@dataclass(frozen=True)
class GradCheck:
    """How far an implementation's meta-gradient is from the reference's."""

    global_rel: float  # ||g - g_ref|| / ||g_ref|| over all parameters
    worst_rel: float  # worst per-tensor relative error (scale floored, see compare_grads)
    worst_tensor: str
    ok: bool


def compare_grads(
    grads: dict[str, torch.Tensor], ref: dict[str, torch.Tensor], tol: float
) -> GradCheck:
    """Relative errors of ``grads`` against ``ref``; ``ok`` when the worst is below ``tol``.

    Each tensor's error is divided by the larger of its own reference norm and its share of the
    whole gradient's norm, ``||g_ref|| * sqrt(numel / total numel)``. The floor matters for
    tensors whose exact gradient is zero, such as a convolution bias that BatchNorm cancels:
    their float32 values are rounding noise, which differs between correct implementations.
    """
    if set(grads) != set(ref):
        return GradCheck(float("inf"), float("inf"), "parameter names differ", False)
    total = sum(r.numel() for r in ref.values())
    ref_norm = sum(float(r.double().norm()) ** 2 for r in ref.values()) ** 0.5
    diff_sq, worst, worst_name = 0.0, 0.0, ""
    for k, r in ref.items():
        diff = float((grads[k].double() - r.double()).norm())
        diff_sq += diff**2
        scale = max(float(r.double().norm()), ref_norm * (r.numel() / max(total, 1)) ** 0.5)
        err = diff / max(scale, 1e-300)
        if not worst_name or not err <= worst:  # NaN counts as the worst
            worst, worst_name = err, k
    global_rel = diff_sq**0.5 / max(ref_norm, 1e-300)
    ok = bool(worst < tol and global_rel < tol)
    return GradCheck(global_rel, worst, worst_name, ok)


def compare_predictions(
    pred: dict[str, torch.Tensor], ref: dict[str, torch.Tensor], tol: float
) -> GradCheck:
    """Test-episode outputs against the reference's; ``ok`` when every error is below ``tol``.

    ``pred`` gives the per-task query ``loss`` and ``accuracy`` and possibly the ``logits``
    (``metagrad.evaluate`` reports no logits); each must be in ``ref``. Loss and logits: largest
    absolute difference over the reference's largest magnitude. Accuracy: largest absolute
    difference, a multiple of ``1 / queries``, so below ``tol`` means every task's accuracy is
    equal (two float32 logits of one query within rounding of each other are too rare to
    matter). ``global_rel`` is the loss's error.
    """
    missing = {"loss", "accuracy"} - set(pred)
    if missing or not set(pred) <= set(ref):
        unknown = sorted(set(pred) - set(ref))
        what = f"missing {sorted(missing)}" if missing else f"unknown {unknown}"
        return GradCheck(float("inf"), float("inf"), f"predictions {what}", False)
    errors = {}
    for k, v in pred.items():
        diff = (v.double() - ref[k].double()).abs().max()
        scale = 1.0 if k == "accuracy" else float(ref[k].double().abs().max())
        errors[k] = float(diff) / max(scale, 1e-300)
    worst = max(errors, key=lambda k: (errors[k] != errors[k], errors[k]))  # NaN is the worst
    ok = all(e < tol for e in errors.values())
    return GradCheck(errors["loss"], errors[worst], worst, ok)


def check_gradients(
    grad_fns: dict[str, Callable[[], dict[str, torch.Tensor]]],
    reference: str,
    tol: float,
    compare: Callable[..., GradCheck] = compare_grads,
    ref: dict[str, torch.Tensor] | None = None,
) -> dict[str, GradCheck]:
    """Meta-gradients of every implementation against ``reference``'s (all from equal weights).

    Args:
        grad_fns: name -> a callable returning that implementation's meta-gradient by name.
        reference: the name of the reference implementation among ``grad_fns``.
        tol: worst per-tensor relative error allowed.
        compare: the comparison (:func:`compare_predictions` for test episodes' outputs).
        ref: the reference's result if already computed (its call is then not repeated).
    """
    ref = grad_fns[reference]() if ref is None else ref
    return {n: compare(ref if n == reference else fn(), ref, tol) for n, fn in grad_fns.items()}


def summarize(timing: Timing, tasks: int, flops: int, ceiling: float) -> dict[str, float | str]:
    """Median seconds, tasks/s, GFLOP/s (reference FLOPs) and fraction of the matmul ceiling."""
    med, over = timing.median()
    gflops = flops / med / 1e9
    return {
        "median_s": med,
        "median_over": over,
        "iterations": len(timing.seconds),
        "busy_iterations": len(timing.seconds) - len(timing.quiet),
        "tasks_per_s": tasks / med,
        "gflops": gflops,
        "ceiling_fraction": gflops / ceiling if ceiling else float("nan"),
        "seconds": timing.seconds,
        "foreign_cores": timing.foreign,
    }
