"""A run's preprocessing record: written when an image run starts, read when it is reloaded.

``preprocessing.json`` beside ``config.toml`` says how the run's training images were made
(:class:`~metagrad.tasks.preprocess.Preprocessing`), so ``metagrad.load`` and ``metagrad
adapt`` turn a user's images into the same inputs even after the code's defaults change. A run
without the file (written before it existed, or copied without it) gets its family's current
record from the config (:data:`metagrad.train.build.INPUTS`).
"""

from __future__ import annotations

import json
from pathlib import Path

from metagrad.config import ExperimentConfig
from metagrad.errors import UsageError
from metagrad.tasks.preprocess import Preprocessing
from metagrad.train.build import INPUTS
from metagrad.train.io import atomic_write_text

PREPROCESSING_FILE = "preprocessing.json"


def record_preprocessing(cfg: ExperimentConfig, run_dir: Path) -> None:
    """Write ``run_dir/preprocessing.json`` for an image run (nothing for other inputs, or a
    family without an :data:`~metagrad.train.build.INPUTS` entry)."""
    if cfg.task.family not in INPUTS:
        return
    preprocessing = INPUTS[cfg.task.family](cfg).preprocessing
    if preprocessing is not None:
        text = json.dumps(preprocessing.to_dict(), indent=2) + "\n"
        atomic_write_text(run_dir / PREPROCESSING_FILE, text)


def run_preprocessing(run_dir: Path | None, cfg: ExperimentConfig) -> Preprocessing | None:
    """The preprocessing of the run in ``run_dir``: its record if it has one, else the one its
    config's task family has today (None for inputs that are not images).

    Raises:
        UsageError: the record is not valid JSON or not a preprocessing record.
    """
    file = None if run_dir is None else run_dir / PREPROCESSING_FILE
    if file is None or not file.is_file():
        return INPUTS[cfg.task.family](cfg).preprocessing
    try:
        record = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise UsageError(f"{file} is not valid JSON ({e}): restore it or delete it") from None
    return Preprocessing.from_dict(record, str(file))
