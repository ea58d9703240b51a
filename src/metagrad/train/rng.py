"""Every random number generator training draws from, captured into and restored from a
checkpoint's state (:mod:`metagrad.train.checkpoint`)."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from metagrad.train.io import CheckpointError

if TYPE_CHECKING:
    from metagrad.config import ExperimentConfig

VAL_SEED_OFFSET = 1_000_003  # validation tasks come from a stream distinct from the test one


def eval_seed(cfg: ExperimentConfig, split: str) -> int:
    """The seed of the fixed tasks of ``split`` ("val" or "test"), for every kind of run:
    ``eval.seed`` for the test, offset by :data:`VAL_SEED_OFFSET` for validation."""
    return cfg.eval.seed + (VAL_SEED_OFFSET if split == "val" else 0)


def capture_rng_state(generators: Mapping[str, np.random.Generator] | None = None) -> dict:
    """Snapshot every random number generator training draws from.

    Args:
        generators: NumPy ``Generator`` objects by name (e.g. the task sampler's).

    Returns:
        Python ``random``'s state, NumPy's legacy global state, each named generator's
        ``bit_generator.state``, torch's CPU state and, if CUDA is available, every GPU's.
        It can go into a checkpoint state as is.
    """
    state = {
        "python": random.getstate(),
        "numpy_global": np.random.get_state(),
        "numpy": {name: g.bit_generator.state for name, g in (generators or {}).items()},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(
    state: Mapping[str, Any], generators: Mapping[str, np.random.Generator] | None = None
) -> None:
    """Restore a :func:`capture_rng_state` snapshot, in place, into the global RNGs and
    into ``generators`` (each name must be in the snapshot).

    Raises:
        CheckpointError: a generator has no saved state, or a saved state does not fit it.
    """
    random.setstate(state["python"])
    np.random.set_state(state["numpy_global"])
    torch.set_rng_state(state["torch"])
    if "torch_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["torch_cuda"])
    saved = state.get("numpy", {})
    for name, generator in (generators or {}).items():
        if name not in saved:
            known = ", ".join(map(repr, saved)) or "none"
            raise CheckpointError(f"no saved state for numpy generator {name!r} (saved: {known})")
        try:
            generator.bit_generator.state = saved[name]
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"cannot restore numpy generator {name!r}: {e}") from e
