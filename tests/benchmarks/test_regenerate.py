"""benchmarks/regenerate.py: the generated block of BENCHMARKS.md from a record (nothing timed)."""

from __future__ import annotations

import json

import pytest
from benchmarks.regenerate import BEGIN, END, block, main, replace_block


def impl(seconds: float, mb: float, family: str = "metagrad", **extra) -> dict:
    return {"median_s": seconds, "memory_bytes": mb * 2**20, "family": family, **extra}


def record() -> dict:
    decision = {
        "key": "2 tasks",
        "path": "vectorized",
        "chunk_size": 8,
        "budget_bytes": 2**30,
        "fits": True,
        "label": "vectorized/8",
        "trials": [
            {"path": "loop", "chunk_size": None, "bytes": 2**20, "seconds": 0.8},
            {"path": "vectorized", "chunk_size": 8, "bytes": 40 * 2**20, "seconds": 0.25},
        ],
    }
    impls = {
        "metagrad-loop": impl(0.8, 8),
        "metagrad-vec-grouped": impl(0.3, 200),
        "metagrad-auto": impl(0.25, 40, auto_decisions=[decision]),
        "metagrad-vec-grouped-c4": impl(0.4, 30),
        "l2l": impl(0.7, 9, "peer"),
        "higher": impl(0.6, 9, "peer"),
        "torchopt": impl(0.5, 7.5, "peer"),
    }
    kernels = [
        {"kernel": "conv 1", "s": 0.01, "flop": 1e9, "bytes": 2e8},
        {"kernel": "BatchNorm + ReLU 1", "s": 0.02, "flop": 0, "bytes": 4e8},
    ]
    return {
        "machine": {"metagrad_commit": "abc", "torch": "2.13", "torch_threads": 2, "cpu": "x"},
        "load": {"foreign_before": 0.01, "foreign_after": 0.0},
        "ceiling_gflops": {"used": 150.0},
        "config": {"iters": 5, "warmup": 1},
        "warnings": [],
        "runs": [{"setting": "5w1s-q1", "flops": 10.5e9, "impls": impls}],
        "kernels": {"5w1s-q1": kernels},
    }


def test_the_block_rates_the_default_and_the_chunks_against_the_fastest_peer():
    text = block(record())
    row = next(line for line in text.splitlines() if line.startswith("| 5w1s-q1"))
    # torchopt (0.5 s) is the fastest peer: auto 0.5 / 0.25 = 2x, chunks of 4 0.5 / 0.4
    assert "**2.00x (torchopt)**" in row and "1.25x (torchopt)" in row
    assert row.endswith("| 40 / 30 / 7.5 |")  # MB: auto / chunks of 4 / fastest peer
    assert "vectorized/8 [loop 0.800 s" in text  # auto's decision, as its own log line
    assert "| conv 1 | 10.0 | 100.0 | 200 | 20.0 |" in text
    assert "| BatchNorm + ReLU 1 | 20.0 |  | 400 | 20.0 |" in text
    assert text.startswith(BEGIN) and text.endswith(END)


def test_only_the_block_is_rewritten(tmp_path):
    page = tmp_path / "BENCHMARKS.md"
    page.write_text(f"# Title\n\nprose before\n\n{BEGIN}\nold numbers\n{END}\n\nprose after\n")
    kept = tmp_path / "run.json"
    kept.write_text(json.dumps(record()))
    main(["--from-json", str(kept), "--page", str(page)])
    text = page.read_text()
    assert text.startswith("# Title\n\nprose before\n\n") and text.endswith(
        f"{END}\n\nprose after\n"
    )
    assert "old numbers" not in text and "**2.00x (torchopt)**" in text
    main(["--from-json", str(kept), "--page", str(page)])  # again: the same page
    assert page.read_text() == text
    assert page.stat().st_mode & 0o777 == 0o644  # the page's own mode, not mkstemp's 0600


def test_a_page_without_markers_is_refused_with_the_fix():
    with pytest.raises(SystemExit, match="has no generated block: put the lines"):
        replace_block("# no markers here\n", block(record()))
