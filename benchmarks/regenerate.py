"""Regenerate BENCHMARKS.md's measured block on the MAML paper's Omniglot settings, in one command.

    python benchmarks/regenerate.py                      # measure (quiet machine, ~20 min), rewrite
    python benchmarks/regenerate.py --record run.json    # also keep the JSON record
    python benchmarks/regenerate.py --from-json run.json # rewrite from a kept record, no measuring

Measures, in one process and interleaved as ``compare.py`` does (2 threads, glibc's freed-memory
reuse on for every implementation alike, every meta-gradient checked against metagrad's loop):
metagrad's loop, its whole-batch vectorised path, ``path="auto"`` (the default) and the
vectorised path in chunks of 4 tasks (the plan that keeps working memory within 4x of the
per-task peers), against learn2learn, higher and torchopt, on ``5w1s-q1``, ``20w1s-q1`` and
``5w5s-q5``; then the per-kernel table (``kernel_table.py``). The Markdown replaces the text
between the two ``regenerate`` markers of BENCHMARKS.md (written atomically); the rest of the
page, the prose that reads the numbers, is left alone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import ``benchmarks`` from the repo root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from benchmarks.report import REPO
from metagrad.algorithms.autotune import Decision

SETTINGS = "5w1s-q1,20w1s-q1,5w5s-q5"
CHUNKED = "metagrad-vec-grouped-c4"
IMPLS = f"metagrad-loop,metagrad-vec-grouped,metagrad-auto,{CHUNKED},l2l,higher,torchopt"
PEERS = ("l2l", "higher", "torchopt")
BEGIN = "<!-- benchmarks/regenerate.py: begin (generated, do not edit by hand) -->"
END = "<!-- benchmarks/regenerate.py: end -->"


def measure(threads: int, iters: int, warmup: int) -> dict:
    """The compare.py record of the three settings, with the per-kernel rows under "kernels"."""
    import torch

    from benchmarks import compare, kernel_table
    from benchmarks.settings import select_settings

    argv = ["--settings", SETTINGS, "--impls", IMPLS, "--threads", str(threads)]
    argv += ["--iters", str(iters), "--warmup", str(warmup), "--keep-freed-memory"]
    record = compare.main(argv)
    torch.set_num_threads(threads)
    record["kernels"] = {s.name: kernel_table.rows(s) for s in select_settings(SETTINGS)}
    record["command"] = f"python benchmarks/regenerate.py --threads {threads} --iters {iters}"
    return record


def _s(r: dict | None) -> str:
    return "" if r is None else f"{r['median_s']:.3f}"


def _mb(r: dict | None) -> str:
    mem = None if r is None else r.get("memory_bytes")
    return "n/a" if mem is None else f"{mem / 2**20:.{0 if mem >= 10 * 2**20 else 1}f}"


def _ratio(fastest: str | None, peers: dict, r: dict | None) -> str:
    if r is None or fastest is None:
        return ""
    return f"{peers[fastest]['median_s'] / r['median_s']:.2f}x ({fastest})"


def speed_table(record: dict) -> list[str]:
    """One row per setting: every implementation's s/iter, the default and the chunked plan
    against the fastest peer of the same run, and their working memory against its."""
    lines = [
        "| setting | GFLOP/iter | loop | vectorised | **auto** (its pick) | chunks of 4 "
        "| learn2learn | higher | torchopt | auto / fastest peer | chunks of 4 / fastest peer "
        "| working MB: auto / chunks of 4 / fastest peer |",
        "| --- " * 12 + "|",
    ]
    for run in record["runs"]:
        impls = run["impls"]
        peers = {n: impls[n] for n in PEERS if n in impls}
        fastest = min(peers, key=lambda n: peers[n]["median_s"]) if peers else None
        auto, chunked = impls.get("metagrad-auto"), impls.get(CHUNKED)
        pick = ", ".join(d["label"] for d in (auto or {}).get("auto_decisions", []))

        lines.append(
            f"| {run['setting']} | {run['flops'] / 1e9:.1f} | {_s(impls.get('metagrad-loop'))} "
            f"| {_s(impls.get('metagrad-vec-grouped'))} | **{_s(auto)}** ({pick}) "
            f"| {_s(chunked)} | "
            + " | ".join(_s(impls.get(n)) for n in PEERS)
            + f" | **{_ratio(fastest, peers, auto)}** | {_ratio(fastest, peers, chunked)} "
            f"| {_mb(auto)} / {_mb(chunked)} / {_mb(peers.get(fastest))} |"
        )
    return lines


def kernel_lines(record: dict) -> list[str]:
    """The per-kernel table of each setting: ms, GFLOP/s and GB/s of one second-order step."""
    lines = []
    for name, rows in record.get("kernels", {}).items():
        lines += ["", f"{name}:", "", "| kernel | ms | GFLOP/s | MB touched | GB/s |"]
        lines.append("| --- | --- | --- | --- | --- |")
        for r in rows:
            rate = f"{r['flop'] / 1e9 / r['s']:.1f}" if r["flop"] else ""
            lines.append(
                f"| {r['kernel']} | {1e3 * r['s']:.1f} | {rate} | {r['bytes'] / 1e6:.0f} "
                f"| {r['bytes'] / 1e9 / r['s']:.1f} |"
            )
    return lines


def block(record: dict) -> str:
    """The generated Markdown: conditions, the speed table, auto's decisions, the kernels."""
    m, load = record["machine"], record["load"]
    lines = [
        BEGIN,
        "",
        f"Generated by `{record.get('command', 'python benchmarks/regenerate.py')}` "
        f"(metagrad {m['metagrad_commit']}, torch {m['torch']}, {m['torch_threads']} threads, "
        f"{m['cpu']}); foreign cores {load['foreign_before']:.2f} before and "
        f"{load['foreign_after']:.2f} after; matmul ceiling measured "
        f"{record['ceiling_gflops']['used']:.0f} GFLOP/s. Seconds per iteration, medians of "
        f"{record['config']['iters']} interleaved iterations after {record['config']['warmup']} "
        "warm-up; working memory in a process of its own.",
        "",
        *speed_table(record),
        "",
        'What `path="auto"` measured on its first step and chose:',
        "",
    ]
    for run in record["runs"]:
        for d in run["impls"].get("metagrad-auto", {}).get("auto_decisions", []):
            lines.append(f"- {run['setting']}: {Decision.from_dict(d).line()}")
    lines += [f"- **WARNING**: {w}" for w in record.get("warnings", [])]
    lines += kernel_lines(record)
    return "\n".join([*lines, "", END])


def replace_block(text: str, new_block: str, where: str = "BENCHMARKS.md") -> str:
    """``text`` with the generated block replaced by ``new_block`` (markers included)."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise SystemExit(
            f"{where} has no generated block: put the lines {BEGIN!r} and {END!r} "
            "where the measured tables should go, then run this again"
        )
    return text[:start] + new_block + text[end + len(END) :]


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same directory."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, path.stat().st_mode if path.exists() else 0o644)  # mkstemp makes it 0600
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--from-json", type=Path, help="a record kept with --record: no measuring")
    p.add_argument("--record", type=Path, help="also write the measured JSON record here")
    p.add_argument("--page", type=Path, default=REPO / "BENCHMARKS.md")
    args = p.parse_args(argv)
    if args.from_json:
        record = json.loads(args.from_json.read_text())
    else:
        record = measure(args.threads, args.iters, args.warmup)
        if args.record:
            write_atomic(args.record, json.dumps(record, indent=2, default=str) + "\n")
    write_atomic(args.page, replace_block(args.page.read_text(), block(record), str(args.page)))
    print(f"rewrote the generated block of {args.page}")


if __name__ == "__main__":
    main()
