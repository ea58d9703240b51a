"""Per-kernel cost of the vectorised path in a named setting: time, GFLOP/s, bytes touched.

    python benchmarks/kernel_table.py --settings 20w1s-q1,5w5s-q5 --threads 1

Each layer of the strided Conv4 (convolution; BatchNorm + ReLU) runs on the setting's
support-set shapes (tasks x ways*shots images) in the grouped layout ``[N, tasks*C, H, W]``,
in the pattern one second-order inner step makes of it: forward, the gradient with
``create_graph=True`` (to the input, except for the first layer, and to the weights), and the
backward pass of that gradient. Reports the median time, the FLOPs counted by
``torch.utils.flop_counter`` and the bytes the aten operators read and write (inputs plus
outputs of every operator: a lower bound of the memory traffic, which ignores cache reuse).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.settings import add_override_args, overridden, select_settings
from metagrad.models import fold, kernels


class _Bytes(TorchDispatchMode):
    """Counts the bytes of every aten operator's tensor inputs and outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten((args, kwargs, out))[0]:
            if isinstance(t, torch.Tensor):
                self.total += t.numel() * t.element_size()
        return out


def _pattern(layer, x: torch.Tensor, params: list[torch.Tensor]) -> None:
    y = layer(x, *params)
    inputs = [x, *params] if x.requires_grad else params
    grads = torch.autograd.grad(y, inputs, y, create_graph=True)
    sum(g.square().sum() for g in grads).backward()


def _one_task(x: torch.Tensor, params: list[torch.Tensor], tasks: int):
    """The first task's share of ``x [N, tasks*C, ...]`` and ``params [tasks, ...]``."""
    one = x.detach()[:, : x.shape[1] // tasks].requires_grad_(x.requires_grad)
    return one, [q.detach()[:1].requires_grad_() for q in params]


def _layers(setting):
    t, n, f = setting.tasks, setting.ways * setting.shots, setting.filters
    size, channels = setting.size, setting.channels
    for i in range(4):
        out = (size - 1) // 2 + 1
        x = torch.randn(n, t * channels, size, size, requires_grad=i > 0)
        w = torch.randn(t, f, channels, 3, 3, requires_grad=True)

        def conv(x, w):
            return kernels.grouped_conv2d(x, w, None, 2, 1)

        g = torch.rand(t, f).add(0.5).requires_grad_()
        b = torch.randn(t, f, requires_grad=True)
        if fold.foldable(w):  # as Conv4 runs it: one folded kernel (metagrad.models.fold)

            def folded(x, w, g, b):
                return torch.relu(fold.conv_batch_norm(x, w, None, g, b, 2, 1))

            name = f"conv {i + 1} + BatchNorm + ReLU, folded: {channels}->{f}, {size}->{out}"
            yield name, folded, x, [w, g, b]
            size, channels = out, f
            continue
        yield f"conv {i + 1}: {channels}->{f}, {size}->{out}", conv, x, [w]
        z = torch.randn(n, t * f, out, out, requires_grad=True)

        def norm_relu(z, g, b):
            return torch.relu(kernels.grouped_batch_norm(z, g, b))

        yield f"BatchNorm + ReLU {i + 1}: {f}x{out}x{out}", norm_relu, z, [g, b]
        size, channels = out, f


def rows(setting, repeats: int = 7) -> list[dict]:
    """One row per kernel of ``setting``'s strided Conv4: name, seconds (median), FLOPs (the
    one-task pattern's count times the tasks: the counter ignores groups), bytes touched."""
    out = []
    for name, layer, x, params in _layers(setting):
        _pattern(layer, x, params)  # warm-up
        with FlopCounterMode(display=False) as fc:
            _pattern(layer, *_one_task(x, params, setting.tasks))
        counter = _Bytes()
        with counter:
            _pattern(layer, x, params)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            _pattern(layer, x, params)
            times.append(time.perf_counter() - start)
        flop = fc.get_total_flops() * setting.tasks
        out.append(dict(kernel=name, s=statistics.median(times), flop=flop, bytes=counter.total))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--settings", default="20w1s-q1")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=7)
    add_override_args(p)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    for setting in overridden(select_settings(args.settings), args):
        print(f"\n{setting.name}: {setting.tasks} tasks x {setting.ways * setting.shots} images")
        print("| kernel | ms | GFLOP | GFLOP/s | MB touched | GB/s |")
        print("| --- | --- | --- | --- | --- | --- |")
        for r in rows(setting, args.repeats):
            s, flop, byte = r["s"], r["flop"], r["bytes"]
            print(
                f"| {r['kernel']} | {1e3 * s:.1f} | {flop / 1e9:.3f} | {flop / 1e9 / s:.1f} | "
                f"{byte / 1e6:.0f} | {byte / 1e9 / s:.1f} |"
            )


if __name__ == "__main__":
    main()
