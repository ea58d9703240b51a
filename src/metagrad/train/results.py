"""What a meta-test reads from and writes into a run directory, for every kind of run.

- :func:`load_named_checkpoint`: the weights a test is asked for by name ("best", "last",
  "last.prev", a path to a ``.safetensors`` checkpoint, or "untrained");
- :func:`results_file` and :func:`write_report`: where the report goes, and writing it (JSON,
  and its table printed).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from metagrad.train.checkpoint import load_checkpoint
from metagrad.train.io import atomic_write_text

RESULTS_FILE = "results.json"


def load_named_checkpoint(
    run_dir: Path, checkpoint: str, expected: Mapping[str, Tensor], seed: int
) -> tuple[dict[str, Tensor] | None, dict[str, Any], str]:
    """The weights and training state of ``checkpoint``, and a description of them.

    Args:
        run_dir: the run directory.
        checkpoint: "best", "last" or "last.prev" of ``run_dir``; a path to a checkpoint saved
            by metagrad (``DIR/NAME`` or ``DIR/NAME.safetensors``); or "untrained": no weights
            (``None`` and an empty state), the initialisation seeded by ``seed``.
        expected: the model's state dict: the weights must fit it.
        seed: the run's seed (for the description of "untrained").

    Raises:
        CheckpointError: the checkpoint is missing, damaged or does not fit ``expected``.
    """
    if checkpoint == "untrained":
        return None, {}, f"untrained initialisation (seed {seed})"
    path = Path(checkpoint)
    if path.suffix == ".safetensors" or path.parent != Path("."):
        run_dir, checkpoint = path.parent, path.name.removesuffix(".safetensors")
    weights, state = load_checkpoint(run_dir, checkpoint, expected=expected)
    return weights, state, f"{checkpoint} at step {state['step']}"


def results_file(checkpoint: str = "best", overrides: Sequence[str] = ()) -> str:
    """Where a test's report goes in the run directory: ``results.json`` for the run's own test
    (checkpoint ``best``, its own config), a name that says what differs otherwise, so that a
    variant (``results-last.json``, ``results-best-eval.transductive=false.json``) never
    overwrites the run's result."""
    if checkpoint == "best" and not overrides:
        return RESULTS_FILE
    name = Path(checkpoint).name.removesuffix(".safetensors")
    tag = "-".join([name, *overrides]).replace("/", "_").replace(" ", "")
    return f"results-{tag}.json"


def write_report(run_dir: Path, results: str, report: Mapping[str, Any], table: str) -> None:
    """Write ``report`` (with its ``name`` and ``checkpoint``) to ``run_dir / results`` as JSON
    and print ``table``, the result as a Markdown table."""
    atomic_write_text(run_dir / results, json.dumps(report, indent=2) + "\n")
    print(f"meta-test of {report['name']} ({report['checkpoint']}):\n{table}", flush=True)
