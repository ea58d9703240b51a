"""The machine description, the Markdown report and the JSON record of a benchmark run."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
from pathlib import Path

import torch

from benchmarks.l2l_loader import L2L_VERSION, l2l_available
from metagrad.models import kernels

REPO = Path(__file__).resolve().parents[1]
POOL_NAMES = {
    "max": "max-pool Conv4",
    "stride": "strided Conv4 (MAML paper)",
    "resnet12": "ResNet12",
    "mlp": "MLP",
}


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        out = ""
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def machine_info() -> dict:
    """CPU model, cores, torch and peer versions, threads, metagrad commit and kernels."""
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
    except ImportError:
        physical = None
    return {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": physical,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "metagrad": _version("metagrad"),
        "metagrad_commit": _git_commit(),
        "conv_impls": list(kernels.CONV_IMPLS),
        "default_conv_impl": kernels.get_conv_impl(),
        "peers": {
            "learn2learn": f"{L2L_VERSION} (source, loaded by path)" if l2l_available() else None,
            "higher": _version("higher"),
            "torchopt": _version("torchopt"),
            "psutil": _version("psutil"),
        },
    }


def _fmt(x: float | None, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def _flops(n: int) -> str:
    return f"{n / 1e9:.2f} GFLOP" if n >= 1e8 else f"{n / 1e6:.2f} MFLOP"


def run_table(run: dict) -> str:
    """The Markdown section of one (setting, model) run: results and speed-ups."""
    test = run.get("mode") == "test"
    unit, checked = ("episode", "pred") if test else ("meta-iteration", "float64 grad")
    title = (
        f"### {run['setting']} / {POOL_NAMES.get(run['model'], run['model'])}\n\n"
        f"{run['description']}; meta-batch {run['tasks']}; "
        f"{_flops(run['flops'])} per {unit} (reference loop, "
        "counted once, used for every implementation).\n"
    )
    rule = "| --- | " + "--- | " * 9
    head = (
        f"| implementation | s / {'episode' if test else 'iter'} | tasks/s | GFLOP/s "
        f"| % of matmul | working MB | {checked} rel. err | {checked}s "
        f"| float32 err vs float64 | detail |\n{rule}"
    )
    rows = []
    for name, r in run["impls"].items():
        grad = r.get("grad") or {}
        flag = "ok" if grad.get("ok") else "**WRONG**"
        mem = r.get("memory_bytes")
        busy = f" ({r['busy_iterations']} busy)" if r.get("busy_iterations") else ""
        rows.append(
            f"| {name} | {r['median_s']:.4g}{busy} | {r['tasks_per_s']:.4g} | {r['gflops']:.3g} "
            f"| {100 * r['ceiling_fraction']:.3g} | {_fmt(mem and mem / 2**20, '.4g')} "
            f"| {_fmt(grad.get('worst_rel'), '.1e')} | {flag} "
            f"| {_fmt(r.get('float32_error'), '.1e')} | {r['detail']} |"
        )
    for name, why in run["skipped"].items():
        rows.append(f"| {name} | skipped | | | | | | | | {why} |")
    parts = [title, head.rstrip(), *rows]
    peers = [n for n, r in run["impls"].items() if r["family"] == "peer"]
    if peers:
        parts += [
            "",
            "Speed-up of each metagrad variant over each peer (peer s/iter / metagrad s/iter):",
            "",
            "| metagrad | " + " | ".join(peers) + " |",
            ("| --- | " + "--- | " * len(peers)).rstrip(),
        ]
        for name, ratios in run["ratios"].items():
            parts.append(f"| {name} | " + " | ".join(f"{ratios[p]:.2f}x" for p in peers) + " |")
    return "\n".join(parts) + "\n"


def markdown(result: dict) -> str:
    """The whole report: machine, ceiling, load, warnings, one section per run."""
    m, cfg = result["machine"], result["config"]
    peers = ", ".join(f"{k} {v}" for k, v in m["peers"].items() if v)
    lines = [
        "## metagrad vs peers: MAML meta-iteration speed",
        "",
        f"- machine: {m['cpu']}, {m['logical_cores']} logical cores; torch {m['torch']}, "
        f"{m['torch_threads']} threads; python {m['python']}",
        f"- metagrad {m['metagrad']} ({m['metagrad_commit']}); conv kernels "
        f"{m['conv_impls']} (default {m['default_conv_impl']}); peers: {peers}",
        f"- matmul ceiling ({cfg['matmul_size']}^3 float32): "
        f"{result['ceiling_gflops']['before']:.1f} GFLOP/s before, "
        f"{result['ceiling_gflops']['after']:.1f} after; fractions use "
        f"{result['ceiling_gflops']['used']:.1f}",
        f"- {cfg['iters']} timed iterations after {cfg['warmup']} warm-up, interleaved; medians "
        "over quiet iterations (other processes < 0.25 core) when there are >= 3",
        f"- load average before {result['load']['before']}, after {result['load']['after']}; "
        f"foreign cores before {result['load']['foreign_before']:.2f}, "
        f"after {result['load']['foreign_after']:.2f}",
    ]
    lines += [f"- **WARNING**: {w}" for w in result["warnings"]]
    lines.append("")
    lines += [run_table(run) for run in result["runs"]]
    return "\n".join(lines)


def write_json(result: dict, path: str | Path) -> None:
    """Write the full record (per-iteration seconds included) as indented JSON."""
    Path(path).write_text(json.dumps(result, indent=2, default=str) + "\n")
