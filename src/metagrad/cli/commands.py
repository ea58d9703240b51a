"""What each ``metagrad`` command does (argument parsing lives in :mod:`metagrad.cli.main`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from metagrad.config import (
    ALGORITHM_CONFIGS,
    MODEL_CONFIGS,
    TASK_CONFIGS,
    load_config,
)
from metagrad.errors import DownloadError, UsageError
from metagrad.registry import UnknownName
from metagrad.train.checkpoint import CheckpointError, CheckpointWriteError
from metagrad.train.rundir import WriteFailure

# Errors whose message tells the user what to do, printed as one line, with their exit code:
# 2 for a usage error (what was given is wrong), 1 for a failure at run time. Any other
# exception is a bug, and keeps its traceback.
# A damaged checkpoint is a usage error: the message names the intact one to give instead.
USAGE_ERRORS = (UsageError, UnknownName, CheckpointError, FileNotFoundError, FileExistsError)
# A full disk, a denied write or too little memory is the machine's state, not a bug: exit 1.
RUNTIME_ERRORS = (
    DownloadError,
    FloatingPointError,
    CheckpointWriteError,
    WriteFailure,
    OSError,
    MemoryError,
)
USER_ERRORS = USAGE_ERRORS + RUNTIME_ERRORS


def exit_code(error: BaseException) -> int:
    """2 for a usage error, 1 for a runtime failure (see :data:`USER_ERRORS`)."""
    return 2 if isinstance(error, USAGE_ERRORS) else 1


def message(error: BaseException) -> str:
    """The one line that tells the user what happened and what to do."""
    if isinstance(error, MemoryError):
        return (
            "out of memory: lower train.meta_batch_size (or set algorithm.chunk_size); a run "
            "resumes from its last checkpoint with `metagrad train --resume RUN_DIR`"
        )
    if isinstance(error, OSError) and not isinstance(error, USAGE_ERRORS):
        where = f" writing {error.filename}" if error.filename else ""
        return (
            f"{error.strerror or error}{where}: free disk space or fix the permissions, then "
            "run the command again"
        )
    return str(error)


CONFIG_DIR = Path("configs")


def run(args: argparse.Namespace) -> int:
    return {"train": train, "test": test, "list": list_things, "plot": plot, "data": data}[
        args.command
    ](args)


def train(args: argparse.Namespace) -> int:
    from metagrad.train.trainer import resume_run
    from metagrad.train.trainer import train as train_run

    if args.resume:
        if args.overwrite:
            raise UsageError("--overwrite replaces a run; --resume continues one: give one")
        if args.config:
            raise UsageError(
                "--resume continues a run with its own config.toml; give no CONFIG with it "
                "(--set train.iterations=N trains it further)"
            )
        resume_run(args.resume, args.overrides, test=not args.no_test)
        return 0
    if args.config is None:
        raise UsageError("give a CONFIG file to train, or --resume RUN_DIR")
    cfg = load_config(args.config, args.overrides)
    out = args.out or Path("runs") / cfg.name
    print(f"training {cfg.name} into {out}", flush=True)
    train_run(cfg, out, test=not args.no_test, overwrite=args.overwrite)
    return 0


def test(args: argparse.Namespace) -> int:
    from metagrad.train.checkpoint import intact_checkpoints
    from metagrad.train.results import results_file
    from metagrad.train.testing import run_test

    target: Path = args.target
    if not target.exists():
        raise FileNotFoundError(
            f"{target} does not exist: give a run directory (holding config.toml) or a config file"
        )
    if target.is_dir():
        cfg = load_config(target / "config.toml", args.overrides)
        checkpoint = args.checkpoint
        results = results_file(checkpoint, args.overrides)
        if checkpoint == "best" and "best" not in intact_checkpoints(target):
            checkpoint = "last"  # runs without validation keep only "last"
        run_test(target, checkpoint, cfg=cfg, results=results)
        print(f"wrote {target / results}", flush=True)
        return 0
    cfg = load_config(target, args.overrides)
    out = args.out or Path("runs") / cfg.name
    out.mkdir(parents=True, exist_ok=True)
    run_test(out, args.checkpoint if args.checkpoint != "best" else "untrained", cfg=cfg)
    return 0


def list_things(args: argparse.Namespace) -> int:
    configs = sorted(CONFIG_DIR.glob("**/*.toml")) if CONFIG_DIR.is_dir() else []
    print("configs:" + ("".join(f"\n  {c}" for c in configs) or " (none under ./configs)"))
    print("algorithms: " + ", ".join(sorted(ALGORITHM_CONFIGS)))
    print("models: " + ", ".join(sorted(MODEL_CONFIGS)))
    print("task families: " + ", ".join(sorted(TASK_CONFIGS)))
    return 0


def plot(args: argparse.Namespace) -> int:
    from metagrad.cli.plots import plot_run

    for path in plot_run(args.run_dir, args.baseline):
        print(f"wrote {path}")
    return 0


def data(args: argparse.Namespace) -> int:
    from metagrad.train.build import DOWNLOADS

    for path in DOWNLOADS[args.dataset](args.root):
        print(f"ok {path}")
    return 0
