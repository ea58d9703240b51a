"""A sinusoid run shrunk to a second: the config and overrides the run-loop tests share."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SINE = ROOT / "configs" / "sinusoid" / "maml_10shot.toml"
# 20 steps, validated every 10, logged and checkpointed every 5; a 12-task, 3-step test.
TINY = [
    "train.iterations=20",
    "train.val_every=10",
    "train.val_tasks=10",
    "train.log_every=5",
    "train.checkpoint_every=5",
    "eval.tasks=12",
    "eval.inner_steps=3",
]
