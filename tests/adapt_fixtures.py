"""Runs and image folders for the tests of loading, adapting and ``metagrad adapt`` (issue 16).

- :func:`untrained_run`: a run directory as ``metagrad train`` leaves it (``config.toml``,
  ``preprocessing.json``, a ``best`` checkpoint) holding an untrained model, in milliseconds
  (grey Omniglot by default; :data:`FOLDER` with :data:`RGB_RUN` for an RGB one);
- :func:`omniglot_drawings` / :func:`write_pngs`: drawings of the official evaluation set and
  folders of 105x105 1-bit PNGs made from them, as the official files are.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from metagrad.config import load_config
from metagrad.train.build import INPUTS, model_for
from metagrad.train.checkpoint import save_checkpoint
from metagrad.train.loop import start_run
from metagrad.train.preprocessing import record_preprocessing

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "omniglot"
OMNIGLOT = ROOT / "configs" / "omniglot" / "maml_5w1s.toml"
SINE = ROOT / "configs" / "sinusoid" / "maml_10shot.toml"
FOLDER = ROOT / "configs" / "folder" / "maml_conv4_5w1s.toml"
# An RGB run of the folder family at 28x28 (its data need not exist to load the run).
RGB_RUN = ("task.root=unused", "task.image_size=28", "model.filters=8")


def untrained_run(
    run_dir: Path, config: Path = OMNIGLOT, overrides: Sequence[str] = ("model.filters=8",)
) -> Path:
    """A run directory holding an untrained model as its ``best`` checkpoint."""
    cfg = load_config(config, list(overrides))
    start_run(cfg, run_dir)
    record_preprocessing(cfg, run_dir)
    torch.manual_seed(cfg.seed)
    model = model_for(cfg, INPUTS[cfg.task.family](cfg).shape)
    save_checkpoint(run_dir, "best", model.state_dict(), {"step": 0})
    return run_dir


def omniglot_drawings(first: int, count: int) -> np.ndarray:
    """``[count, 20, 105, 105]`` bool drawings (True = paper) of the evaluation characters
    ``first .. first + count - 1`` (rows of images_evaluation.npz)."""
    return _evaluation_set()[first : first + count]


@functools.cache
def _evaluation_set() -> np.ndarray:  # 0.6 s to decompress: once per test session
    with np.load(DATA / "images_evaluation.npz") as f:
        return f["images"]


def write_pngs(folder: Path, drawings: dict[str, np.ndarray]) -> list[Path]:
    """Write each ``name: [105, 105] bool`` drawing as ``folder/name.png``, 1-bit as the
    official files."""
    paths = []
    for name, paper in drawings.items():
        path = folder / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(paper).save(path)  # bool -> mode "1"
        paths.append(path)
    return paths
