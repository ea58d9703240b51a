"""Seconds and peak memory of one MAML meta-iteration with ResNet12 at 84x84 (issue 15).

Each measurement runs in a fresh process (peak resident memory is per process): build
ResNet12 (64-160-320-640, 5-way, transductive BatchNorm), one meta-batch of one MMFewShot
training episode (5-way 5-shot, 16 queries per class: 105 images) with 2 inner steps, first
or second order, with or without the recomputed inner loop; report the wall time of the second
iteration and the process's peak resident memory (``ru_maxrss``). Random tensors: the cost
does not depend on the pixels.

    python -m benchmarks.resnet12_cost --threads 2
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def one(first_order: bool, recompute: bool, steps: int, shots: int, queries: int) -> dict:
    import torch
    import torch.nn.functional as F

    from metagrad import MAML, TaskBatch
    from metagrad.models import ResNet12

    torch.manual_seed(0)
    model = ResNet12(5)
    ways = 5
    batch = TaskBatch(
        torch.randn(1, ways * shots, 3, 84, 84),
        torch.arange(ways).repeat_interleave(shots)[None],
        torch.randn(1, ways * queries, 3, 84, 84),
        torch.arange(ways).repeat_interleave(queries)[None],
    )
    maml = MAML(
        model,
        F.cross_entropy,
        inner_lr=0.01,
        inner_steps=steps,
        first_order=first_order,
        recompute_inner=recompute,
    )
    times = []
    for _ in range(2):
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        maml.backward(batch)
        times.append(time.perf_counter() - start)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": times[-1], "peak_mb": peak_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(one(**json.loads(args.child))))
        return
    cases = [
        dict(first_order=fo, recompute=rc, steps=2, shots=5, queries=16)
        for fo in (True, False)
        for rc in (False, True)
    ]
    for case in cases:
        cmd = [sys.executable, "-m", "benchmarks.resnet12_cost", "--threads", str(args.threads)]
        out = subprocess.run([*cmd, "--child", json.dumps(case)], capture_output=True, text=True)
        result = (
            json.loads(out.stdout.strip().splitlines()[-1])
            if out.returncode == 0
            else {"error": out.stderr.strip().splitlines()[-1]}
        )
        print(json.dumps({**case, **result}), flush=True)


if __name__ == "__main__":
    main()
