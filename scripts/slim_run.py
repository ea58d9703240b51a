"""Shrink a finished run directory behind a RESULTS.md row to what re-tests it.

    python scripts/slim_run.py results/omniglot/budget_5w1s/anil_5w1s [...]

Keeps ``config.toml``, ``metrics.jsonl``, ``results.json``, ``preprocessing.json``,
``path.json``, TensorBoard events and the ``best`` weights with a slim state (the step and the
learner's own state: ``metagrad.train.checkpoint.slim_state``); removes ``last`` and
``last.prev``, so the run can be re-tested (``metagrad test RUN``) but not resumed: about 0.5 MB
instead of 4 MB for an Omniglot Conv4. Refuses a run without ``results.json`` (not finished).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from metagrad.train.checkpoint import load_checkpoint, save_checkpoint, slim_state


def slim(run: Path) -> None:
    if not (run / "results.json").is_file():
        raise SystemExit(f"{run} has no results.json: test it before slimming it")
    weights, state = load_checkpoint(run, "best")
    save_checkpoint(run, "best", weights, slim_state(state))
    for name in ("last", "last.prev"):
        for file in run.glob(f"{name}.*safetensors"):
            file.unlink()
    size = sum(f.stat().st_size for f in run.rglob("*") if f.is_file())
    print(f"{run}: best at step {state['step']}, {size / 1e6:.1f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    for run in parser.parse_args().runs:
        slim(run)


if __name__ == "__main__":
    main()
