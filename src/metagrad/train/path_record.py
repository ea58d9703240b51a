"""A run's record of what ``algorithm.path = "auto"`` chose: ``path.json`` in the run directory.

The learner measures the execution paths on its first training step
(:mod:`metagrad.algorithms.autotune`); the trainer prints the decision as one line, writes it to
``path.json`` (the key, the plan, each plan's seconds and bytes, the budget) and, on a resume,
gives the learner the recorded decision instead of measuring again, so the resumed steps run
the same path. Under several processes, rank 0 decides (measuring its own block of tasks) and
every process runs its plan. A decision for a task shape the record lacks (another thread
count, another number of processes) is measured then and added.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from metagrad.algorithms import autotune
from metagrad.algorithms.autotune import Decision, Plan, Run
from metagrad.errors import UsageError
from metagrad.train.distributed import Ranks, share, together
from metagrad.train.io import atomic_write_text

PATH_FILE = "path.json"


def read_decisions(run_dir: Path) -> list[Decision]:
    """The decisions recorded in ``run_dir/path.json`` (none if it has no such file).

    Raises:
        UsageError: the file is not JSON or holds something other than decisions.
    """
    file = run_dir / PATH_FILE
    if not file.exists():
        return []
    try:
        data = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(
            f"{file} cannot be read ({type(e).__name__}: {e}); delete it to measure the paths "
            "again on the next step"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("decisions"), list):
        raise UsageError(
            f"{file} is not a record of path decisions (expected a table with a list "
            "'decisions'); delete it to measure the paths again on the next step"
        )
    return [Decision.from_dict(d, str(file)) for d in data["decisions"]]


def write_decisions(run_dir: Path, decisions: list[Decision]) -> None:
    """Write ``decisions`` to ``run_dir/path.json`` (atomically)."""
    text = json.dumps({"decisions": [d.to_dict() for d in decisions]}, indent=2)
    atomic_write_text(run_dir / PATH_FILE, text + "\n")


def record_paths(learner: object, run_dir: Path, ranks: Ranks, resume: bool) -> None:
    """Make ``learner``'s ``"auto"`` decisions the run's: recorded, reused on a resume, and
    rank 0's for every process (nothing for a learner with an explicit path).

    Raises:
        UsageError: (on resume) ``path.json`` cannot be read.
    """
    if getattr(learner, "path", None) != "auto" or not hasattr(learner, "decide"):
        return
    known: list[Decision] = []
    with together(ranks):
        if resume and ranks.leader:
            known = read_decisions(run_dir)
    measure = learner.decide
    file = run_dir / PATH_FILE

    def decide(key: str, plans: list[Plan], run: Run) -> Decision:
        def choose() -> dict:
            found = next((d for d in known if d.key == key), None)
            if found is not None:
                if found.plan not in plans:
                    raise UsageError(
                        f"{file} records {found.plan.label} for {key}, which this run cannot "
                        f"use (it can run {', '.join(p.label for p in plans)}); delete the "
                        "file to measure the paths again"
                    )
                print(f"path auto ({key}): {found.plan.label}, as recorded in {file}", flush=True)
                return found.to_dict()
            library_log = logging.getLogger(autotune.__name__)
            quiet, library_log.disabled = library_log.disabled, True  # the line is printed
            try:
                decision = measure(key, plans, run)
            finally:
                library_log.disabled = quiet
            known.append(decision)
            write_decisions(run_dir, known)
            print(decision.line(), flush=True)
            return decision.to_dict()

        return Decision.from_dict(share(ranks, choose))

    learner.decide = decide
